//! The edge: HTTP routes and WebSocket connections.
//!
//! Handlers are thin: they check what only the edge can check (origin,
//! headers, frame sizes) and hand everything else to the actors through the
//! [`Hub`]. State is explicit in [`AppState`].

pub mod api;
pub mod connection;
pub mod history;
pub mod widget;
pub mod writer;
pub mod ws;

use std::sync::Arc;

use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use axum::{Json, Router};
use skald_actors::hub::Hub;
use skald_actors::limits::guard::FailurePolicy;
use skald_protocol::{ErrorBody, ErrorCode, HttpError};

use crate::auth::Verifier;
use crate::config::Config;

/// What every handler shares.
#[derive(Clone)]
pub struct AppState {
    pub hub: Arc<Hub>,
    pub verifier: Arc<Verifier>,
    pub config: Arc<Config>,
    /// The HS256 secret in force, to mint demo tokens (None when only
    /// public keys are configured: no demo tokens then).
    pub secret: Option<Arc<str>>,
}

pub fn router(state: AppState) -> Router {
    Router::new()
        .merge(api::router(state.clone()))
        .merge(widget::router(state.clone()))
        .route("/v1/ws", get(ws::upgrade))
        .route("/healthz", get(|| async { "ok" }))
        .route("/readyz", get(readyz))
        .route(
            "/metrics",
            get(
                |axum::extract::State(app): axum::extract::State<AppState>| async move {
                    (
                        [(
                            axum::http::header::CONTENT_TYPE,
                            "text/plain; version=0.0.4",
                        )],
                        crate::metrics::render(&app.hub),
                    )
                },
            ),
        )
        .with_state(state)
}

/// Readiness, with what each dependency says. Redis being down makes the
/// instance unready only under the fail-closed policy: under fail-open it
/// still serves (deciding limits in-process), and pulling every instance
/// out of the load balancer during a Redis outage would turn it into a
/// full outage.
async fn readyz(axum::extract::State(app): axum::extract::State<AppState>) -> Response {
    let actors = app.hub.is_alive();
    let guard = &app.hub.services.limits_guard;
    let (backend, limits_up) = guard.status();
    let limits_ok = limits_up || guard.policy() == FailurePolicy::Open;
    // Without its store an instance can take no message (sends are
    // refused with `unavailable`): not ready.
    let store_up = tokio::time::timeout(
        std::time::Duration::from_secs(1),
        app.hub.services.store.ping(),
    )
    .await
    .is_ok_and(|r| r.is_ok());
    let draining = app.hub.is_draining();
    let ready = actors && limits_ok && store_up && !draining;
    let body = serde_json::json!({
        "ready": ready,
        "checks": {
            "actors": if actors { "ok" } else { "stopped" },
            "draining": draining,
            "store": if store_up { "ok" } else { "down" },
            "limits": { "backend": backend, "status": if limits_up { "ok" } else { "down" },
                        "policy": guard.policy() },
        }
    });
    let status = if ready {
        StatusCode::OK
    } else {
        StatusCode::SERVICE_UNAVAILABLE
    };
    (status, Json(body)).into_response()
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
