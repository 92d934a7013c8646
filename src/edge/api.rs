//! The HTTP API (PROTOCOL.md): authenticated by the same JWT as the
//! WebSocket (`Authorization: Bearer`), rate-limited per client address,
//! every body a type of `skald_protocol::http`, every error an
//! [`ApiError`].

use axum::extract::State;
use axum::routing::get;
use axum::{middleware, Json, Router};
use skald_protocol::http::UsageReport;

use super::access::{limit_address, Caller};
use super::error::ApiError;
use super::AppState;

pub fn router(state: AppState) -> Router<AppState> {
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
