//! The accept loop: each TCP connection served by hyper's HTTP/1.1 server
//! with the router, under the limits that keep one host from holding every
//! connection of the process.
//!
//! `axum::serve` has none of them: a connection that never finishes its
//! request is held forever, and once the open-files limit is reached
//! nobody, health checks included, is served. Here:
//!
//! - **Header-read timeout** (`connections.header_read_timeout_ms`): the
//!   request line and headers must arrive within it, counted from the
//!   connection's start, and again from the end of each response on a
//!   keep-alive connection (hyper's timer), so silent, dripping and idle
//!   connections all end.
//! - **Body-read timeout** (`connections.body_read_timeout_ms`): a request
//!   body must arrive whole within it, counted from the end of the headers.
//! - **Pending caps** ([`super::pending`]): connections that are not yet an
//!   authenticated session, per address and in total; the oldest is closed
//!   to make room.
//! - **A reserve of file descriptors** (`connections.fd_reserve`): no more
//!   connections are kept open than the open-files limit less the reserve,
//!   which stays for the store, Redis, upstream requests and the logs. At
//!   that point the oldest pending connection is closed for a new one; when
//!   none is pending, the new connection is closed at once.
//! - **Back-off on accept errors** (`EMFILE`, `ENFILE`, `ENOBUFS`): the
//!   loop closes the oldest pending connections and waits, doubling from
//!   5 ms to 1 s, instead of spinning on an error that will not clear;
//!   the warning is logged once a second at most.
//!
//! The counts and caps are the process's, not a listener's: every listener
//! (the main one, and `metrics.listen`'s) serves through one [`Edge`], so
//! descriptors are reserved once and the gauges count every connection.
//!
//! Only HTTP/1.1 is served (WebSocket upgrades and the JSON API need
//! nothing else); a TLS-terminating proxy in front speaks HTTP/1.1 to it.
//! With `[tls]` ([`crate::tls`]), each connection's handshake comes first,
//! in its own task, within the header-read timeout.

use std::convert::Infallible;
use std::future::Future;
use std::net::SocketAddr;
use std::pin::Pin;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::Duration;

use axum::body::Body;
use axum::extract::ConnectInfo;
use axum::http::{Request, Response};
use axum::Router;
use hyper::body::{Frame, Incoming, SizeHint};
use hyper::server::conn::http1;
use hyper_util::rt::{TokioIo, TokioTimer};
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::net::{TcpListener, TcpStream};
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;
use tower::ServiceExt;

use super::pending::{Eviction, PendingCaps, PendingSlot, PendingTable};
use crate::config::Config;
use crate::tls::Tls;

/// Pending connections closed when `accept` fails for want of descriptors.
const EVICTIONS_PER_ACCEPT_ERROR: usize = 16;

/// The limits of the process's connections, from the configuration and the
/// process's open-files limit.
#[derive(Debug, Clone)]
pub struct EdgeLimits {
    pub header_read_timeout: Duration,
    pub body_read_timeout: Duration,
    /// Connections kept open at most (the open-files limit less the reserve).
    pub max_open: usize,
    pub pending: PendingCaps,
    /// SO_SNDBUF of each accepted socket, if set.
    pub send_buffer: Option<usize>,
}

impl EdgeLimits {
    /// From `config` and `open_files`, the process's open-files limit.
    pub fn new(config: &Config, open_files: usize) -> EdgeLimits {
        let c = &config.connections;
        let max_open = open_files.saturating_sub(c.fd_reserve).max(1);
        let total = match c.max_pending {
            0 => (max_open / 2).max(1),
            n => n.min(max_open),
        };
        EdgeLimits {
            header_read_timeout: Duration::from_millis(c.header_read_timeout_ms),
            body_read_timeout: Duration::from_millis(c.body_read_timeout_ms),
            max_open,
            pending: PendingCaps {
                total,
                per_address: c.max_pending_per_address,
                exempt: config.trusted_proxies.clone(),
            },
            send_buffer: config.websocket.socket_send_buffer_bytes,
        }
    }
}

/// The process's open-files limit, first raised to its hard limit (the
/// soft default, often 1,024, is far below what a server of WebSockets
/// needs; raising it is what servers do at start).
pub fn open_files_limit() -> usize {
    let limit = rlimit::increase_nofile_limit(u64::MAX)
        .or_else(|_| rlimit::getrlimit(rlimit::Resource::NOFILE).map(|(soft, _)| soft))
        .unwrap_or(1024);
    usize::try_from(limit).unwrap_or(usize::MAX)
}

