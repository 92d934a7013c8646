//! One WebSocket connection, from upgrade to close.
//!
//! Two tasks, as in axum's chat example: this one reads the socket, the
//! writer task ([`super::writer`]) writes it. Until the client is
//! authenticated (header at upgrade, or a `hello` frame within
//! `auth_timeout`) no actor exists for it; then a Session actor is started
//! and every decoded frame is cast to it, holding a permit of the session's
//! bounded inbound queue (`sessions.max_inbound_frames`): when the session
//! is behind, the reader waits for a permit and stops reading the socket,
//! so a client that floods frames is slowed by TCP backpressure instead of
//! growing the server's memory. The reader stops when the client closes,
//! when the writer has closed the connection, or on a violation it detects
//! itself: a binary frame (4400), a frame over `max_frame_bytes` (1009),
//! text that is not UTF-8 (1007), broken WebSocket framing (1002).
//!
//! A session lives as long as its token (PROTOCOL.md): the reader closes it
//! with 4401 when `exp` plus the leeway passes, unless a `hello` with a
//! fresh token for the same user moved that end. The reader checks those
//! `hello`s itself: it holds the verifier, the session does not.

use std::future::Future;
use std::net::IpAddr;
use std::sync::Arc;
use std::time::{Duration, SystemTime};

use axum::extract::ws::{Message, WebSocket};
use futures::stream::{SplitSink, SplitStream};
use futures::StreamExt;
use ractor::ActorRef;
use skald_actors::outbox::Outbox;
use skald_actors::ports::store::{AuditAction, AuditRecord};
use skald_actors::session::{SessionArgs, SessionMsg};
use skald_protocol::{ClientFrame, CloseCode, ErrorCode, ServerFrame, SessionId, UserId};
use tokio::sync::Semaphore;
use tokio_util::sync::CancellationToken;
use tracing::Instrument;

use super::pending::Pending;
use super::writer::{self, LastSeen};
use super::AppState;
use crate::auth::{AuthError, Verified};

