//! `GET /v1/admin/feedback?bot=&rating=&limit=&before=`: what users said of
//! their answers, newest answers first, with each answer's ids and bot
//! (never the user, never the answer's text). Cursors are opaque, as in
//! the history API.

use axum::extract::State;
use axum::routing::get;
use axum::{Json, Router};
use serde::Deserialize;
use skald_actors::ports::store::{FeedbackFilter, FeedbackRecord};
use skald_actors::time::rfc3339;
use skald_protocol::http::{FeedbackEntry, FeedbackPage, Rating};
use skald_protocol::ErrorCode;

use super::Admin;
use crate::edge::error::{ApiError, ApiQuery};
use crate::edge::paging::{self, PageQuery};
use crate::edge::AppState;

pub fn router() -> Router<AppState> {
    Router::new().route("/v1/admin/feedback", get(list))
}

#[derive(Deserialize)]
struct Filter {
    bot: Option<String>,
    rating: Option<String>,
}

impl Filter {
    fn parse(self) -> Result<FeedbackFilter, ApiError> {
        let rating = match self.rating.as_deref() {
            None => None,
            Some(raw) => Some(
                raw.parse::<i8>()
                    .ok()
                    .and_then(|n| Rating::try_from(n).ok())
                    .ok_or_else(|| {
                        ApiError::new(ErrorCode::InvalidRequest, "rating must be 1 or -1")
                    })?,
            ),
        };
        Ok(FeedbackFilter {
            bot: self.bot.filter(|b| !b.is_empty()),
            rating,
        })
    }
}

async fn list(
    State(app): State<AppState>,
    _: Admin,
    ApiQuery(page): ApiQuery<PageQuery>,
    ApiQuery(filter): ApiQuery<Filter>,
) -> Result<Json<FeedbackPage>, ApiError> {
    let (limit, before) = page.before()?;
    let filter = filter.parse()?;
    let found = app
        .hub
        .services
        .store
        .list_feedback(&filter, limit, before.as_deref())
        .await?;
    let (feedback, next) = paging::reply(found, entry);
    Ok(Json(FeedbackPage { feedback, next }))
}

fn entry(r: FeedbackRecord) -> FeedbackEntry {
    FeedbackEntry {
        message_id: r.message_id,
        conversation_id: r.conversation_id,
        bot: r.bot,
        rating: r.feedback.rating,
        comment: r.feedback.comment,
        at: rfc3339(r.feedback.at_ms),
    }
}
