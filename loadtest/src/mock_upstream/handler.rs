//! The HTTP endpoints: chat completions, stats and health.
//!
//! The chat handler turns a request into a [`Plan`] and applies the faults
//! that happen before or instead of a body (500, hang, non-streaming
//! variants); streaming itself is delegated to [`sse`](super::sse).

use std::sync::atomic::Ordering;
use std::sync::Arc;

use axum::body::{Body, Bytes};
use axum::extract::State;
use axum::http::{header, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::Json;
use serde_json::{json, Value};

use super::faults::Fault;
use super::plan::Plan;
use super::request::{error_body, error_body_with_code, ChatRequest};
use super::sse::{self, unless_shutdown, Aborted, DisconnectGuard};
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
    let plan = Plan::new(&shared.config, number, &request);
    tracing::debug!(model = %plan.model, stream = request.stream, parts = plan.parts(), "mock upstream: chat request");

    let mut guard = DisconnectGuard::new(shared.clone());
    let mut shutdown = shared.shutdown.subscribe();
    match plan.behaviour.fault {
        Fault::Error500 => {
            guard.disarm();
            let body = error_body("mock upstream: injected internal error", "server_error");
            return (StatusCode::INTERNAL_SERVER_ERROR, Json(body)).into_response();
        }
        Fault::Error503 => {
            guard.disarm();
            let body = error_body(
                "mock upstream: injected overload, the server is not ready",
                "server_error",
            );
            return (StatusCode::SERVICE_UNAVAILABLE, Json(body)).into_response();
        }
        Fault::RateLimited { retry_after_s } => {
            guard.disarm();
            let message =
                format!("mock upstream: injected rate limit, please try again in {retry_after_s}s");
            let body = error_body_with_code(&message, "requests", Some("rate_limit_exceeded"));
            let retry_after = [(header::RETRY_AFTER, retry_after_s.to_string())];
            return (StatusCode::TOO_MANY_REQUESTS, retry_after, Json(body)).into_response();
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
    match plan.behaviour.fault {
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
        Fault::ErrorAfter(_) | Fault::ErrorEventAfter(_) => {
            guard.disarm();
            let body = error_body("mock upstream: injected error", "server_error");
            return (StatusCode::INTERNAL_SERVER_ERROR, Json(body)).into_response();
        }
        _ => {}
    }
    let wait = plan.duration(shared.config.tokens_per_second);
    if !unless_shutdown(&mut shutdown, tokio::time::sleep(wait)).await {
        guard.disarm();
        return StatusCode::SERVICE_UNAVAILABLE.into_response();
    }
    guard.disarm();
    let counters = &shared.counters;
    let lead = plan.lead();
    let reasoning = (0..lead).filter(|&index| plan.is_reasoning(index)).count();
    counters
        .reasoning_tokens_sent
        .fetch_add(reasoning as u64, Ordering::SeqCst);
    counters
        .tokens_sent
        .fetch_add(u64::from(plan.parts() - lead), Ordering::SeqCst);
    counters.completed.fetch_add(1, Ordering::SeqCst);
    Json(completion(&plan)).into_response()
}

/// The non-streaming `chat.completion` object.
fn completion(plan: &Plan) -> Value {
    let mut completion = json!({
        "id": plan.id,
        "object": "chat.completion",
        "created": plan.created,
        "model": plan.model,
        "system_fingerprint": null,
        "choices": [{
            "index": 0,
            "message": plan.message(),
            "logprobs": null,
            "finish_reason": plan.finish_reason,
        }],
    });
    if plan.behaviour.fault != Fault::NoUsage {
        completion["usage"] = plan.usage();
    }
    completion
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
