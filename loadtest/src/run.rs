//! `run`: N sessions that each connect, send messages and read the streamed
//! answers, recording every latency the protocol exposes.
//!
//! Each session records into its own sample vectors (no locks on the hot
//! path); live counters are atomics read by the progress bar. Every wait is
//! bounded by the per-message timeout and by the run's deadline.

use std::collections::BTreeMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;

use anyhow::bail;
use futures::{SinkExt, StreamExt};
use serde::Serialize;
use skald_protocol::{FinishReason, ServerFrame};
use tokio::time::{timeout_at, Instant};
use tokio_tungstenite::tungstenite::Message;

use crate::client::{self, Target, Ws};
use crate::mock_upstream::{now_micros, parse_stamps};
use crate::report::{ErrorCounts, Report};
use crate::stats::Summary;

/// Runs started by this process (part of every `send.id`).
static RUNS: AtomicU64 = AtomicU64::new(0);

/// Hard ceilings, whatever the flags say.
pub const MAX_SESSIONS: u64 = 200_000;
pub const MAX_MESSAGES: u64 = 10_000;
pub const MAX_DURATION_S: u64 = 3_600;

/// The load one `run` applies.
#[derive(Clone, Debug, Serialize)]
pub struct RunConfig {
    pub url: String,
    #[serde(skip)]
    pub secret: String,
    pub sessions: u64,
    /// New sessions per second (0: all at once).
    pub ramp_per_second: f64,
    pub messages_per_session: u64,
    /// Pause after each answer before the next `send`.
    pub think_time_ms: u64,
    /// Keep every session open until this many seconds after the run
    /// started (0: close after the last answer). With `--messages 0` and a
    /// ramp, this is a connection storm whose sessions all stay connected.
    pub hold_s: u64,
    /// Characters in each message.
    pub message_chars: usize,
    /// Bot named in `send.bot` (None: the server's default).
    pub bot: Option<String>,
    /// Longest wait for a connect or for one answer's `done`.
    pub message_timeout_s: u64,
    /// The whole run stops after this, finished or not.
    pub max_duration_s: u64,
    /// Users are `{user_prefix}-{index}`: one user per session.
    pub user_prefix: String,
    /// Bind each session to its own 127.x.y.z source address.
    pub spread_sources: bool,
    /// First source-address index (lets several processes use distinct ones).
    pub source_offset: u64,
    /// Draw a progress bar on stderr.
    pub progress: bool,
}

impl RunConfig {
    /// A small load against `url`: the defaults of the command line.
    pub fn new(url: impl Into<String>, secret: impl Into<String>) -> RunConfig {
        RunConfig {
            url: url.into(),
            secret: secret.into(),
            sessions: 10,
            ramp_per_second: 0.0,
            messages_per_session: 1,
            think_time_ms: 0,
            hold_s: 0,
            message_chars: 32,
            bot: None,
            message_timeout_s: 60,
            max_duration_s: 300,
            user_prefix: "load".into(),
            spread_sources: true,
            source_offset: 0,
            progress: false,
        }
    }
}

/// Counters shared by the sessions and read by the progress bar.
#[derive(Default)]
struct Live {
    connected: AtomicU64,
    messages_sent: AtomicU64,
    messages_done: AtomicU64,
    deltas: AtomicU64,
    stamped: AtomicU64,
    frames_in: AtomicU64,
    bytes_in: AtomicU64,
    frames_out: AtomicU64,
    bytes_out: AtomicU64,
    errors: ErrorCounts,
}

impl Live {
    fn error(&self, kind: impl Into<String>) {
        self.errors.add(kind);
    }
}

/// One session's samples, in microseconds.
#[derive(Default)]
struct Samples {
    connect: Vec<u64>,
    ack: Vec<u64>,
    /// `send` to the model receiving the request: the first stamped
    /// token's stamp minus the send time (the mock stamps its first token
    /// as soon as the request arrives).
    upstream: Vec<u64>,
    first_delta: Vec<u64>,
    gap: Vec<u64>,
    added: Vec<u64>,
    /// (ms since the run started, added µs) per stamped token, for plots.
    timeline: Vec<(u32, u32)>,
}

impl Samples {
    fn merge(&mut self, other: Samples) {
        self.connect.extend(other.connect);
        self.ack.extend(other.ack);
        self.upstream.extend(other.upstream);
        self.first_delta.extend(other.first_delta);
        self.gap.extend(other.gap);
        self.added.extend(other.added);
        self.timeline.extend(other.timeline);
    }
}

fn micros(d: Duration) -> u64 {
    u64::try_from(d.as_micros()).unwrap_or(u64::MAX)
}