/// Why a connection could not be authenticated.
enum AuthFailure {
    /// Close with this code after an `error` frame.
    Close(CloseCode, String),
    /// The client broke the WebSocket framing: close with this code.
    Broken(CloseCode, &'static str),
    /// The client went away.
    Gone,
    /// Closed to make room for other connections (see `edge::pending`).
    Evicted,
}

/// What is known of a connection before it authenticates.
struct Unauthenticated {
    header_auth: Option<Result<Verified, AuthError>>,
    client: IpAddr,
    site: Option<Box<str>>,
    /// Cancelled if the connection is closed to make room.
    evicted: CancellationToken,
}

/// The connection's two halves: what the writer task owns and what this
/// task reads from.
pub type Halves = (SplitSink<WebSocket, Message>, SplitStream<WebSocket>);

/// What a connection starts from: the socket already split (see
/// `ws::upgrade`), the verified `Authorization` header if there was one,
/// and the client's address (see `client_ip`).
pub struct Accepted {
    pub halves: Halves,
    pub app: AppState,
    pub header_auth: Option<Result<Verified, AuthError>>,
    pub client: IpAddr,
    /// The upgrade's `Origin` header, when a browser sent one.
    pub site: Option<Box<str>>,
    /// Its place among the pending connections, given back once the
    /// session is authenticated; closing it to make room ends the
    /// connection with 4408.
    pub pending: Option<Pending>,
}

/// Serves one upgraded connection, in a span of its own (the session id and
/// user are recorded once known; message text is never logged, it is
/// personal data).
///
/// `accepted` comes boxed and is unpacked inside: a future keeps the space
/// of its arguments for its whole life, and this one lives as long as the
/// connection, so what is only needed to start (the header's result, the
/// socket before its split) must not stay in it.
pub fn run(accepted: Box<Accepted>) -> impl Future<Output = ()> {
    let span = tracing::info_span!(
        "connection",
        client = %accepted.client,
        session_id = tracing::field::Empty,
        user = tracing::field::Empty
    );
    serve(accepted).instrument(span)
}

async fn serve(accepted: Box<Accepted>) {
    let Accepted {
        halves: (sink, mut stream),
        app,
        header_auth,
        client,
        site,
        pending,
    } = *accepted;
    let ws = &app.config.websocket;
    let outbox = Outbox::new(app.config.sessions.max_queued_frames);
    let last_seen = Arc::new(LastSeen::new());
    let mut writer = tokio::spawn(writer::run(
        sink,
        outbox.clone(),
        std::time::Duration::from_millis(ws.ping_interval_ms),
        std::time::Duration::from_millis(ws.idle_timeout_ms),
        last_seen.clone(),
    ));

    // Boxed: everything before the session exists (authentication, the
    // connection slot, the spawn) would otherwise keep its future's size in
    // this task for the connection's whole life; idle sessions are most of
    // a server's memory.
    let evicted = pending.as_ref().map(Pending::evicted).unwrap_or_default();
    let started = Box::pin(start_session(
        &mut stream,
        &app,
        Unauthenticated {
            header_auth,
            client,
            site,
            evicted,
        },
        &outbox,
    ))
    .await;
    drop(pending);
    let Some((Verified { user, valid_until }, session_id, session)) = started else {
        let _ = writer.await;
        return;
    };
    let inbound = Arc::new(Semaphore::new(app.config.sessions.max_inbound_frames));

    let violation = tokio::select! {
        violation = read_frames(
            &mut stream,
            Reader { app: &app, client, session: &session, outbox: &outbox, last_seen: &last_seen, inbound: &inbound },
            TokenLife { user: &user.id, valid_until },
        ) => violation,
        _ = &mut writer => None,
        _ = app.hub.keep_connection(&user.id, session_id.as_str()) => None,
    };
    if let Some((code, reason)) = violation {
        // What came before the violation is answered first: the session
        // handles the frames it holds (their permits come back) before the
        // close is queued behind its answers. Bounded.
        let held = u32::try_from(app.config.sessions.max_inbound_frames).unwrap_or(u32::MAX);
        let _ = tokio::time::timeout(ANSWER_GRACE, inbound.acquire_many(held)).await;
        outbox.close(code, reason);
    }
    app.hub.release_connection(&user.id, session_id.as_str());
    session.stop(None);
    outbox.close(CloseCode::Normal, "bye");
    if !writer.is_finished() {
        let _ = writer.await;
    }
    tracing::debug!(%session_id, "session ended");
}

/// Authenticates the connection, takes its connection slot and starts its
/// Session actor; `None` when the connection was refused (the refusal is
/// queued in `outbox`, which is then closed).
async fn start_session(
    stream: &mut SplitStream<WebSocket>,
    app: &AppState,
    before: Unauthenticated,
    outbox: &Arc<Outbox>,
) -> Option<(Verified, SessionId, ActorRef<SessionMsg>)> {
    let Unauthenticated {
        header_auth,
        client,
        site,
        evicted,
    } = before;
    let authenticated = tokio::select! {
        result = authenticate(stream, app, header_auth) => result,
        () = evicted.cancelled() => Err(AuthFailure::Evicted),
    };
    let verified = match authenticated {
        Ok(verified) => verified,
        Err(failure) => {
            match failure {
                AuthFailure::Close(code, message) => {
                    auth_failed(app, client, &message);
                    let error = match code {
                        CloseCode::AuthTimeout => {
                            ServerFrame::error(ErrorCode::Unauthorized, "authentication timeout")
                        }
                        _ => ServerFrame::error(ErrorCode::Unauthorized, message.clone()),
                    };
                    outbox.push(&error);
                    outbox.close(code, message);
                }
                AuthFailure::Broken(code, reason) => outbox.close(code, reason),
                AuthFailure::Evicted => outbox.close(
                    CloseCode::AuthTimeout,
                    "closed to make room: too many connections waiting to authenticate",
                ),
                AuthFailure::Gone => outbox.close(CloseCode::Normal, "gone"),
            }
            return None;
        }
    };

    let user = &verified.user;
    let session_id = SessionId::generate();
    let span = tracing::Span::current();
    span.record("session_id", session_id.as_str());
    span.record("user", user.id.as_str());
    // One slot per open connection of this user, shared by every instance.
    // If the limits backend cannot say (fail closed, Redis down), the
    // connection is let in: refusing sends is what protects the quota.
    match app
        .hub
        .acquire_connection(&user.id, session_id.as_str())
        .await
    {
        Ok(true) => {}
        Ok(false) => {
            outbox.push(&ServerFrame::error(
                ErrorCode::RateLimited,
                "too many open connections for this user",
            ));
            outbox.close(CloseCode::TooManyConnections, "too many connections");
            return None;
        }
        Err(e) => {
            tracing::warn!(error = %e, "connection slots unavailable; letting the connection in")
        }
    }
    let args = SessionArgs {
        session_id: session_id.clone(),
        user: user.clone(),
        address: Some(client),
        site,
        outbox: outbox.clone(),
        directory: app.hub.directory.clone(),
    };
    let session = match app.hub.spawn_session(args).await {
        Ok(session) => session,
        Err(e) => {
            tracing::error!(error = %e, "could not start a session");
            outbox.push(&ServerFrame::error(
                ErrorCode::Unavailable,
                "the server cannot take sessions now",
            ));
            outbox.close(CloseCode::Internal, "no session");
            app.hub.release_connection(&user.id, session_id.as_str());
            return None;
        }
    };
    tracing::debug!(%session_id, user = %user.id, %client, "session started");
    Some((verified, session_id, session))
}

/// Header auth if the upgrade carried a token, else the first frame must be
/// a `hello` with a valid token, within `auth_timeout`.
async fn authenticate(
    stream: &mut SplitStream<WebSocket>,
    app: &AppState,
    header_auth: Option<Result<Verified, AuthError>>,
) -> Result<Verified, AuthFailure> {
    let unauthorized = |e: AuthError| AuthFailure::Close(CloseCode::Unauthorized, e.to_string());
    if let Some(result) = header_auth {
        return result.map_err(unauthorized);
    }
    let mut pings = PingBudget::default();
    let wait_hello = async {
        loop {
            let text = match stream.next().await {
                Some(Ok(Message::Text(text))) => text,
                Some(Ok(Message::Ping(_))) if !pings.spend() => {
                    return Err(AuthFailure::Broken(
                        CloseCode::ProtocolError,
                        "too many pings",
                    ))
                }
                Some(Ok(Message::Ping(_) | Message::Pong(_))) => continue,
                Some(Ok(Message::Binary(_))) => {
                    return Err(AuthFailure::Close(
                        CloseCode::ProtocolError,
                        "binary frames are not part of the protocol".into(),
                    ))
                }
                Some(Err(e)) => {
                    return Err(match violation(e) {
                        Some((code, reason)) => AuthFailure::Broken(code, reason),
                        None => AuthFailure::Gone,
                    })
                }
                Some(Ok(Message::Close(_))) | None => return Err(AuthFailure::Gone),
            };
            return match ClientFrame::decode(&text) {
                Ok(ClientFrame::Hello {
                    token: Some(token), ..
                }) => app.verifier.verify_session(&token).map_err(unauthorized),
                Ok(ClientFrame::Hello { token: None, .. }) => Err(unauthorized(AuthError::Missing)),
                _ => Err(AuthFailure::Close(
                    CloseCode::Unauthorized,
                    "the first frame must be a hello with a token".into(),
                )),
            };
        }
    };
    match tokio::time::timeout(app.config.auth_timeout(), wait_hello).await {
        Ok(result) => result,
        Err(_) => Err(AuthFailure::Close(
            CloseCode::AuthTimeout,
            "authentication timeout".into(),
        )),
    }
}

/// How long a connection that broke the protocol waits for its session to
/// answer what came before, before it closes.
const ANSWER_GRACE: std::time::Duration = std::time::Duration::from_secs(1);

/// A refused token: logged, counted and audited with the client's address.
fn auth_failed(app: &AppState, client: IpAddr, message: &str) {
    tracing::info!(%client, %message, "authentication failed");
    metrics::counter!("skald_auth_failures_total").increment(1);
    app.hub.audit(AuditRecord::now(
        AuditAction::AuthFailed,
        None,
        Some(client),
        message,
    ));
}

/// WebSocket pings a client may send a minute. tungstenite answers each
/// one with a pong that waits in the connection's write buffer until the
/// client reads it, so a client that sends pings and never reads would grow
/// that buffer without bound; no client needs more than a few a minute.
/// Over it the connection is closed 4400.
const PINGS_PER_MINUTE: u32 = 120;

/// A connection's count of pings in the current minute.
struct PingBudget {
    window: tokio::time::Instant,
    spent: u32,
}

impl Default for PingBudget {
    fn default() -> PingBudget {
        PingBudget {
            window: tokio::time::Instant::now(),
            spent: 0,
        }
    }
}

impl PingBudget {
    /// Counts one ping; false once the minute's budget is spent.
    fn spend(&mut self) -> bool {
        let now = tokio::time::Instant::now();
        if now.duration_since(self.window) >= Duration::from_secs(60) {
            *self = PingBudget {
                window: now,
                spent: 0,
            };
        }
        self.spent += 1;
        self.spent <= PINGS_PER_MINUTE
    }
}

/// What the reader of an authenticated connection works with.
struct Reader<'a> {
    app: &'a AppState,
    client: IpAddr,
    session: &'a ActorRef<SessionMsg>,
    outbox: &'a Outbox,
    last_seen: &'a LastSeen,
    inbound: &'a Arc<Semaphore>,
}

