//! The edge: HTTP routes and WebSocket connections.
//!
//! Handlers are thin: they check what only the edge can check (origin,
//! headers, frame sizes) and hand everything else to the actors through the
//! [`Hub`]. State is explicit in [`AppState`]. Every HTTP error, the
//! fallbacks' included, is an [`error::ApiError`].

pub mod accept;
pub mod access;
pub mod admin;
pub mod api;
pub mod client_ip;
pub mod completions;
pub mod connection;
pub mod error;
pub mod feedback;
pub mod history;
pub mod paging;
pub mod pending;
pub mod widget;
pub mod writer;
pub mod ws;

use std::sync::Arc;

use axum::extract::State;
use axum::http::{header, HeaderMap, HeaderValue, StatusCode};
use axum::middleware;
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use axum::{Json, Router};
use serde::Serialize;
use skald_actors::hub::Hub;
use skald_actors::limits::guard::FailurePolicy;
use subtle::ConstantTimeEq;

use crate::auth::Verifier;
use crate::config::{Config, Secret};

/// What every handler shares.
#[derive(Clone)]
pub struct AppState {
    pub hub: Arc<Hub>,
    pub verifier: Arc<Verifier>,
    pub config: Arc<Config>,
    /// The HS256 secret in force, to mint demo tokens (None when only
    /// public keys are configured: no demo tokens then).
    pub secret: Option<Secret>,
}

pub fn router(state: AppState) -> Router {
    let mut router = Router::new()
        .merge(widget::router(state.clone()))
        .route("/v1/ws", get(ws::upgrade))
        .route("/healthz", get(|| async { "ok" }))
        .route("/readyz", get(readyz));
    if state.config.metrics.listen.is_none() {
        router = router.route("/metrics", get(metrics));
    }
    let router = router
        .fallback(error::not_found)
        .method_not_allowed_fallback(error::method_not_allowed)
        // Merged after the fallbacks are set: the API sets its own 405
        // beneath its CORS layer, which must see a preflight first.
        .merge(api::router(state.clone()))
        .layer(middleware::map_response(security_headers));
    let router = match state.config.tls.enabled() {
        true => router.layer(middleware::map_response(strict_transport_security)),
        false => router,
    };
    router.with_state(state)
}

/// With TLS served here: browsers are to come back over HTTPS only, for a
/// year.
async fn strict_transport_security(mut response: Response) -> Response {
    response.headers_mut().insert(
        header::STRICT_TRANSPORT_SECURITY,
        HeaderValue::from_static("max-age=31536000"),
    );
    response
}

/// `/metrics` alone, for `metrics.listen`.
pub fn metrics_router(state: AppState) -> Router {
    Router::new()
        .route("/metrics", get(metrics))
        .fallback(error::not_found)
        .layer(middleware::map_response(security_headers))
        .with_state(state)
}

/// What every response carries unless its route set its own (the widget
/// is cached, the demo page revalidated): nothing of this API is to be
/// cached or sniffed.
async fn security_headers(mut response: Response) -> Response {
    let h = response.headers_mut();
    h.entry(header::CACHE_CONTROL)
        .or_insert(HeaderValue::from_static("no-store"));
    h.entry(header::X_CONTENT_TYPE_OPTIONS)
        .or_insert(HeaderValue::from_static("nosniff"));
    response
}

async fn metrics(State(app): State<AppState>, headers: HeaderMap) -> Response {
    if let Some(token) = &app.config.metrics.token {
        let given = headers
            .get(header::AUTHORIZATION)
            .and_then(|v| v.to_str().ok())
            .and_then(|v| v.strip_prefix("Bearer "))
            .unwrap_or_default();
        if !bool::from(given.as_bytes().ct_eq(token.expose().as_bytes())) {
            return error::ApiError::new(
                skald_protocol::ErrorCode::Unauthorized,
                "/metrics needs its bearer token",
            )
            .into_response();
        }
    }
    (
        [(
            axum::http::header::CONTENT_TYPE,
            "text/plain; version=0.0.4",
        )],
        crate::metrics::render(&app.hub),
    )
        .into_response()
}

/// `GET /readyz`: whether this instance can take sessions, and what each
/// dependency says.
#[derive(Serialize)]
struct Readiness {
    ready: bool,
    checks: Checks,
}

#[derive(Serialize)]
struct Checks {
    actors: &'static str,
    draining: bool,
    store: &'static str,
    limits: LimitsCheck,
    /// Each named upstream, `ok` or `cooling_down`: informative only (a
    /// bot's other upstreams answer meanwhile, and a cooling one is still
    /// tried when it is the last).
    #[serde(skip_serializing_if = "std::collections::BTreeMap::is_empty")]
    upstreams: std::collections::BTreeMap<String, &'static str>,
}

#[derive(Serialize)]
struct LimitsCheck {
    backend: &'static str,
    status: &'static str,
    policy: FailurePolicy,
}

/// Readiness. Redis being down makes the instance unready only under the
/// fail-closed policy: under fail-open it still serves (deciding limits
/// in-process), and pulling every instance out of the load balancer during
/// a Redis outage would turn it into a full outage.
async fn readyz(State(app): State<AppState>) -> Response {
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
    let up = |ok: bool| if ok { "ok" } else { "down" };
    let body = Readiness {
        ready,
        checks: Checks {
            actors: if actors { "ok" } else { "stopped" },
            draining,
            store: up(store_up),
            limits: LimitsCheck {
                backend,
                status: up(limits_up),
                policy: guard.policy(),
            },
            upstreams: app
                .hub
                .services
                .model
                .upstream_status()
                .into_iter()
                .collect(),
        },
    };
    let status = if ready {
        StatusCode::OK
    } else {
        StatusCode::SERVICE_UNAVAILABLE
    };
    (status, Json(body)).into_response()
}