/// Runs the load and returns its report.
pub async fn run(config: RunConfig) -> anyhow::Result<Report> {
    let target = Target::parse(&config.url)?;
    if config.sessions == 0 || config.sessions > MAX_SESSIONS {
        bail!("--sessions must be 1 to {MAX_SESSIONS}");
    }
    if config.messages_per_session > MAX_MESSAGES {
        bail!("--messages must be at most {MAX_MESSAGES}");
    }
    if config.max_duration_s == 0 || config.max_duration_s > MAX_DURATION_S {
        bail!("--max-duration must be 1 to {MAX_DURATION_S} s");
    }
    if config.hold_s > config.max_duration_s {
        bail!("--hold must be at most --max-duration");
    }
    if !config.ramp_per_second.is_finite() || config.ramp_per_second < 0.0 {
        bail!("--ramp must be a non-negative number");
    }
    let config = Arc::new(config);
    let live = Arc::new(Live::default());
    let started = Instant::now();
    let started_unix_ms = now_micros() / 1000;
    let deadline = started + Duration::from_secs(config.max_duration_s);
    let hold_until = started + Duration::from_secs(config.hold_s);
    // Distinct in every run, even two started in the same millisecond.
    let run_id: Arc<str> =
        format!("{started_unix_ms}.{}", RUNS.fetch_add(1, Ordering::Relaxed)).into();

    let progress = progress_bar(&config, &live);
    let mut tasks = Vec::with_capacity(config.sessions as usize);
    for index in 0..config.sessions {
        let offset = if config.ramp_per_second > 0.0 {
            Duration::from_secs_f64(index as f64 / config.ramp_per_second)
        } else {
            Duration::ZERO
        };
        let (config, live, target) = (config.clone(), live.clone(), target.clone());
        let run_id = run_id.clone();
        tasks.push(tokio::spawn(async move {
            let mut samples = Samples::default();
            tokio::time::sleep_until((started + offset).min(deadline)).await;
            if Instant::now() >= deadline {
                live.error("deadline");
                return samples;
            }
            let session = session(
                &config,
                &target,
                &live,
                (run_id, index, started_unix_ms * 1000),
                &mut samples,
                (hold_until, deadline),
            );
            if timeout_at(deadline, session).await.is_err() {
                live.error("deadline");
            }
            samples
        }));
    }
    let mut samples = Samples::default();
    for task in tasks {
        if let Ok(one) = task.await {
            samples.merge(one);
        }
    }
    let elapsed_s = started.elapsed().as_secs_f64();
    if let Some((bar, ticker)) = progress {
        ticker.abort();
        bar.finish_and_clear();
    }

    samples.timeline.sort_unstable();
    let timeline = std::mem::take(&mut samples.timeline);
    let mut latency = BTreeMap::new();
    for (key, values) in [
        ("connect", &samples.connect),
        ("send_to_ack", &samples.ack),
        ("send_to_upstream", &samples.upstream),
        ("send_to_first_delta", &samples.first_delta),
        ("inter_delta_gap", &samples.gap),
        ("added_per_token", &samples.added),
    ] {
        latency.insert(key.to_owned(), Summary::of(values));
    }
    let get = |counter: &AtomicU64| counter.load(Ordering::Relaxed);
    let errors = live.errors.by_kind();
    Ok(Report {
        target: config.url.clone(),
        load: serde_json::to_value(&*config)?,
        started_unix_ms,
        elapsed_s,
        sessions: config.sessions,
        sessions_connected: get(&live.connected),
        messages_sent: get(&live.messages_sent),
        messages_done: get(&live.messages_done),
        deltas: get(&live.deltas),
        stamped_tokens: get(&live.stamped),
        frames_in: get(&live.frames_in),
        bytes_in: get(&live.bytes_in),
        frames_out: get(&live.frames_out),
        bytes_out: get(&live.bytes_out),
        errors,
        latency,
        timeline,
    })
}

type Progress = (indicatif::ProgressBar, tokio::task::JoinHandle<()>);

fn progress_bar(config: &RunConfig, live: &Arc<Live>) -> Option<Progress> {
    if !config.progress {
        return None;
    }
    let total = config.sessions * config.messages_per_session.max(1);
    let bar = indicatif::ProgressBar::new(total);
    if let Ok(style) = indicatif::ProgressStyle::with_template(
        "{elapsed_precise} [{bar:30}] {pos}/{len} answers {msg}",
    ) {
        bar.set_style(style.progress_chars("=> "));
    }
    let (bar2, live) = (bar.clone(), live.clone());
    let ticker = tokio::spawn(async move {
        let mut tick = tokio::time::interval(Duration::from_millis(250));
        loop {
            tick.tick().await;
            let errors = live.errors.total();
            bar2.set_position(live.messages_done.load(Ordering::Relaxed));
            bar2.set_message(format!(
                "| connected {} | deltas {} | errors {}",
                live.connected.load(Ordering::Relaxed),
                live.deltas.load(Ordering::Relaxed),
                errors
            ));
        }
    });
    Some((bar, ticker))
}

