//! The history and GDPR API (PROTOCOL.md): conversations and their
//! messages, deletion, export and erasure, for the caller only. Another
//! user's conversation is 404, never 403. Pages as `paging.rs` says.

use axum::extract::State;
use axum::http::StatusCode;
use axum::routing::{delete, get};
use axum::{Json, Router};
use skald_actors::ports::store::{AuditAction, AuditRecord, Conversation, StoredMessage};
use skald_actors::time::rfc3339;
use skald_protocol::http::{
    AuditView, ConversationPage, ConversationView, Export, ExportedKey, ExportedUsage, Feedback,
    MessagePage, MessageView,
};
use skald_protocol::{ConversationId, ErrorCode};

use super::access::Caller;
use super::client_ip::ClientIp;
use super::error::{ApiError, ApiPath, ApiQuery};
use super::paging::{self, PageQuery};
use super::AppState;

pub fn router() -> Router<AppState> {
    Router::new()
        .route("/v1/conversations", get(conversations))
        .route("/v1/conversations/{id}", delete(delete_conversation))
        .route("/v1/conversations/{id}/messages", get(messages))
        .route("/v1/export", get(export))
        .route("/v1/me", delete(erase))
}

fn conversation_view(c: &Conversation) -> ConversationView {
    ConversationView {
        id: c.id.clone(),
        bot: c.bot.clone(),
        title: c.title.clone(),
        created_at: rfc3339(c.created_at_ms),
        updated_at: rfc3339(c.updated_at_ms),
    }
}

fn message_view(m: &StoredMessage) -> MessageView {
    MessageView {
        id: m.id.clone(),
        conversation_id: m.conversation_id.clone(),
        role: m.role,
        content: m.content.clone(),
        created_at: rfc3339(m.created_at_ms),
        finish_reason: m.finish_reason,
        usage: m.usage,
        reasoning: m.reasoning.clone(),
        tool_calls: m.tool_calls.clone(),
        tool_call_id: m.tool_call_id.clone(),
        feedback: m.feedback.as_ref().map(|f| Feedback {
            rating: f.rating,
            comment: f.comment.clone(),
        }),
    }
}

fn audit_view(a: &AuditRecord) -> AuditView {
    AuditView {
        id: a.id.clone(),
        at: rfc3339(a.at_ms),
        action: a.action,
        address: a.address.clone(),
        address_anonymised: a.address_anonymised.clone(),
        detail: a.detail.clone(),
        actor: a.actor.clone(),
    }
}

/// `GET /v1/conversations?limit=&before=`: newest first.
async fn conversations(
    State(app): State<AppState>,
    Caller(user): Caller,
    ApiQuery(query): ApiQuery<PageQuery>,
) -> Result<Json<ConversationPage>, ApiError> {
    let (limit, before) = query.before()?;
    let page = app
        .hub
        .services
        .store
        .list_conversations(&user.id, limit, before.as_deref())
        .await?;
    let (conversations, next) = paging::reply(page, |c| conversation_view(&c));
    Ok(Json(ConversationPage {
        conversations,
        next,
    }))
}

/// `GET /v1/conversations/{id}/messages?limit=&after=`: oldest first.
async fn messages(
    State(app): State<AppState>,
    Caller(user): Caller,
    ApiPath(id): ApiPath<ConversationId>,
    ApiQuery(query): ApiQuery<PageQuery>,
) -> Result<Json<MessagePage>, ApiError> {
    let (limit, after) = query.after()?;
    let page = app
        .hub
        .services
        .store
        .list_messages(&user.id, &id, limit, after.as_deref())
        .await?
        .ok_or_else(|| ApiError::new(ErrorCode::NotFound, "no such conversation"))?;
    let (messages, next) = paging::reply(page, |m| message_view(&m));
    Ok(Json(MessagePage { messages, next }))
}

/// `DELETE /v1/conversations/{id}`: 204, or 404 for anything not the caller's.
async fn delete_conversation(
    State(app): State<AppState>,
    ClientIp(client): ClientIp,
    Caller(user): Caller,
    ApiPath(id): ApiPath<ConversationId>,
) -> Result<StatusCode, ApiError> {
    if !app
        .hub
        .services
        .store
        .delete_conversation(&user.id, &id)
        .await?
    {
        return Err(ApiError::new(ErrorCode::NotFound, "no such conversation"));
    }
    app.hub.audit(AuditRecord::now(
        AuditAction::ConversationDeleted,
        Some(&user.id),
        Some(client),
        id.as_str(),
    ));
    Ok(StatusCode::NO_CONTENT)
}

/// `GET /v1/export`: every record the server holds about the caller.
async fn export(
    State(app): State<AppState>,
    ClientIp(client): ClientIp,
    Caller(user): Caller,
) -> Result<Json<Export>, ApiError> {
    let export = app.hub.services.store.export_user(&user.id).await?;
    // Audited after it was taken: it shows in the next export.
    app.hub.audit(AuditRecord::now(
        AuditAction::Exported,
        Some(&user.id),
        Some(client),
        "",
    ));
    let usage = app
        .hub
        .usage(&user.id)
        .await
        .ok()
        .map(|(month, u)| ExportedUsage {
            month: month.to_string(),
            tokens_used: u.tokens_used,
            requests_used: u.requests_used,
        });
    Ok(Json(Export {
        user: user.id,
        exported_at: rfc3339(skald_actors::time::now_ms()),
        conversations: export.conversations.iter().map(conversation_view).collect(),
        messages: export.messages.iter().map(message_view).collect(),
        idempotency_keys: export
            .idempotency_keys
            .iter()
            .map(|(client_id, e)| ExportedKey {
                send_id: client_id.clone(),
                conversation_id: e.conversation_id.clone(),
                message_id: e.assistant_message_id.clone(),
                stream_id: e.stream_id.clone(),
            })
            .collect(),
        audit: export.audit.iter().map(audit_view).collect(),
        usage,
    }))
}

/// `DELETE /v1/me`: erases every record about the caller, everywhere. The
/// month's usage counters stay (counters without content), and the audit
/// record of the erasure says so.
async fn erase(
    State(app): State<AppState>,
    ClientIp(client): ClientIp,
    Caller(user): Caller,
) -> Result<StatusCode, ApiError> {
    if let Err(e) = app.hub.erase_user(&user.id).await {
        tracing::warn!(error = %e, "erasure failed");
        return Err(ApiError::new(
            ErrorCode::Unavailable,
            "erasure could not complete, try again later",
        ));
    }
    // Kept without the user: the record of an erasure must not undo it.
    app.hub.audit(AuditRecord::now(
        AuditAction::Erased,
        None,
        Some(client),
        "a user erased their data; their usage counters of the month are kept, without content",
    ));
    Ok(StatusCode::NO_CONTENT)
}
