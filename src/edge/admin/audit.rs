//! `GET /v1/admin/audit?user=&action=&limit=&before=`: the audit log,
//! newest first, for one user or everyone, one action or all; paged with
//! opaque cursors, as the history API. Records carry no message text; a
//! full client address only for its first 30 days.

use axum::extract::State;
use axum::routing::get;
use axum::{Json, Router};
use serde::Deserialize;
use skald_actors::ports::store::{AuditAction, AuditFilter, AuditRecord};
use skald_actors::time::rfc3339;
use skald_actors::UserId;
use skald_protocol::http::{AuditEvent, AuditPage};
use skald_protocol::ErrorCode;

use super::Admin;
use crate::edge::error::{ApiError, ApiQuery};
use crate::edge::paging::{self, PageQuery};
use crate::edge::AppState;

pub fn router() -> Router<AppState> {
    Router::new().route("/v1/admin/audit", get(list))
}

#[derive(Deserialize)]
struct Filter {
    user: Option<String>,
    action: Option<String>,
}

impl Filter {
    fn parse(self) -> Result<AuditFilter, ApiError> {
        let action = match self.action.as_deref().filter(|a| !a.is_empty()) {
            None => None,
            Some(raw) => Some(raw.parse::<AuditAction>().map_err(|_| {
                let known: Vec<&str> = <AuditAction as strum::VariantArray>::VARIANTS
                    .iter()
                    .map(|a| a.as_str())
                    .collect();
                ApiError::new(
                    ErrorCode::InvalidRequest,
                    format!("unknown action {raw:?} (one of {})", known.join(", ")),
                )
            })?),
        };
        Ok(AuditFilter {
            user: self.user.filter(|u| !u.is_empty()).map(UserId::from),
            action,
        })
    }
}

async fn list(
    State(app): State<AppState>,
    _: Admin,
    ApiQuery(page): ApiQuery<PageQuery>,
    ApiQuery(filter): ApiQuery<Filter>,
) -> Result<Json<AuditPage>, ApiError> {
    let (limit, before) = page.before()?;
    let filter = filter.parse()?;
    let found = app
        .hub
        .services
        .store
        .list_audit(&filter, limit, before.as_deref())
        .await?;
    let (events, next) = paging::reply(found, event);
    Ok(Json(AuditPage { events, next }))
}

fn event(r: AuditRecord) -> AuditEvent {
    AuditEvent {
        id: r.id,
        at: rfc3339(r.at_ms),
        user: r.user,
        actor: r.actor,
        action: r.action,
        resource: r.detail,
        address: r.address.or(r.address_anonymised),
    }
}
