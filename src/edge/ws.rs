//! `GET /v1/ws`: the upgrade. Checks the origin allow-list, reads an
//! `Authorization` header if there is one, sizes the socket's buffers from
//! the configuration (tungstenite's 128 KiB default read buffer would
//! dominate an idle session's memory), and hands the socket to
//! [`super::connection::run`] with its place among the pending connections
//! ([`super::pending`]), which the session gives back once authenticated.

use axum::extract::ws::WebSocketUpgrade;
use axum::extract::{Extension, State};
use axum::http::{header, HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use futures::StreamExt;
use skald_protocol::ErrorCode;

use super::access::{bearer, check_address};
use super::client_ip::ClientIp;
use super::connection::Accepted;
use super::error::ApiError;
use super::pending::PendingSlot;
use super::AppState;

pub async fn upgrade(
    State(app): State<AppState>,
    ClientIp(client): ClientIp,
    Extension(slot): Extension<PendingSlot>,
    headers: HeaderMap,
    ws: WebSocketUpgrade,
) -> Response {
    if !origin_allowed(&app.config.allowed_origins, &headers) {
        // PROTOCOL.md: an origin off the list is refused with HTTP 403.
        let mut refusal = ApiError::new(
            ErrorCode::Unauthorized,
            "this origin may not open a connection",
        )
        .into_response();
        *refusal.status_mut() = StatusCode::FORBIDDEN;
        return refusal;
    }
    if app.hub.is_draining() {
        return ApiError::new(ErrorCode::Unavailable, "the server is shutting down")
            .into_response();
    }
    if let Err(refusal) = check_address(&app, client).await {
        return refusal.into_response();
    }
    let header_auth = bearer(&headers).map(|token| app.verifier.verify_session(token));
    let site = super::access::site(&headers);
    let sizes = &app.config.websocket;
    ws.read_buffer_size(sizes.read_buffer_bytes)
        .write_buffer_size(sizes.write_buffer_bytes)
        .max_message_size(sizes.max_frame_bytes)
        .max_frame_size(sizes.max_frame_bytes)
        .on_upgrade(move |socket| {
            super::connection::run(Box::new(Accepted {
                halves: socket.split(),
                app,
                header_auth,
                client,
                site,
                // The socket stays pending until its session authenticates.
                pending: slot.take(),
            }))
        })
}

/// No allow-list, or no `Origin` header (not a browser), or an origin on
/// the list.
fn origin_allowed(allowed: &[String], headers: &HeaderMap) -> bool {
    if allowed.is_empty() {
        return true;
    }
    match headers.get(header::ORIGIN) {
        None => true,
        Some(origin) => origin
            .to_str()
            .is_ok_and(|o| allowed.iter().any(|a| a.eq_ignore_ascii_case(o))),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn origins() {
        let mut headers = HeaderMap::new();
        assert!(origin_allowed(&[], &headers));
        let list = vec!["https://shop.example".to_owned()];
        assert!(origin_allowed(&list, &headers));
        headers.insert(header::ORIGIN, "https://evil.example".parse().unwrap());
        assert!(!origin_allowed(&list, &headers));
        headers.insert(header::ORIGIN, "https://shop.example".parse().unwrap());
        assert!(origin_allowed(&list, &headers));
    }
}