/// What ended a wait for the next frame.
enum Next {
    Frame(ServerFrame),
    /// The connection is over (already counted as an error).
    Gone,
}

async fn next_frame(ws: &mut Ws, live: &Live, until: Instant) -> Next {
    loop {
        let message = match timeout_at(until, ws.next()).await {
            Err(_) => {
                live.error("timeout");
                return Next::Gone;
            }
            Ok(None) | Ok(Some(Err(_))) => {
                live.error("connection_lost");
                return Next::Gone;
            }
            Ok(Some(Ok(message))) => message,
        };
        match message {
            Message::Text(text) => {
                live.frames_in.fetch_add(1, Ordering::Relaxed);
                live.bytes_in
                    .fetch_add(text.len() as u64, Ordering::Relaxed);
                match serde_json::from_str::<ServerFrame>(text.as_str()) {
                    Ok(frame) => return Next::Frame(frame),
                    Err(_) => live.error("undecodable"),
                }
            }
            Message::Close(frame) => {
                let code = frame.map_or(1005, |f| u16::from(f.code));
                live.error(format!("close_{code}"));
                return Next::Gone;
            }
            Message::Binary(_) => live.error("binary_frame"),
            _ => {}
        }
    }
}

async fn send_text(ws: &mut Ws, live: &Live, text: String) -> bool {
    let len = text.len() as u64;
    if ws.send(Message::text(text)).await.is_err() {
        live.error("connection_lost");
        return false;
    }
    live.frames_out.fetch_add(1, Ordering::Relaxed);
    live.bytes_out.fetch_add(len, Ordering::Relaxed);
    true
}

fn message_text(index: u64, number: u64, chars: usize) -> String {
    let mut text = format!("load {index}-{number} ");
    while text.len() < chars {
        text.push('a');
    }
    text.truncate(chars.max(1));
    text
}

async fn session(
    config: &RunConfig,
    target: &Target,
    live: &Live,
    (run_id, index, run_start_us): (Arc<str>, u64, u64),
    samples: &mut Samples,
    (hold_until, deadline): (Instant, Instant),
) {
    let per_wait = Duration::from_secs(config.message_timeout_s.max(1));
    let user = format!("{}-{index}", config.user_prefix);
    let token = match client::mint_token(&config.secret, &user, config.max_duration_s + 600) {
        Ok(token) => token,
        Err(_) => return live.error("token"),
    };
    let source = config
        .spread_sources
        .then(|| client::source_ip(config.source_offset + index));
    let begin = Instant::now();
    let until = (begin + per_wait).min(deadline);
    let mut ws = match timeout_at(until, client::connect(target, &token, source)).await {
        Ok(Ok(ws)) => ws,
        Ok(Err(error)) => {
            tracing::debug!(%error, "connect failed");
            return live.error(connect_error_kind(&error));
        }
        Err(_) => return live.error("connect_timeout"),
    };
    loop {
        match next_frame(&mut ws, live, until).await {
            Next::Gone => return,
            Next::Frame(ServerFrame::Ready { .. }) => break,
            Next::Frame(ServerFrame::Error { code, .. }) => live.error(code.as_str()),
            Next::Frame(_) => {}
        }
    }
    samples.connect.push(micros(begin.elapsed()));
    live.connected.fetch_add(1, Ordering::Relaxed);

    for number in 0..config.messages_per_session {
        if number > 0 && config.think_time_ms > 0 {
            tokio::time::sleep(Duration::from_millis(config.think_time_ms)).await;
        }
        // `send.id` is an idempotency key per user: a later run reusing the
        // same users must not get the earlier answers replayed.
        let id = format!("m-{run_id}-{index}-{number}");
        let mut frame = serde_json::json!({
            "type": "send",
            "id": id,
            "text": message_text(index, number, config.message_chars),
        });
        if let Some(bot) = &config.bot {
            frame["bot"] = bot.as_str().into();
        }
        let sent = (Instant::now(), now_micros());
        if !send_text(&mut ws, live, frame.to_string()).await {
            return;
        }
        live.messages_sent.fetch_add(1, Ordering::Relaxed);
        let until = (sent.0 + per_wait).min(deadline);
        if !answer(&mut ws, live, (&id, run_start_us), sent, until, samples).await {
            return;
        }
    }
    hold(&mut ws, live, hold_until.min(deadline)).await;
    let _ = timeout_at(deadline, ws.close(None)).await;
}

