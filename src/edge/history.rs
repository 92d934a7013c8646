//! The history and GDPR API (PROTOCOL.md): conversations and their
//! messages, deletion, export and erasure, for the caller only. Another
//! user's conversation is 404, never 403. Cursors are opaque (base64url of
//! the store's position) and a cursor that does not decode is a 400.

use std::net::SocketAddr;

use axum::extract::{ConnectInfo, Path, Query, State};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use axum::routing::{delete, get};
use axum::{Json, Router};
use base64::Engine;
use serde::Deserialize;
use serde_json::{json, Value};
use skald_actors::ports::store::{
    AuditAction, AuditRecord, Conversation, StoreError, StoredMessage,
};
use skald_actors::time::rfc3339;
use skald_protocol::ErrorCode;

use super::api::Caller;
use super::{http_error, AppState};

const DEFAULT_PAGE: usize = 50;

pub fn router() -> Router<AppState> {
    Router::new()
        .route("/v1/conversations", get(conversations))
        .route("/v1/conversations/{id}", delete(delete_conversation))
        .route("/v1/conversations/{id}/messages", get(messages))
        .route("/v1/export", get(export))
        .route("/v1/me", delete(erase))
}

#[derive(Deserialize)]
struct PageQuery {
    limit: Option<String>,
    before: Option<String>,
    after: Option<String>,
}

impl PageQuery {
    #[allow(clippy::result_large_err)] // the error is the response itself
    fn limit(&self) -> Result<usize, Response> {
        match &self.limit {
            None => Ok(DEFAULT_PAGE),
            Some(raw) => match raw.parse::<usize>() {
                Ok(n) if (1..=skald_actors::ports::store::MAX_PAGE).contains(&n) => Ok(n),
                _ => Err(http_error(
                    ErrorCode::InvalidRequest,
                    format!(
                        "limit must be 1 to {}",
                        skald_actors::ports::store::MAX_PAGE
                    ),
                )),
            },
        }
    }
}

fn encode_cursor(position: &str) -> String {
    base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(position)
}

#[allow(clippy::result_large_err)] // the error is the response itself
fn decode_cursor(cursor: Option<&str>) -> Result<Option<String>, Response> {
    let Some(cursor) = cursor else {
        return Ok(None);
    };
    base64::engine::general_purpose::URL_SAFE_NO_PAD
        .decode(cursor)
        .ok()
        .and_then(|bytes| String::from_utf8(bytes).ok())
        .filter(|s| !s.is_empty() && s.len() <= 64)
        .map(Some)
        .ok_or_else(|| http_error(ErrorCode::InvalidRequest, "bad cursor"))
}

fn store_error(e: StoreError) -> Response {
    match e {
        StoreError::NotFound(_) => http_error(ErrorCode::NotFound, "not found"),
        StoreError::Unavailable(m) => {
            tracing::warn!(error = %m, "store unavailable");
            http_error(
                ErrorCode::Unavailable,
                "storage is unavailable, try again later",
            )
        }
    }
}

fn conversation_json(c: &Conversation) -> Value {
    json!({
        "id": c.id,
        "bot": c.bot,
        "title": c.title,
        "created_at": rfc3339(c.created_at_ms),
        "updated_at": rfc3339(c.updated_at_ms),
    })
}

fn message_json(m: &StoredMessage) -> Value {
    json!({
        "id": m.id,
        "conversation_id": m.conversation_id,
        "role": m.role.as_str(),
        "content": m.content,
        "created_at": rfc3339(m.created_at_ms),
        "finish_reason": m.finish_reason,
        "usage": m.usage.map(|u| json!({"prompt_tokens": u.prompt_tokens, "completion_tokens": u.completion_tokens})),
    })
}

fn audit_json(a: &AuditRecord) -> Value {
    json!({
        "id": a.id,
        "at": rfc3339(a.at_ms),
        "action": a.action.as_str(),
        "address": a.address,
        "address_anonymised": a.address_anonymised,
        "detail": a.detail,
    })
}

/// `GET /v1/conversations?limit=&before=`: newest first.
async fn conversations(
    State(app): State<AppState>,
    Caller(user): Caller,
    Query(query): Query<PageQuery>,
) -> Response {
    let limit = match query.limit() {
        Ok(limit) => limit,
        Err(e) => return e,
    };
    let before = match decode_cursor(query.before.as_deref()) {
        Ok(before) => before,
        Err(e) => return e,
    };
    match app
        .hub
        .services
        .store
        .list_conversations(&user.id, limit, before.as_deref())
        .await
    {
        Ok(page) => Json(json!({
            "conversations": page.items.iter().map(conversation_json).collect::<Vec<_>>(),
            "next": page.next.as_deref().map(encode_cursor),
        }))
        .into_response(),
        Err(e) => store_error(e),
    }
}

