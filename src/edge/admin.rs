//! The operators' API (PROTOCOL.md, Admin API): `/v1/admin/*`, open to a
//! token whose `roles` hold `"admin"` ([`Admin`]), 403 `forbidden` to any
//! other caller.
//!
//! What is here so far (issue 17's first step): the gate, and the bots the
//! server runs, read-only (`GET /v1/admin/bots[/{name}]`): the
//! configuration's bots, each with every setting of `[bots.<name>]`.
//! Changing them at runtime, users' limits, usage, the audit log and
//! feedback come next; until then those routes answer 404 like any
//! unknown route.

use axum::extract::{FromRequestParts, Path, State};
use axum::http::request::Parts;
use axum::routing::get;
use axum::{Json, Router};
use serde::Serialize;
use skald_actors::session::AuthedUser;
use skald_actors::settings::BotSettings;
use skald_protocol::ErrorCode;

use super::access::Caller;
use super::error::ApiError;
use super::AppState;

/// The role that opens `/v1/admin/`.
pub const ADMIN_ROLE: &str = "admin";

pub fn router() -> Router<AppState> {
    Router::new()
        .route("/v1/admin/bots", get(bots))
        .route("/v1/admin/bots/{name}", get(bot))
}

/// An administrator: a valid token whose `roles` hold `"admin"`; 401
/// without a valid token, 403 `forbidden` with one that lacks the role.
pub struct Admin(pub AuthedUser);

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
        Ok(Admin(user))
    }
}

/// A bot as the Admin API shows it: its name and every setting.
#[derive(Serialize)]
struct BotView<'a> {
    name: &'a str,
    #[serde(flatten)]
    settings: &'a BotSettings,
}

#[derive(Serialize)]
struct BotList<'a> {
    bots: Vec<BotView<'a>>,
}

/// `GET /v1/admin/bots`: every bot the server runs, by name.
async fn bots(State(app): State<AppState>, _: Admin) -> Json<serde_json::Value> {
    let mut bots: Vec<BotView<'_>> = app
        .hub
        .services
        .bots
        .iter()
        .map(|(name, settings)| BotView { name, settings })
        .collect();
    bots.sort_by_key(|b| b.name);
    Json(serde_json::to_value(BotList { bots }).unwrap_or_default())
}

/// `GET /v1/admin/bots/{name}`.
async fn bot(
    State(app): State<AppState>,
    _: Admin,
    Path(name): Path<String>,
) -> Result<Json<serde_json::Value>, ApiError> {
    let settings = app
        .hub
        .services
        .bots
        .get(&name)
        .ok_or_else(|| ApiError::new(ErrorCode::NotFound, format!("no bot named {name:?}")))?;
    let view = BotView {
        name: &name,
        settings,
    };
    Ok(Json(serde_json::to_value(view).unwrap_or_default()))
}
