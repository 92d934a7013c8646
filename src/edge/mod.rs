//! The edge: HTTP routes and WebSocket connections.
//!
//! Handlers are thin: they check what only the edge can check (origin,
//! headers, frame sizes) and hand everything else to the actors through the
//! [`Hub`]. State is explicit in [`AppState`].

pub mod connection;
pub mod writer;
pub mod ws;

use std::sync::Arc;

use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use axum::{Json, Router};
use skald_actors::hub::Hub;
use skald_protocol::{ErrorBody, ErrorCode, HttpError};

use crate::auth::Verifier;
use crate::config::Config;

/// What every handler shares.
#[derive(Clone)]
pub struct AppState {
    pub hub: Arc<Hub>,
    pub verifier: Arc<Verifier>,
    pub config: Arc<Config>,
}

pub fn router(state: AppState) -> Router {
    Router::new()
        .route("/v1/ws", get(ws::upgrade))
        .route("/healthz", get(|| async { "ok" }))
        .route("/readyz", get(readyz))
        .with_state(state)
}

async fn readyz(axum::extract::State(app): axum::extract::State<AppState>) -> Response {
    if app.hub.is_alive() {
        (StatusCode::OK, "ready").into_response()
    } else {
        http_error(ErrorCode::Unavailable, "the actor system is stopped")
    }
}

/// An HTTP error with PROTOCOL.md's body and the code's status.
pub fn http_error(code: ErrorCode, message: impl Into<String>) -> Response {
    let status =
        StatusCode::from_u16(code.http_status()).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR);
    let body = HttpError {
        error: ErrorBody {
            code,
            message: message.into(),
        },
    };
    (status, Json(body)).into_response()
}
