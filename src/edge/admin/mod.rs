//! The operators' API (PROTOCOL.md, Admin API): `/v1/admin/*`, open to a
//! token whose `roles` hold `"admin"` ([`Admin`]), 403 `forbidden` to any
//! other caller.
//!
//! - `bots.rs`: the bots in force, changed at runtime (kept in the store,
//!   used by every instance within the catalog's reload interval).
//! - `limits.rs`: a user's limit overrides (kept with the limits).
//! - `feedback.rs`: users' feedback on answers.
//! - `audit.rs`: the audit log.
//! - `usage.rs`: usage by user, bot and month.
//!
//! Every change is audited with the operator's `sub` as its actor.

mod audit;
mod bots;
mod feedback;
mod limits;
mod usage;

use axum::extract::FromRequestParts;
use axum::http::request::Parts;
use axum::Router;
use skald_actors::session::AuthedUser;
use skald_protocol::ErrorCode;

use super::access::Caller;
use super::client_ip::ClientIp;
use super::error::ApiError;
use super::AppState;

/// The role that opens `/v1/admin/`.
pub const ADMIN_ROLE: &str = "admin";

pub fn router() -> Router<AppState> {
    bots::router()
        .merge(limits::router())
        .merge(feedback::router())
        .merge(audit::router())
        .merge(usage::router())
}

/// An administrator: a valid token whose `roles` hold `"admin"`; 401
/// without a valid token, 403 `forbidden` with one that lacks the role.
/// Carries the caller's address for the audit log.
pub struct Admin {
    pub user: AuthedUser,
    pub address: std::net::IpAddr,
}

impl FromRequestParts<AppState> for Admin {
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, app: &AppState) -> Result<Admin, ApiError> {
        let Caller(user) = Caller::from_request_parts(parts, app).await?;
        if !user.roles.iter().any(|r| r == ADMIN_ROLE) {
            return Err(ApiError::new(
                ErrorCode::Forbidden,
                "this route is for administrators (a token with the admin role)",
            ));
        }
        let Ok(ClientIp(address)) = ClientIp::from_request_parts(parts, app).await;
        Ok(Admin { user, address })
    }
}
