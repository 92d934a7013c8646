//! `GET/PUT/DELETE /v1/admin/users/{sub}/limits`: a user's limit
//! overrides (`messages_per_minute`, `monthly_tokens`, `monthly_requests`;
//! an unset one falls back to the bot's, then the global value).
//!
//! They are kept with the limits (Redis when configured, else the embedded
//! quota database) and apply to the user's next `send`: at once on this
//! instance, at the catalog's next reload on the others. A stored override
//! replaces the file's `[limits.users."<sub>"]` whole; deleting it brings
//! the file's back.

use axum::extract::State;
use axum::http::StatusCode;
use axum::routing::get;
use axum::{Json, Router};
use skald_actors::ports::store::{AuditAction, AuditRecord};
use skald_actors::settings::LimitOverride;
use skald_actors::UserId;
use skald_protocol::ErrorCode;

use super::Admin;
use crate::edge::error::{ApiError, ApiJson, ApiPath};
use crate::edge::AppState;

pub fn router() -> Router<AppState> {
    Router::new().route(
        "/v1/admin/users/{sub}/limits",
        get(read).put(put).delete(delete),
    )
}

/// Longest `sub` accepted in the path (a JWT's `sub` is rarely longer).
const MAX_SUB: usize = 256;

/// `GET`: the override in force (every field null: none).
async fn read(
    State(app): State<AppState>,
    _: Admin,
    ApiPath(sub): ApiPath<String>,
) -> Result<Json<LimitOverride>, ApiError> {
    let user = user(sub)?;
    let limits = app.hub.services.catalog.user_override(&user);
    Ok(Json(limits.unwrap_or_default()))
}

/// `PUT`: replaces the user's override; 200 with it.
async fn put(
    State(app): State<AppState>,
    admin: Admin,
    ApiPath(sub): ApiPath<String>,
    ApiJson(limits): ApiJson<LimitOverride>,
) -> Result<Json<LimitOverride>, ApiError> {
    let user = user(sub)?;
    limits
        .validate("limits")
        .map_err(|m| ApiError::new(ErrorCode::InvalidRequest, m))?;
    store(&app, &admin, &user, Some(&limits)).await?;
    Ok(Json(limits))
}

/// `DELETE`: removes the user's stored override; 204.
async fn delete(
    State(app): State<AppState>,
    admin: Admin,
    ApiPath(sub): ApiPath<String>,
) -> Result<StatusCode, ApiError> {
    let user = user(sub)?;
    store(&app, &admin, &user, None).await?;
    Ok(StatusCode::NO_CONTENT)
}

/// Writes the change where every instance reads it, puts the stored
/// overrides in force here, audits it (in the user's record, with the
/// operator as actor).
async fn store(
    app: &AppState,
    admin: &Admin,
    user: &UserId,
    limits: Option<&LimitOverride>,
) -> Result<(), ApiError> {
    let services = &app.hub.services;
    services.limits_guard.set_user_limits(user, limits).await?;
    services
        .catalog
        .set_users(services.limits_guard.user_limits().await?);
    let action = match limits {
        Some(_) => AuditAction::UserLimitsChanged,
        None => AuditAction::UserLimitsDeleted,
    };
    let operator = &admin.user.id;
    let record = AuditRecord::now(action, Some(user), Some(admin.address), "limits");
    app.hub.audit(record.by(operator));
    tracing::info!(user = %user, operator = %operator, action = action.as_str(), "user limits changed");
    Ok(())
}

fn user(sub: String) -> Result<UserId, ApiError> {
    if sub.is_empty() || sub.len() > MAX_SUB {
        return Err(ApiError::new(
            ErrorCode::InvalidRequest,
            format!("a user id (`sub`) is 1 to {MAX_SUB} bytes"),
        ));
    }
    Ok(UserId::from(sub))
}
