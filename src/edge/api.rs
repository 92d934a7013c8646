//! The HTTP API (PROTOCOL.md): authenticated by the same JWT as the
//! WebSocket (`Authorization: Bearer`), rate-limited per client address,
//! errors as `{"error":{"code","message"}}` with the code's status.

use std::net::SocketAddr;

use axum::extract::{ConnectInfo, FromRequestParts, Request, State};
use axum::http::request::Parts;
use axum::http::{header, HeaderValue};
use axum::middleware::{self, Next};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use axum::{Json, Router};
use serde::Serialize;
use skald_actors::ports::limits::RateDecision;
use skald_actors::ports::store::{AuditAction, AuditRecord};
use skald_actors::session::AuthedUser;
use skald_protocol::ErrorCode;

use super::{http_error, ws::bearer, AppState};

pub fn router(state: AppState) -> Router<AppState> {
    Router::new()
        .route("/v1/usage", get(usage))
        .merge(super::history::router())
        .layer(middleware::from_fn_with_state(state, limit_address))
}

/// The caller, from a valid bearer token; 401 otherwise.
pub struct Caller(pub AuthedUser);

impl FromRequestParts<AppState> for Caller {
    type Rejection = Response;

    async fn from_request_parts(parts: &mut Parts, app: &AppState) -> Result<Caller, Response> {
        let Some(token) = bearer(&parts.headers) else {
            return Err(http_error(ErrorCode::Unauthorized, "missing bearer token"));
        };
        app.verifier.verify(token).map(Caller).map_err(|e| {
            let address = parts
                .extensions
                .get::<ConnectInfo<SocketAddr>>()
                .map(|c| c.0.ip());
            app.hub.audit(AuditRecord::now(
                AuditAction::AuthFailed,
                None,
                address,
                e.to_string(),
            ));
            http_error(ErrorCode::Unauthorized, e.to_string())
        })
    }
}

/// Counts a request against its client address's rate limit.
pub async fn check_address(app: &AppState, peer: SocketAddr) -> Result<(), Response> {
    let per_minute = app.config.limits.address_requests_per_minute;
    check_address_rate(app, "addr", peer, per_minute, "requests").await
}

/// One event against the rate limit `kind:<client address>`: a 429 with
/// `Retry-After` when over it (`what` names what is counted), a 503 when
/// the limits cannot be decided.
pub async fn check_address_rate(
    app: &AppState,
    kind: &str,
    peer: SocketAddr,
    per_minute: u32,
    what: &str,
) -> Result<(), Response> {
    match app
        .hub
        .check_rate(&format!("{kind}:{}", peer.ip()), per_minute)
        .await
    {
        Ok(RateDecision::Allowed) => Ok(()),
        Ok(RateDecision::Limited { retry_after_ms }) => {
            metrics::counter!("skald_refusals_total", "code" => "rate_limited").increment(1);
            let mut response = http_error(
                ErrorCode::RateLimited,
                format!("more than {per_minute} {what} a minute from this address"),
            );
            let seconds = retry_after_ms.div_ceil(1000).max(1);
            if let Ok(value) = HeaderValue::from_str(&seconds.to_string()) {
                response.headers_mut().insert(header::RETRY_AFTER, value);
            }
            Err(response)
        }
        Err(_) => Err(http_error(
            ErrorCode::Unavailable,
            "limits are unavailable, try again later",
        )),
    }
}

async fn limit_address(
    State(app): State<AppState>,
    ConnectInfo(peer): ConnectInfo<SocketAddr>,
    request: Request,
    next: Next,
) -> Response {
    match check_address(&app, peer).await {
        Ok(()) => next.run(request).await,
        Err(refusal) => refusal,
    }
}

#[derive(Serialize)]
struct UsageBody {
    month: String,
    tokens_used: u64,
    tokens_limit: u64,
    requests_used: u64,
    requests_limit: u64,
}

/// `GET /v1/usage`: this month's usage (UTC) against the caller's limits
/// for the default bot.
async fn usage(State(app): State<AppState>, Caller(user): Caller) -> Response {
    let bot = app.hub.services.default_bot();
    let limits = app.config.limits.for_user(&user.id, &bot);
    match app.hub.usage(&user.id).await {
        Ok((month, usage)) => Json(UsageBody {
            month,
            tokens_used: usage.tokens_used,
            tokens_limit: limits.monthly_tokens,
            requests_used: usage.requests_used,
            requests_limit: limits.monthly_requests,
        })
        .into_response(),
        Err(_) => http_error(
            ErrorCode::Unavailable,
            "usage is unavailable, try again later",
        ),
    }
}
