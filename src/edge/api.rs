//! The HTTP API (PROTOCOL.md): authenticated by the same JWT as the
//! WebSocket (`Authorization: Bearer`), rate-limited per client address,
//! every body a type of `skald_protocol::http`, every error an
//! [`ApiError`].

use axum::extract::State;
use axum::http::{header, HeaderName, HeaderValue, Method};
use axum::routing::get;
use axum::{middleware, Json, Router};
use skald_protocol::http::UsageReport;
use tower_http::cors::{AllowOrigin, CorsLayer};

use super::access::{limit_address, Caller};
use super::error::ApiError;
use super::AppState;

pub fn router(state: AppState) -> Router<AppState> {
    let cors = cors(&state.config.allowed_origins);
    Router::new()
        .route("/v1/usage", get(usage))
        .merge(super::history::router())
        .merge(super::feedback::router())
        .merge(super::admin::router())
        .layer(middleware::from_fn_with_state(
            state.clone(),
            limit_address::<ApiError>,
        ))
        .merge(super::completions::router(state))
        .method_not_allowed_fallback(super::error::method_not_allowed)
        .layer(cors)
}

/// CORS: a page on an allowed origin (`allowed_origins`, as for the
/// WebSocket; any when the list is empty) may call the API, as the widget
/// embedded on a customer's site does for its history and feedback. The
/// API is authorised by a bearer token, never by cookies, so no
/// credentials are allowed and a foreign page gains nothing it could not
/// do with the token anyway. Preflights are answered before the address
/// limit and authentication.
fn cors(allowed: &[String]) -> CorsLayer {
    let origins = match allowed.is_empty() {
        true => AllowOrigin::any(),
        false => AllowOrigin::list(allowed.iter().filter_map(|o| HeaderValue::from_str(o).ok())),
    };
    let conversation = HeaderName::from_static("x-skald-conversation");
    CorsLayer::new()
        .allow_origin(origins)
        .allow_methods([Method::GET, Method::POST, Method::PUT, Method::DELETE])
        .allow_headers([
            header::AUTHORIZATION,
            header::CONTENT_TYPE,
            conversation.clone(),
        ])
        .expose_headers([header::RETRY_AFTER, conversation])
        .max_age(std::time::Duration::from_secs(600))
}

/// `GET /v1/usage`: this month's usage (UTC) against the caller's limits
/// for the default bot.
async fn usage(
    State(app): State<AppState>,
    Caller(user): Caller,
) -> Result<Json<UsageReport>, ApiError> {
    let catalog = &app.hub.services.catalog;
    let limits = catalog.limits_for(&user.id, &catalog.default_bot());
    let (month, usage) = app.hub.usage(&user.id).await?;
    Ok(Json(UsageReport {
        month: month.to_string(),
        tokens_used: usage.tokens_used,
        tokens_limit: limits.monthly_tokens,
        requests_used: usage.requests_used,
        requests_limit: limits.monthly_requests,
    }))
}
