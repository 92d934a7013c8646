//! `GET /v1/admin/usage?month=&user=&bot=&limit=&before=`: what each user
//! spent on each bot in a month (the current UTC month unless `month`
//! says `YYYY-MM`), by user then bot, paged with opaque cursors. Counted
//! by the store as answers begin and end, and kept when conversations are
//! deleted or their user erased: counters, with no content.

use axum::extract::State;
use axum::routing::get;
use axum::{Json, Router};
use serde::Deserialize;
use skald_actors::ports::store::{UsageFilter, UsageRecord};
use skald_actors::time::Month;
use skald_actors::UserId;
use skald_protocol::http::{UsageEntry, UsagePage};
use skald_protocol::ErrorCode;

use super::Admin;
use crate::edge::error::{ApiError, ApiQuery};
use crate::edge::paging::{self, PageQuery};
use crate::edge::AppState;

pub fn router() -> Router<AppState> {
    Router::new().route("/v1/admin/usage", get(list))
}

#[derive(Deserialize)]
struct Filter {
    month: Option<String>,
    user: Option<String>,
    bot: Option<String>,
}

impl Filter {
    fn parse(self, now_ms: i64) -> Result<UsageFilter, ApiError> {
        let month = match self.month.as_deref().filter(|m| !m.is_empty()) {
            None => Month::of(now_ms),
            Some(raw) => Month::parse(raw).ok_or_else(|| {
                ApiError::new(
                    ErrorCode::InvalidRequest,
                    format!("month must be YYYY-MM, not {raw:?}"),
                )
            })?,
        };
        Ok(UsageFilter {
            month,
            user: self.user.filter(|u| !u.is_empty()).map(UserId::from),
            bot: self.bot.filter(|b| !b.is_empty()),
        })
    }
}

async fn list(
    State(app): State<AppState>,
    _: Admin,
    ApiQuery(page): ApiQuery<PageQuery>,
    ApiQuery(filter): ApiQuery<Filter>,
) -> Result<Json<UsagePage>, ApiError> {
    let (limit, before) = page.before()?;
    let services = &app.hub.services;
    let filter = filter.parse(services.clock.now_ms())?;
    let found = services
        .store
        .list_usage(&filter, limit, before.as_deref())
        .await?;
    let (usage, next) = paging::reply(found, entry);
    Ok(Json(UsagePage { usage, next }))
}

fn entry(r: UsageRecord) -> UsageEntry {
    UsageEntry {
        user: r.user,
        bot: r.bot,
        month: r.month.to_string(),
        tokens: r.tokens,
        requests: r.requests,
    }
}