/// What every listener of the process shares: the limits, the table of
/// pending connections and the count of open ones.
pub struct Edge {
    limits: EdgeLimits,
    pending: Arc<PendingTable>,
    open: Arc<AtomicUsize>,
}

impl Edge {
    pub fn new(limits: EdgeLimits) -> Arc<Edge> {
        Arc::new(Edge {
            pending: PendingTable::new(limits.pending.clone()),
            open: Arc::new(AtomicUsize::new(0)),
            limits,
        })
    }
}

/// Serves `router` on `listener` (over TLS when `tls` is given) until
/// `shutdown` resolves; then stops accepting, lets requests in flight
/// finish (at most `grace`), and returns. Upgraded connections are not
/// waited for: they belong to the sessions, which the server closes
/// itself.
pub async fn serve(
    listener: TcpListener,
    router: Router,
    edge: Arc<Edge>,
    tls: Option<Arc<Tls>>,
    grace: Duration,
    shutdown: impl Future<Output = ()>,
) {
    let Edge {
        limits,
        pending,
        open,
    } = &*edge;
    let mut builder = http1::Builder::new();
    builder
        .timer(TokioTimer::new())
        .header_read_timeout(limits.header_read_timeout);
    let builder = Arc::new(builder);
    let closing = CancellationToken::new();
    let tracker = TaskTracker::new();
    let mut backoff = Backoff::default();
    tokio::pin!(shutdown);
    loop {
        let (tcp, peer) = tokio::select! {
            () = &mut shutdown => break,
            accepted = listener.accept() => match accepted {
                Ok(accepted) => {
                    backoff.reset();
                    accepted
                }
                Err(e) if is_connection_error(&e) => continue,
                Err(e) => {
                    // Out of descriptors (or buffers): free some and wait.
                    // More than one: the connections queued in the kernel
                    // (a health check among them) each need one to be
                    // accepted.
                    for _ in 0..EVICTIONS_PER_ACCEPT_ERROR {
                        pending.evict_oldest(Eviction::Descriptors);
                    }
                    metrics::counter!("skald_accept_errors_total").increment(1);
                    backoff.wait(&e).await;
                    continue;
                }
            },
        };
        if open.load(Ordering::Relaxed) >= limits.max_open
            && !pending.evict_oldest(Eviction::Descriptors)
        {
            // Every connection is an authenticated session: the reserve is
            // not given away.
            metrics::counter!("skald_connections_refused_total").increment(1);
            drop(tcp);
            continue;
        }
        configure(&tcp, limits.send_buffer);
        let io = Counted::new(tcp, Arc::clone(open));
        let place = pending.admit(peer.ip());
        let evicted = place.evicted();
        let connection = Connection {
            peer,
            slot: PendingSlot::new(place),
            evicted,
            router: router.clone(),
            builder: builder.clone(),
            body_read_timeout: limits.body_read_timeout,
            closing: closing.clone(),
        };
        match &tls {
            None => tracker.spawn(serve_connection(connection, io)),
            Some(tls) => tracker.spawn(handshake_then_serve(
                connection,
                io,
                tls.clone(),
                limits.header_read_timeout,
            )),
        };
    }
    drop(listener);
    closing.cancel();
    tracker.close();
    if tokio::time::timeout(grace, tracker.wait()).await.is_err() {
        tracing::debug!("requests still in flight at shutdown were dropped");
    }
}

/// Deltas are small and latency-bound: never let Nagle hold one back (it
/// costs about 40 ms at p99); the writer batches in user space.
fn configure(tcp: &TcpStream, send_buffer: Option<usize>) {
    if let Err(e) = tcp.set_nodelay(true) {
        tracing::warn!(error = %e, "could not set TCP_NODELAY");
    }
    if let Some(bytes) = send_buffer {
        if let Err(e) = socket2::SockRef::from(tcp).set_send_buffer_size(bytes) {
            tracing::warn!(error = %e, "could not set SO_SNDBUF");
        }
    }
}