/// Keeps the session open (reading, so pings are answered) until `until`.
async fn hold(ws: &mut Ws, live: &Live, until: Instant) {
    while let Ok(message) = timeout_at(until, ws.next()).await {
        match message {
            Some(Ok(Message::Text(text))) => {
                live.frames_in.fetch_add(1, Ordering::Relaxed);
                live.bytes_in
                    .fetch_add(text.len() as u64, Ordering::Relaxed);
            }
            Some(Ok(Message::Close(frame))) => {
                let code = frame.map_or(1005, |f| u16::from(f.code));
                return live.error(format!("close_{code}"));
            }
            Some(Ok(_)) => {}
            Some(Err(_)) | None => return live.error("connection_lost"),
        }
    }
}

/// Reads one answer to `send` `id` up to its `done`; false when the session
/// cannot go on (connection gone or timed out).
async fn answer(
    ws: &mut Ws,
    live: &Live,
    (id, run_start_us): (&str, u64),
    (sent, sent_unix_us): (Instant, u64),
    until: Instant,
    samples: &mut Samples,
) -> bool {
    let mut stream: Option<skald_protocol::StreamId> = None;
    let mut last_delta: Option<Instant> = None;
    loop {
        let frame = match next_frame(ws, live, until).await {
            Next::Gone => return false,
            Next::Frame(frame) => frame,
        };
        let now = Instant::now();
        match frame {
            ServerFrame::Ack {
                id: acked,
                stream_id,
                ..
            } if acked == id => {
                samples.ack.push(micros(now - sent));
                stream = Some(stream_id);
            }
            ServerFrame::Delta {
                stream_id, text, ..
            } if stream.as_ref() == Some(&stream_id) => {
                let received = now_micros();
                if last_delta.is_none() {
                    if let Some(first) = parse_stamps(&text).next() {
                        samples.upstream.push(first.saturating_sub(sent_unix_us));
                    }
                }
                match last_delta {
                    None => samples.first_delta.push(micros(now - sent)),
                    Some(previous) => samples.gap.push(micros(now - previous)),
                }
                last_delta = Some(now);
                live.deltas.fetch_add(1, Ordering::Relaxed);
                for stamp in parse_stamps(&text) {
                    let added = received.saturating_sub(stamp);
                    samples.added.push(added);
                    let at_ms = received.saturating_sub(run_start_us) / 1000;
                    samples.timeline.push((
                        u32::try_from(at_ms).unwrap_or(u32::MAX),
                        u32::try_from(added).unwrap_or(u32::MAX),
                    ));
                    live.stamped.fetch_add(1, Ordering::Relaxed);
                }
            }
            ServerFrame::Done {
                stream_id,
                finish_reason,
                error,
                ..
            } if stream.as_ref() == Some(&stream_id) => {
                if finish_reason == FinishReason::Error {
                    live.error(error.map_or("error", |e| e.code.as_str()));
                } else if finish_reason != FinishReason::Stop {
                    live.error(format!("finish_{}", finish_reason.as_str()));
                }
                live.messages_done.fetch_add(1, Ordering::Relaxed);
                return true;
            }
            ServerFrame::Error {
                code, id: refused, ..
            } => {
                live.error(code.as_str());
                if refused.as_deref() == Some(id) {
                    return true;
                }
            }
            _ => {}
        }
    }
}

fn connect_error_kind(error: &anyhow::Error) -> String {
    use tokio_tungstenite::tungstenite::Error as WsError;
    for cause in error.chain() {
        if let Some(WsError::Http(response)) = cause.downcast_ref::<WsError>() {
            return format!("http_{}", response.status().as_u16());
        }
    }
    if error.chain().any(|c| c.to_string().contains("bind")) {
        "bind".into()
    } else {
        "connect".into()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn messages_have_the_requested_length() {
        assert_eq!(message_text(3, 4, 40).len(), 40);
        assert_eq!(message_text(3, 4, 4), "load");
        assert_eq!(message_text(3, 4, 0).len(), 1);
    }

    #[tokio::test]
    async fn refuses_bad_loads() {
        let remote = RunConfig::new("ws://192.0.2.1:80/v1/ws", "s");
        assert!(run(remote).await.is_err());
        let mut none = RunConfig::new("ws://127.0.0.1:9/v1/ws", "s");
        none.sessions = 0;
        assert!(run(none).await.is_err());
    }
}
