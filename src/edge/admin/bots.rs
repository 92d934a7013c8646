//! `GET/PUT/DELETE /v1/admin/bots[/{name}]`: the bots in force, changed at
//! runtime.
//!
//! A change is validated exactly as the configuration file's bots are
//! (`Config::validate_bot`: a 400 names the field), written to the store
//! (a deletion as a tombstone, so a file's bot can be deleted too), put in
//! force on this instance at once and on the others at their next catalog
//! reload, and audited.

use axum::extract::State;
use axum::http::StatusCode;
use axum::routing::get;
use axum::{Json, Router};
use serde::Serialize;
use serde_json::{Map, Value};
use skald_actors::catalog::{Bot, BotSource, StoredBot, DEFAULT_BOT};
use skald_actors::ports::store::{AuditAction, AuditRecord};
use skald_actors::settings::BotSettings;
use skald_protocol::ErrorCode;

use super::Admin;
use crate::edge::error::{decode, ApiError, ApiJson, ApiPath};
use crate::edge::AppState;

pub fn router() -> Router<AppState> {
    Router::new()
        .route("/v1/admin/bots", get(list))
        .route("/v1/admin/bots/{name}", get(one).put(put).delete(delete))
}

/// Longest bot name.
const MAX_NAME: usize = 64;

/// A bot as the Admin API shows it: its name, where it comes from, and
/// every setting of `[bots.<name>]`.
#[derive(Serialize)]
struct BotView<'a> {
    name: &'a str,
    source: BotSource,
    #[serde(flatten)]
    settings: &'a BotSettings,
}

impl<'a> BotView<'a> {
    fn of(name: &'a str, bot: &'a Bot) -> BotView<'a> {
        BotView {
            name,
            source: bot.source,
            settings: &bot.settings,
        }
    }
}

/// `GET /v1/admin/bots`: every bot in force, by name.
async fn list(State(app): State<AppState>, _: Admin) -> Json<Value> {
    let bots = app.hub.services.catalog.bots();
    let views: Vec<BotView<'_>> = bots.iter().map(|(n, b)| BotView::of(n, b)).collect();
    Json(serde_json::json!({ "bots": views }))
}

/// `GET /v1/admin/bots/{name}`.
async fn one(
    State(app): State<AppState>,
    _: Admin,
    ApiPath(name): ApiPath<String>,
) -> Result<Json<Value>, ApiError> {
    let bot = in_force(&app, &name)?;
    Ok(Json(view(&name, &bot)))
}

/// `PUT /v1/admin/bots/{name}`: creates or replaces a bot. The body is
/// `[bots.<name>]` as JSON (missing settings take their defaults); the
/// `name` and `source` of a bot read from `GET` may stay in it.
async fn put(
    State(app): State<AppState>,
    admin: Admin,
    ApiPath(name): ApiPath<String>,
    ApiJson(mut body): ApiJson<Map<String, Value>>,
) -> Result<Json<Value>, ApiError> {
    check_name(&name)?;
    match body.remove("name") {
        Some(Value::String(given)) if given != name => {
            return Err(invalid(format!(
                "the body names bot {given:?}, the path {name:?}"
            )))
        }
        _ => {}
    }
    body.remove("source");
    let settings: BotSettings = decode(Value::Object(body))?;
    app.config.validate_bot(&name, &settings).map_err(invalid)?;
    store(&app, &admin, &name, Some(settings)).await?;
    let bot = in_force(&app, &name)?;
    Ok(Json(view(&name, &bot)))
}

/// `DELETE /v1/admin/bots/{name}`: 204; `default` cannot be deleted.
async fn delete(
    State(app): State<AppState>,
    admin: Admin,
    ApiPath(name): ApiPath<String>,
) -> Result<StatusCode, ApiError> {
    if name == DEFAULT_BOT {
        return Err(invalid("the default bot cannot be deleted".into()));
    }
    in_force(&app, &name)?;
    store(&app, &admin, &name, None).await?;
    Ok(StatusCode::NO_CONTENT)
}

/// Writes the change, puts the stored bots in force here, audits it.
async fn store(
    app: &AppState,
    admin: &Admin,
    name: &str,
    settings: Option<BotSettings>,
) -> Result<(), ApiError> {
    let services = &app.hub.services;
    let action = match settings {
        Some(_) => AuditAction::BotChanged,
        None => AuditAction::BotDeleted,
    };
    services
        .store
        .put_bot(StoredBot {
            name: name.to_owned(),
            settings,
            updated_at_ms: app.hub.now_ms(),
            updated_by: admin.user.id.clone(),
        })
        .await?;
    services
        .catalog
        .set_bots(services.store.stored_bots().await?);
    let operator = &admin.user.id;
    let record = AuditRecord::now(
        action,
        Some(operator),
        Some(admin.address),
        format!("bot:{name}"),
    );
    app.hub.audit(record.by(operator));
    tracing::info!(bot = name, operator = %operator, action = action.as_str(), "bot changed");
    Ok(())
}

fn in_force(app: &AppState, name: &str) -> Result<Bot, ApiError> {
    app.hub
        .services
        .catalog
        .bot(name)
        .ok_or_else(|| ApiError::new(ErrorCode::NotFound, format!("no bot named {name:?}")))
}

fn view(name: &str, bot: &Bot) -> Value {
    serde_json::to_value(BotView::of(name, bot)).unwrap_or_default()
}

/// A name that fits in a URL, a log line and a `send.bot`.
fn check_name(name: &str) -> Result<(), ApiError> {
    let fits = !name.is_empty()
        && name.len() <= MAX_NAME
        && name
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'_' | b'-' | b'.'));
    match fits {
        true => Ok(()),
        false => Err(invalid(format!(
            "a bot name is 1 to {MAX_NAME} letters, digits, '_', '-' or '.'"
        ))),
    }
}

fn invalid(message: String) -> ApiError {
    ApiError::new(ErrorCode::InvalidRequest, message)
}