/// Errors of one connection that died before it was accepted: nothing to
/// wait for.
fn is_connection_error(e: &std::io::Error) -> bool {
    use std::io::ErrorKind::*;
    matches!(
        e.kind(),
        ConnectionRefused | ConnectionAborted | ConnectionReset | Interrupted
    )
}

/// The accept loop's wait after an error that persists.
#[derive(Debug)]
struct Backoff {
    delay: Duration,
    last_warning: Option<tokio::time::Instant>,
    suppressed: u64,
}

impl Default for Backoff {
    fn default() -> Backoff {
        Backoff {
            delay: Backoff::FIRST,
            last_warning: None,
            suppressed: 0,
        }
    }
}

impl Backoff {
    const FIRST: Duration = Duration::from_millis(5);
    const MAX: Duration = Duration::from_secs(1);

    fn reset(&mut self) {
        self.delay = Backoff::FIRST;
    }

    async fn wait(&mut self, error: &std::io::Error) {
        let now = tokio::time::Instant::now();
        if self
            .last_warning
            .is_none_or(|at| now.duration_since(at) >= Duration::from_secs(1))
        {
            tracing::warn!(
                %error,
                repeated = self.suppressed,
                retry_in_ms = self.delay.as_millis() as u64,
                "accept failed; closing the oldest pending connections and waiting"
            );
            self.last_warning = Some(now);
            self.suppressed = 0;
        } else {
            self.suppressed += 1;
        }
        tokio::time::sleep(self.delay).await;
        self.delay = (self.delay * 2).min(Backoff::MAX);
    }
}

struct Connection {
    peer: SocketAddr,
    slot: PendingSlot,
    /// Cancelled when the connection is closed to make room.
    evicted: CancellationToken,
    router: Router,
    builder: Arc<http1::Builder>,
    body_read_timeout: Duration,
    closing: CancellationToken,
}

/// A TLS connection: its handshake, within `timeout` (a silent or
/// dripping client is closed as one that never sends its headers), then
/// its requests.
async fn handshake_then_serve(c: Connection, io: Counted, tls: Arc<Tls>, timeout: Duration) {
    let handshake = tokio::time::timeout(timeout, tls.acceptor().accept(io));
    let done = tokio::select! {
        done = handshake => done,
        () = c.evicted.cancelled() => return,
        () = c.closing.cancelled() => return,
    };
    let failed = match done {
        Ok(Ok(stream)) => return serve_connection(c, stream).await,
        Ok(Err(e)) => e.to_string(),
        Err(_) => "timed out".to_owned(),
    };
    tracing::debug!(client = %c.peer, error = %failed, "TLS handshake failed");
    metrics::counter!("skald_tls_handshake_failures_total").increment(1);
}

/// One connection: its requests, and its end when it was closed to make
/// room or the server stops.
async fn serve_connection<I>(c: Connection, io: I)
where
    I: AsyncRead + AsyncWrite + Unpin + Send + 'static,
{
    let Connection {
        peer,
        slot,
        evicted,
        router,
        builder,
        body_read_timeout,
        closing,
    } = c;
    let service = hyper::service::service_fn(move |request: Request<Incoming>| {
        let (mut parts, body) = request.into_parts();
        parts.extensions.insert(ConnectInfo(peer));
        parts.extensions.insert(slot.clone());
        let body = Body::new(DeadlineBody::new(body, body_read_timeout));
        let request = Request::from_parts(parts, body);
        let router = router.clone();
        async move {
            let response: Response<Body> = router.oneshot(request).await?;
            Ok::<_, Infallible>(response)
        }
    });
    let conn = builder
        .serve_connection(TokioIo::new(io), service)
        .with_upgrades();
    tokio::pin!(conn);
    let mut stopping = false;
    loop {
        tokio::select! {
            result = conn.as_mut() => {
                if let Err(e) = result {
                    tracing::debug!(client = %peer, error = %e, "connection ended");
                }
                return;
            }
            () = evicted.cancelled() => return,
            () = closing.cancelled(), if !stopping => {
                conn.as_mut().graceful_shutdown();
                stopping = true;
            }
        }
    }
}

/// A socket that counts itself among the open ones for as long as it lives
/// (an upgraded connection's socket lives on after its HTTP request).
struct Counted {
    tcp: TcpStream,
    open: Arc<AtomicUsize>,
}

