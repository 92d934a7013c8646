//! `PUT`/`DELETE /v1/messages/{id}/feedback` (PROTOCOL.md): a user rates
//! one of their answers (`1` or `-1`, with an optional comment). The
//! history and the export show it; erasure removes it; operators list it
//! (`GET /v1/admin/feedback`). Another user's message, a user message or
//! an unknown id are all the same 404.

use axum::extract::State;
use axum::http::StatusCode;
use axum::routing::put;
use axum::Router;
use skald_actors::ports::store::Feedback;
use skald_protocol::http::{self, MAX_FEEDBACK_COMMENT_CHARS};
use skald_protocol::{ErrorCode, MessageId};

use super::access::Caller;
use super::error::{ApiError, ApiJson, ApiPath};
use super::AppState;

pub fn router() -> Router<AppState> {
    Router::new().route("/v1/messages/{id}/feedback", put(give).delete(withdraw))
}

/// `PUT`: sets (or replaces) the caller's feedback on their answer; 204.
async fn give(
    State(app): State<AppState>,
    Caller(user): Caller,
    ApiPath(id): ApiPath<String>,
    ApiJson(body): ApiJson<http::Feedback>,
) -> Result<StatusCode, ApiError> {
    let id = message_id(id)?;
    let comment = body.comment.filter(|c| !c.trim().is_empty());
    if let Some(chars) = comment.as_ref().map(|c| c.chars().count()) {
        if chars > MAX_FEEDBACK_COMMENT_CHARS {
            return Err(ApiError::new(
                ErrorCode::InvalidRequest,
                format!("the comment has {chars} characters; at most {MAX_FEEDBACK_COMMENT_CHARS}"),
            ));
        }
    }
    let feedback = Feedback {
        rating: body.rating,
        comment,
        at_ms: app.hub.now_ms(),
    };
    set(&app, &user.id, &id, Some(feedback)).await
}

/// `DELETE`: removes it; 204 (also when there was none).
async fn withdraw(
    State(app): State<AppState>,
    Caller(user): Caller,
    ApiPath(id): ApiPath<String>,
) -> Result<StatusCode, ApiError> {
    let id = message_id(id)?;
    set(&app, &user.id, &id, None).await
}

async fn set(
    app: &AppState,
    user: &skald_protocol::UserId,
    id: &MessageId,
    feedback: Option<Feedback>,
) -> Result<StatusCode, ApiError> {
    match app
        .hub
        .services
        .store
        .set_feedback(user, id, feedback)
        .await?
    {
        true => Ok(StatusCode::NO_CONTENT),
        false => Err(no_such_answer()),
    }
}

/// Message ids are the server's (UUIDs); anything longer is no message.
fn message_id(id: String) -> Result<MessageId, ApiError> {
    match id.len() {
        1..=64 => Ok(MessageId::from(id)),
        _ => Err(no_such_answer()),
    }
}

fn no_such_answer() -> ApiError {
    ApiError::new(ErrorCode::NotFound, "no such answer")
}