/// `GET /v1/conversations/{id}/messages?limit=&after=`: oldest first.
async fn messages(
    State(app): State<AppState>,
    Caller(user): Caller,
    Path(id): Path<String>,
    Query(query): Query<PageQuery>,
) -> Response {
    let limit = match query.limit() {
        Ok(limit) => limit,
        Err(e) => return e,
    };
    let after = match decode_cursor(query.after.as_deref()) {
        Ok(after) => after,
        Err(e) => return e,
    };
    match app
        .hub
        .services
        .store
        .list_messages(&user.id, &id, limit, after.as_deref())
        .await
    {
        Ok(Some(page)) => Json(json!({
            "messages": page.items.iter().map(message_json).collect::<Vec<_>>(),
            "next": page.next.as_deref().map(encode_cursor),
        }))
        .into_response(),
        Ok(None) => http_error(ErrorCode::NotFound, "no such conversation"),
        Err(e) => store_error(e),
    }
}

/// `DELETE /v1/conversations/{id}`: 204, or 404 for anything not the caller's.
async fn delete_conversation(
    State(app): State<AppState>,
    ConnectInfo(peer): ConnectInfo<SocketAddr>,
    Caller(user): Caller,
    Path(id): Path<String>,
) -> Response {
    match app
        .hub
        .services
        .store
        .delete_conversation(&user.id, &id)
        .await
    {
        Ok(true) => {
            app.hub.audit(AuditRecord::now(
                AuditAction::ConversationDeleted,
                Some(&user.id),
                Some(peer.ip()),
                id,
            ));
            StatusCode::NO_CONTENT.into_response()
        }
        Ok(false) => http_error(ErrorCode::NotFound, "no such conversation"),
        Err(e) => store_error(e),
    }
}

/// `GET /v1/export`: every record the server holds about the caller.
async fn export(
    State(app): State<AppState>,
    ConnectInfo(peer): ConnectInfo<SocketAddr>,
    Caller(user): Caller,
) -> Response {
    let export = match app.hub.services.store.export_user(&user.id).await {
        Ok(export) => export,
        Err(e) => return store_error(e),
    };
    // Audited after it was taken: it shows in the next export.
    app.hub.audit(AuditRecord::now(
        AuditAction::Exported,
        Some(&user.id),
        Some(peer.ip()),
        "",
    ));
    let usage = app.hub.usage(&user.id).await.ok().map(|(month, u)| {
        json!({"month": month, "tokens_used": u.tokens_used, "requests_used": u.requests_used})
    });
    Json(json!({
        "user": user.id,
        "exported_at": rfc3339(skald_actors::time::now_ms()),
        "conversations": export.conversations.iter().map(conversation_json).collect::<Vec<_>>(),
        "messages": export.messages.iter().map(message_json).collect::<Vec<_>>(),
        "idempotency_keys": export.idempotency_keys.iter().map(|(client_id, e)| json!({
            "send_id": client_id,
            "conversation_id": e.conversation_id,
            "message_id": e.assistant_message_id,
            "stream_id": e.stream_id,
        })).collect::<Vec<_>>(),
        "audit": export.audit.iter().map(audit_json).collect::<Vec<_>>(),
        "usage": usage,
    }))
    .into_response()
}

/// `DELETE /v1/me`: erases every record about the caller, everywhere.
async fn erase(
    State(app): State<AppState>,
    ConnectInfo(peer): ConnectInfo<SocketAddr>,
    Caller(user): Caller,
) -> Response {
    match app.hub.erase_user(&user.id).await {
        Ok(()) => {
            // Kept without the user: the record of an erasure must not
            // undo it.
            app.hub.audit(AuditRecord::now(
                AuditAction::Erased,
                None,
                Some(peer.ip()),
                "a user erased their data",
            ));
            StatusCode::NO_CONTENT.into_response()
        }
        Err(e) => {
            tracing::warn!(error = %e, "erasure failed");
            http_error(
                ErrorCode::Unavailable,
                "erasure could not complete, try again later",
            )
        }
    }
}