impl Counted {
    fn new(tcp: TcpStream, open: Arc<AtomicUsize>) -> Counted {
        let now = open.fetch_add(1, Ordering::Relaxed) + 1;
        metrics::gauge!("skald_connections_open").set(now as f64);
        Counted { tcp, open }
    }
}

impl Drop for Counted {
    fn drop(&mut self) {
        let now = self.open.fetch_sub(1, Ordering::Relaxed) - 1;
        metrics::gauge!("skald_connections_open").set(now as f64);
    }
}

impl AsyncRead for Counted {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<std::io::Result<()>> {
        Pin::new(&mut self.tcp).poll_read(cx, buf)
    }
}

impl AsyncWrite for Counted {
    fn poll_write(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<std::io::Result<usize>> {
        Pin::new(&mut self.tcp).poll_write(cx, buf)
    }

    fn poll_write_vectored(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[std::io::IoSlice<'_>],
    ) -> Poll<std::io::Result<usize>> {
        Pin::new(&mut self.tcp).poll_write_vectored(cx, bufs)
    }

    fn is_write_vectored(&self) -> bool {
        self.tcp.is_write_vectored()
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        Pin::new(&mut self.tcp).poll_flush(cx)
    }

    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        Pin::new(&mut self.tcp).poll_shutdown(cx)
    }
}

/// A request body that must arrive whole before its deadline; after it,
/// reading fails (the handler's extractor answers 400 in the protocol's
/// shape, and the connection closes).
struct DeadlineBody<B> {
    inner: B,
    within: Duration,
    deadline: Pin<Box<tokio::time::Sleep>>,
}

/// A body that missed its deadline.
#[derive(Debug, thiserror::Error)]
#[error("the request body did not arrive within {0:?}")]
struct BodyTimeout(Duration);

impl<B> DeadlineBody<B> {
    fn new(inner: B, within: Duration) -> DeadlineBody<B> {
        DeadlineBody {
            inner,
            within,
            deadline: Box::pin(tokio::time::sleep(within)),
        }
    }
}

impl<B> hyper::body::Body for DeadlineBody<B>
where
    B: hyper::body::Body<Data = hyper::body::Bytes> + Unpin,
    B::Error: Into<axum::BoxError>,
{
    type Data = hyper::body::Bytes;
    type Error = axum::BoxError;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Self::Data>, Self::Error>>> {
        if let Poll::Ready(frame) = Pin::new(&mut self.inner).poll_frame(cx) {
            return Poll::Ready(frame.map(|f| f.map_err(Into::into)));
        }
        if self.deadline.as_mut().poll(cx).is_ready() {
            return Poll::Ready(Some(Err(BodyTimeout(self.within).into())));
        }
        Poll::Pending
    }

    fn is_end_stream(&self) -> bool {
        hyper::body::Body::is_end_stream(&self.inner)
    }

    fn size_hint(&self) -> SizeHint {
        hyper::body::Body::size_hint(&self.inner)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn never_ending() -> Body {
        Body::from_stream(futures::stream::pending::<
            Result<hyper::body::Bytes, Infallible>,
        >())
    }

    #[tokio::test]
    async fn a_body_that_does_not_arrive_in_time_fails_with_the_deadline() {
        let body = Body::new(DeadlineBody::new(never_ending(), Duration::from_millis(50)));
        let error = axum::body::to_bytes(body, usize::MAX).await.unwrap_err();
        assert!(
            error.to_string().contains("did not arrive within 50ms"),
            "{error}"
        );
    }

    #[tokio::test]
    async fn a_body_in_time_is_read_whole() {
        let body = Body::new(DeadlineBody::new(Body::from("{}"), Duration::from_secs(10)));
        assert_eq!(
            &axum::body::to_bytes(body, usize::MAX).await.unwrap()[..],
            b"{}"
        );
    }

    #[test]
    fn limits_keep_the_reserve_and_default_to_half_for_pending() {
        let mut config = Config::default();
        config.connections.fd_reserve = 64;
        let limits = EdgeLimits::new(&config, 256);
        assert_eq!((limits.max_open, limits.pending.total), (192, 96));
        config.connections.max_pending = 500;
        assert_eq!(EdgeLimits::new(&config, 256).pending.total, 192);
        // A limit below the reserve still serves one connection.
        assert_eq!(EdgeLimits::new(&config, 10).max_open, 1);
    }
}