/// How long a session may live (PROTOCOL.md): until its token's `exp` plus
/// the leeway, moved on by each `hello` with a fresh token for its user.
struct TokenLife<'a> {
    user: &'a UserId,
    valid_until: SystemTime,
}

impl TokenLife<'_> {
    /// The same instant on tokio's clock (at most ten years ahead, which
    /// its arithmetic holds).
    fn deadline(&self) -> tokio::time::Instant {
        const TEN_YEARS: Duration = Duration::from_secs(10 * 366 * 86_400);
        let left = self
            .valid_until
            .duration_since(SystemTime::now())
            .unwrap_or_default();
        tokio::time::Instant::now() + left.min(TEN_YEARS)
    }
}

/// Decodes frames and casts them to the session until the client leaves,
/// breaks the protocol or its token expires; returns the close that calls
/// for. Each frame waits for a permit of `inbound` first. A `hello` with a
/// token is the reader's own: a fresh token for the same user moves the
/// session's end, any other is refused and closes the connection.
async fn read_frames(
    stream: &mut SplitStream<WebSocket>,
    reader: Reader<'_>,
    mut life: TokenLife<'_>,
) -> Option<(CloseCode, &'static str)> {
    let Reader {
        app,
        client,
        session,
        outbox,
        last_seen,
        inbound,
    } = reader;
    let expiry = tokio::time::sleep_until(life.deadline());
    tokio::pin!(expiry);
    let mut pings = PingBudget::default();
    loop {
        let message = tokio::select! {
            message = stream.next() => message?,
            () = &mut expiry => {
                outbox.push(&ServerFrame::error(
                    ErrorCode::Unauthorized,
                    "token expired: send a hello with a fresh token before its exp",
                ));
                return Some((CloseCode::Unauthorized, "token expired"));
            }
        };
        last_seen.touch();
        let message = match message {
            Ok(message) => message,
            Err(e) => return violation(e),
        };
        let decoded = match message {
            Message::Text(text) => ClientFrame::decode(&text),
            Message::Binary(_) => {
                outbox.push(&ServerFrame::error(
                    ErrorCode::InvalidRequest,
                    "binary frames are not part of the protocol",
                ));
                return Some((CloseCode::ProtocolError, "binary frame"));
            }
            Message::Ping(_) if !pings.spend() => {
                outbox.push(&ServerFrame::error(
                    ErrorCode::InvalidRequest,
                    format!("more than {PINGS_PER_MINUTE} WebSocket pings a minute"),
                ));
                return Some((CloseCode::ProtocolError, "too many pings"));
            }
            Message::Ping(_) | Message::Pong(_) => continue,
            Message::Close(_) => return None,
        };
        let kind = decoded.as_ref().map_or("invalid", ClientFrame::kind);
        metrics::counter!("skald_frames_received_total", "type" => kind).increment(1);
        if let Ok(ClientFrame::Hello { token, .. }) = &decoded {
            // Without a token, it says nothing new (a client that
            // authenticated with the upgrade's header may send one).
            let Some(token) = token else { continue };
            let refused = match app.verifier.verify_session(token) {
                Ok(fresh) if fresh.user.id == *life.user => {
                    life.valid_until = fresh.valid_until;
                    expiry.as_mut().reset(life.deadline());
                    continue;
                }
                Ok(_) => "a hello's token must be for the session's user".to_owned(),
                Err(e) => e.to_string(),
            };
            auth_failed(app, client, &refused);
            outbox.push(&ServerFrame::error(ErrorCode::Unauthorized, refused));
            return Some((CloseCode::Unauthorized, "bad token in hello"));
        }
        // The bound of the session's inbound queue: wait for room. The
        // semaphore is never closed, so this only fails if it were.
        let Ok(permit) = inbound.clone().acquire_owned().await else {
            return None;
        };
        let cast = match decoded {
            Ok(frame) => session.cast(SessionMsg::Frame(frame, permit)),
            Err(error) => session.cast(SessionMsg::Invalid(error, permit)),
        };
        if cast.is_err() {
            // The session is gone without its supervisor closing us (e.g.
            // the supervisor itself was restarted).
            outbox.close(CloseCode::Internal, "session ended");
            return None;
        }
    }
}

/// The close code of a read error that is the client's fault (RFC 6455),
/// or `None` when the client just went away.
fn violation(error: axum::Error) -> Option<(CloseCode, &'static str)> {
    use tokio_tungstenite::tungstenite::error::ProtocolError;
    use tokio_tungstenite::tungstenite::Error;
    let error = error.into_inner().downcast::<Error>().ok()?;
    match *error {
        Error::Capacity(_) => Some((CloseCode::TooBig, "frame too big")),
        Error::Utf8(_) => Some((CloseCode::InvalidPayload, "text frame is not UTF-8")),
        Error::Protocol(ProtocolError::ResetWithoutClosingHandshake) => None,
        Error::Protocol(_) => Some((CloseCode::ProtocolViolation, "protocol violation")),
        _ => None,
    }
}
