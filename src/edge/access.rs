//! Who may call: the bearer token of a request, the [`Caller`] extractor
//! that verifies it, and the per-address rate limit that every HTTP route
//! and every WebSocket upgrade pays first. The WebSocket edge, the HTTP API
//! and the demo all use these, so there is one of each check.

use std::net::IpAddr;

use axum::extract::{FromRequestParts, Request, State};
use axum::http::request::Parts;
use axum::http::{header, HeaderMap};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use skald_actors::ports::limits::{RateDecision, RateKey, RateLimit};
use skald_actors::ports::store::{AuditAction, AuditRecord};
use skald_actors::session::AuthedUser;
use skald_protocol::ErrorCode;

use super::client_ip::ClientIp;
use super::error::ApiError;
use super::AppState;

/// The token of an `Authorization: Bearer` header.
pub fn bearer(headers: &HeaderMap) -> Option<&str> {
    let value = headers.get(header::AUTHORIZATION)?.to_str().ok()?;
    let (scheme, token) = value.split_once(' ')?;
    scheme.eq_ignore_ascii_case("bearer").then(|| token.trim())
}

/// The browser origin of a request (its `Origin` header), for bots that
/// limit theirs; None for a client that is not a browser (or sends
/// something that is not text).
pub fn site(headers: &HeaderMap) -> Option<Box<str>> {
    let origin = headers.get(header::ORIGIN)?.to_str().ok()?;
    Some(origin.into())
}

/// The caller, from a valid bearer token; 401 otherwise (and the failure
/// is audited with the client's address).
pub struct Caller(pub AuthedUser);

impl FromRequestParts<AppState> for Caller {
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, app: &AppState) -> Result<Caller, ApiError> {
        let Some(token) = bearer(&parts.headers) else {
            return Err(ApiError::new(
                ErrorCode::Unauthorized,
                "missing bearer token",
            ));
        };
        app.verifier.verify(token).map(Caller).map_err(|e| {
            let address = Some(super::client_ip::client_ip(parts, app));
            app.hub.audit(AuditRecord::now(
                AuditAction::AuthFailed,
                None,
                address,
                e.to_string(),
            ));
            ApiError::new(ErrorCode::Unauthorized, e.to_string())
        })
    }
}

/// One event against a rate limit of a client address (`what` names what
/// is counted): 429 with `Retry-After` over it, 503 when the limits cannot
/// decide.
pub async fn check_address_rate(
    app: &AppState,
    key: RateKey,
    limit: RateLimit,
    what: &str,
) -> Result<(), ApiError> {
    match app.hub.check_rate(key, limit).await? {
        RateDecision::Allowed => Ok(()),
        RateDecision::Limited { retry_after_ms } => {
            metrics::counter!("skald_refusals_total", "code" => "rate_limited").increment(1);
            Err(ApiError::new(
                ErrorCode::RateLimited,
                format!(
                    "more than {} {what} a {} from this address",
                    limit.count,
                    limit.period.name()
                ),
            )
            .retry_after_ms(retry_after_ms))
        }
    }
}

/// The address's new connections and HTTP requests.
pub async fn check_address(app: &AppState, address: IpAddr) -> Result<(), ApiError> {
    let per_minute = app.config.limits.address_requests_per_minute;
    check_address_rate(
        app,
        RateKey::Address(address),
        RateLimit::per_minute(per_minute),
        "requests",
    )
    .await
}

/// Middleware: every HTTP API request counts against its address first,
/// refused in the error shape `E` of the routes it guards (the
/// OpenAI-compatible API has its own).
pub async fn limit_address<E: From<ApiError> + IntoResponse>(
    State(app): State<AppState>,
    ClientIp(client): ClientIp,
    request: Request,
    next: Next,
) -> Response {
    match check_address(&app, client).await {
        Ok(()) => next.run(request).await,
        Err(refusal) => E::from(refusal).into_response(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn bearer_tokens() {
        let mut headers = HeaderMap::new();
        assert_eq!(bearer(&headers), None);
        headers.insert(header::AUTHORIZATION, "Bearer abc".parse().unwrap());
        assert_eq!(bearer(&headers), Some("abc"));
        headers.insert(header::AUTHORIZATION, "Basic abc".parse().unwrap());
        assert_eq!(bearer(&headers), None);
    }
}
