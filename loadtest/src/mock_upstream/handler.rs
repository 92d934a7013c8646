//! The HTTP endpoints: chat completions, stats and health.
//!
//! The chat handler turns a request into a [`Plan`] and applies the faults
//! that happen before or instead of a body (500, hang, non-streaming
//! variants); streaming itself is delegated to [`sse`](super::sse).

use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use axum::body::{Body, Bytes};
use axum::extract::State;
use axum::http::{header, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::Json;
use serde_json::{json, Value};

use super::answer;
use super::faults::Fault;
use super::request::{error_body, ChatRequest};
use super::sse::{self, unless_shutdown, Aborted, DisconnectGuard, Plan};
use super::{lock, Shared};

pub(super) async fn chat_completions(State(shared): State<Arc<Shared>>, body: Bytes) -> Response {
    let number = shared.counters.requests.fetch_add(1, Ordering::SeqCst) + 1;
    let json: Value = match serde_json::from_slice(&body) {
        Ok(json) => json,
        Err(error) => return bad_request(&format!("invalid JSON body: {error}")),
    };
    *lock(&shared.last_request) = Some(json.clone());
    let request = match ChatRequest::from_json(&json) {
        Ok(request) => request,
        Err(message) => return bad_request(&message),
    };
    let plan = plan(&shared, number, request.model.clone(), &request);
    tracing::debug!(model = %plan.model, stream = request.stream, tokens = plan.tokens, "mock upstream: chat request");

    let mut guard = DisconnectGuard::new(shared.clone());
    let mut shutdown = shared.shutdown.subscribe();
    match plan.fault {
        Fault::Error500 => {
            guard.disarm();
            let body = error_body("mock upstream: injected internal error", "server_error");
            return (StatusCode::INTERNAL_SERVER_ERROR, Json(body)).into_response();
        }
        Fault::Hang => {
            // Never answers; the handler is dropped (guard armed) when the
            // client leaves, or returns here on shutdown.
            unless_shutdown(&mut shutdown, std::future::pending()).await;
            guard.disarm();
            return StatusCode::SERVICE_UNAVAILABLE.into_response();
        }
        _ => {}
    }
    if request.stream {
        let headers = [
            (header::CONTENT_TYPE, "text/event-stream"),
            (header::CACHE_CONTROL, "no-cache"),
        ];
        return (headers, sse::body(shared, plan, guard)).into_response();
    }

    // Non-streaming: the same faults, applied to a single JSON answer.
    let wait = match plan.fault {
        Fault::SlowFirst(ms) => Duration::from_millis(ms),
        _ => Duration::ZERO,
    } + sse::token_offset(shared.config.tokens_per_second, plan.tokens)
        .unwrap_or_default();
    match plan.fault {
        Fault::DropAfter(_) => {
            guard.disarm();
            let aborted =
                futures::stream::once(async { Err::<Bytes, _>(Aborted("injected drop")) });
            return (
                [(header::CONTENT_TYPE, "application/json")],
                Body::from_stream(aborted),
            )
                .into_response();
        }
        Fault::HangAfter(_) => {
            unless_shutdown(&mut shutdown, std::future::pending()).await;
            guard.disarm();
            return StatusCode::SERVICE_UNAVAILABLE.into_response();
        }
        _ => {}
    }
    if !unless_shutdown(&mut shutdown, tokio::time::sleep(wait)).await {
        guard.disarm();
        return StatusCode::SERVICE_UNAVAILABLE.into_response();
    }
    guard.disarm();
    let counters = &shared.counters;
    counters
        .tokens_sent
        .fetch_add(u64::from(plan.tokens), Ordering::SeqCst);
    counters.completed.fetch_add(1, Ordering::SeqCst);
    Json(completion(&plan)).into_response()
}

fn plan(shared: &Shared, number: u64, model: String, request: &ChatRequest) -> Plan {
    let answer_tokens = shared.config.answer_tokens;
    let tokens = request
        .max_tokens
        .map_or(answer_tokens, |max| max.min(answer_tokens));
    Plan {
        id: format!("chatcmpl-mock-{number}"),
        created: SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .map_or(0, |since| since.as_secs()),
        fault: Fault::from_model(&model),
        model,
        seed: answer::seed(&request.last_user_message),
        tokens,
        finish_reason: if tokens < answer_tokens {
            "length"
        } else {
            "stop"
        },
        prompt_tokens: request.prompt_tokens,
        include_usage: request.include_usage,
    }
}

/// The non-streaming `chat.completion` object.
fn completion(plan: &Plan) -> Value {
    let content: String = (0..plan.tokens)
        .map(|index| answer::token(plan.seed, index))
        .collect();
    json!({
        "id": plan.id,
        "object": "chat.completion",
        "created": plan.created,
        "model": plan.model,
        "system_fingerprint": null,
        "choices": [{
            "index": 0,
            "message": { "role": "assistant", "content": content, "refusal": null },
            "logprobs": null,
            "finish_reason": plan.finish_reason,
        }],
        "usage": plan.usage(),
    })
}

fn bad_request(message: &str) -> Response {
    let body = error_body(message, "invalid_request_error");
    (StatusCode::BAD_REQUEST, Json(body)).into_response()
}

pub(super) async fn stats(State(shared): State<Arc<Shared>>) -> Json<super::MockStats> {
    Json(shared.counters.snapshot())
}

pub(super) async fn healthz() -> &'static str {
    "ok"
}
