//! `openai`: load an OpenAI-compatible chat-completions endpoint with
//! streaming requests and measure what a client sees.
//!
//! Skald will serve `/v1/chat/completions` itself, and the field's most used
//! gateway (LiteLLM's proxy) serves the same API, so one load generator that
//! speaks that API compares them with the model (the mock upstream) reached
//! directly, in the same run. N workers each send `stream: true` requests
//! with `stream_options.include_usage`, one after the other, until the total
//! count is taken or the deadline passes; every request is also bounded by
//! its own timeout. Recorded: time to the response headers, time to the
//! first content delta (the figure users feel), gaps between content deltas,
//! the whole request, tokens delivered (the usage's `completion_tokens`, or
//! the content deltas counted when a stream has no usage), and errors by kind
//! (`http_<status>`, `connect`, `timeout`, `deadline`, `stream_error`,
//! `incomplete`). Given server process ids, it also reads their CPU time and
//! memory (with their descendants) before and after, for the CPU per token.

use std::collections::BTreeMap;
use std::fmt::Write as _;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;

use eventsource_stream::Eventsource;
use futures::StreamExt;
use serde::{Deserialize, Serialize};
use tokio::time::{timeout_at, Instant};

use crate::client::{Target, TargetError};
use crate::mock_upstream::now_micros;
use crate::openai_sse::{classify, StreamEvent};
use crate::procfs::{self, ProcError};
use crate::report::{errors_line, latency_table, ms, ratio, ErrorCounts};
use crate::stats::Summary;

/// Hard ceilings, whatever the flags say.
pub const MAX_CONCURRENCY: u64 = 10_000;
pub const MAX_REQUESTS: u64 = 1_000_000;
pub const MAX_DURATION_S: u64 = 3_600;

/// The figures in every report, in table order: (key, description).
pub const FIGURES: [(&str, &str); 4] = [
    ("time_to_headers", "request to response headers"),
    ("time_to_first_token", "request to first content token"),
    ("inter_token_gap", "gap between content deltas"),
    ("request", "whole request"),
];

/// The load one `openai` run applies.
#[derive(Clone, Debug, Serialize)]
pub struct OpenAiLoad {
    /// A name for the target in tables (`mock`, `litellm`, `skald`).
    pub label: String,
    /// The OpenAI base URL, e.g. `http://127.0.0.1:9090/v1` (loopback only).
    pub base_url: String,
    /// Sent as `Authorization: Bearer …` when set; never written to reports.
    #[serde(skip)]
    pub token: Option<String>,
    pub model: String,
    /// Streams in flight at once.
    pub concurrency: u64,
    /// Requests in all.
    pub requests: u64,
    /// The run stops after this many seconds, finished or not.
    pub max_duration_s: u64,
    /// Longest wait for one whole request.
    pub request_timeout_s: u64,
    /// Characters in each user message.
    pub message_chars: usize,
    /// `max_tokens` of each request (None: the upstream's answer length).
    pub max_tokens: Option<u32>,
    /// Server processes to measure (CPU time and memory, with descendants).
    pub server_pids: Vec<u32>,
}

impl OpenAiLoad {
    /// A small load against `base_url`: the defaults of the command line.
    pub fn new(base_url: impl Into<String>, model: impl Into<String>) -> OpenAiLoad {
        let base_url = base_url.into();
        OpenAiLoad {
            label: base_url.clone(),
            base_url,
            token: None,
            model: model.into(),
            concurrency: 10,
            requests: 100,
            max_duration_s: 60,
            request_timeout_s: 60,
            message_chars: 32,
            max_tokens: None,
            server_pids: Vec::new(),
        }
    }
}

/// Why a load could not run.
#[derive(Debug, thiserror::Error)]
pub enum OpenAiLoadError {
    #[error(transparent)]
    Target(#[from] TargetError),
    #[error("{0}")]
    Bounds(String),
    #[error("cannot build the HTTP client: {0}")]
    Client(#[source] http_client::Error),
    #[error("cannot measure server process {pid}: {source}")]
    Server {
        pid: u32,
        #[source]
        source: ProcError,
    },
}

/// What a server process (with its descendants) spent during the load.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
pub struct ServerCost {
    pub pid: u32,
    pub cpu_s: f64,
    /// CPU time per token delivered, µs (None when no token was).
    pub cpu_us_per_token: Option<f64>,
    pub rss_before_kib: u64,
    pub rss_after_kib: u64,
}

/// What one `openai` run measured.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
pub struct OpenAiReport {
    pub label: String,
    pub target: String,
    /// The load, as configured (no token).
    pub load: serde_json::Value,
    pub started_unix_ms: u64,
    pub elapsed_s: f64,
    pub requests_sent: u64,
    /// Requests whose stream reached `[DONE]`.
    pub requests_done: u64,
    pub content_deltas: u64,
    /// Thinking deltas (`reasoning_content` / `reasoning`).
    pub reasoning_deltas: u64,
    /// Tokens delivered: the usage's `completion_tokens`, else (no usage, or
    /// a stream cut by the timeout or the deadline) the content deltas.
    pub tokens: u64,
    /// Streams that ended without a usage chunk.
    pub streams_without_usage: u64,
    pub errors: BTreeMap<String, u64>,
    /// Latency figures by key (see [`FIGURES`]), microseconds.
    pub latency: BTreeMap<String, Summary>,
    pub servers: Vec<ServerCost>,
}

impl OpenAiReport {
    /// Tokens delivered per second of the run.
    pub fn tokens_per_second(&self) -> f64 {
        if self.elapsed_s > 0.0 {
            self.tokens as f64 / self.elapsed_s
        } else {
            0.0
        }
    }

    fn figure(&self, key: &str) -> Summary {
        self.latency.get(key).copied().unwrap_or_default()
    }

    /// The report as a human-readable table (milliseconds).
    pub fn table(&self) -> String {
        let mut out = String::new();
        let _ = writeln!(
            out,
            "{} ({}): {} requests sent, {} done, {} tokens ({:.0}/s), {} content deltas, {} without usage, {:.1} s",
            self.label,
            self.target,
            self.requests_sent,
            self.requests_done,
            self.tokens,
            self.tokens_per_second(),
            self.content_deltas,
            self.streams_without_usage,
            self.elapsed_s
        );
        for server in &self.servers {
            let per_token = server
                .cpu_us_per_token
                .map_or("-".to_owned(), |us| format!("{us:.1}"));
            let _ = writeln!(
                out,
                "server {}: {:.2} CPU s, {} µs CPU per token, RSS {} -> {} KiB",
                server.pid, server.cpu_s, per_token, server.rss_before_kib, server.rss_after_kib
            );
        }
        latency_table(&mut out, &FIGURES, &self.latency);
        errors_line(&mut out, &self.errors);
        out
    }
}

/// Several reports of the same load side by side: p50, p90 and p99 of the
/// time to first token and of the gaps, tokens per second, errors, server CPU
/// per token and memory, each with its ratio to the first report.
pub fn comparison_table(reports: &[OpenAiReport]) -> String {
    let mut out = String::new();
    let Some(first) = reports.first() else {
        return out;
    };
    let mut header = format!("| {:<34} |", "figure");
    let mut rule = format!("|{:-<36}|", "");
    for (index, report) in reports.iter().enumerate() {
        let _ = write!(header, " {:>12} |", report.label);
        let _ = write!(rule, "{:->14}|", "");
        if index > 0 {
            let _ = write!(header, " {:>7} |", "ratio");
            let _ = write!(rule, "{:->9}|", "");
        }
    }
    let _ = writeln!(out, "{header}\n{rule}");
    let mut row = |name: String,
                   value: &dyn Fn(&OpenAiReport) -> Option<f64>,
                   shown: &dyn Fn(f64) -> String| {
        if reports.iter().all(|report| value(report).is_none()) {
            return;
        }
        let mut line = format!("| {name:<34} |");
        let base = value(first);
        for (index, report) in reports.iter().enumerate() {
            let v = value(report);
            let _ = write!(line, " {:>12} |", v.map_or("-".to_owned(), shown));
            if index > 0 {
                let r = match (v, base) {
                    (Some(v), Some(b)) => ratio(v, b),
                    _ => "-".to_owned(),
                };
                let _ = write!(line, " {r:>7} |");
            }
        }
        let _ = writeln!(out, "{line}");
    };
    let millis = |us: f64| ms(us as u64);
    for (key, label) in [
        ("time_to_first_token", "first token"),
        ("inter_token_gap", "gap between deltas"),
    ] {
        for (name, pick) in [
            ("p50", (|s: Summary| s.p50_us) as fn(Summary) -> u64),
            ("p90", |s: Summary| s.p90_us),
            ("p99", |s: Summary| s.p99_us),
        ] {
            row(
                format!("{label}, {name} (ms)"),
                &|r: &OpenAiReport| {
                    let s = r.figure(key);
                    (s.count > 0).then(|| pick(s) as f64)
                },
                &millis,
            );
        }
    }
    row(
        "tokens delivered per second".into(),
        &|r: &OpenAiReport| Some(r.tokens_per_second()),
        &|v| format!("{v:.0}"),
    );
    row(
        "requests done".into(),
        &|r: &OpenAiReport| Some(r.requests_done as f64),
        &|v| format!("{v:.0}"),
    );
    row(
        "errors".into(),
        &|r: &OpenAiReport| Some(r.errors.values().sum::<u64>() as f64),
        &|v| format!("{v:.0}"),
    );
    let server = |r: &OpenAiReport| r.servers.first().cloned();
    row(
        "server CPU per token (µs)".into(),
        &|r: &OpenAiReport| server(r).and_then(|s| s.cpu_us_per_token),
        &|v| format!("{v:.1}"),
    );
    row(
        "server RSS after (MiB)".into(),
        &|r: &OpenAiReport| server(r).map(|s| s.rss_after_kib as f64 / 1024.0),
        &|v| format!("{v:.1}"),
    );
    let summary: Vec<String> = reports
        .iter()
        .map(|r| {
            let mut errors = String::new();
            errors_line(&mut errors, &r.errors);
            format!("{}: {}", r.label, errors.trim_end())
        })
        .collect();
    let _ = writeln!(out, "{}", summary.join("; "));
    out
}

/// Counters and samples shared by the workers.
#[derive(Default)]
struct Shared {
    next: AtomicU64,
    sent: AtomicU64,
    done: AtomicU64,
    content_deltas: AtomicU64,
    reasoning_deltas: AtomicU64,
    tokens: AtomicU64,
    without_usage: AtomicU64,
    errors: ErrorCounts,
}

impl Shared {
    fn error(&self, kind: impl Into<String>) {
        self.errors.add(kind);
    }
}

/// One worker's samples, µs.
#[derive(Default)]
struct Samples {
    headers: Vec<u64>,
    first_token: Vec<u64>,
    gap: Vec<u64>,
    request: Vec<u64>,
}

fn micros(d: Duration) -> u64 {
    u64::try_from(d.as_micros()).unwrap_or(u64::MAX)
}

fn check(load: &OpenAiLoad) -> Result<(), OpenAiLoadError> {
    let bounds = |message: &str| Err(OpenAiLoadError::Bounds(message.to_owned()));
    if load.concurrency == 0 || load.concurrency > MAX_CONCURRENCY {
        return bounds(&format!("--concurrency must be 1 to {MAX_CONCURRENCY}"));
    }
    if load.requests == 0 || load.requests > MAX_REQUESTS {
        return bounds(&format!("--requests must be 1 to {MAX_REQUESTS}"));
    }
    if load.max_duration_s == 0 || load.max_duration_s > MAX_DURATION_S {
        return bounds(&format!("--max-duration must be 1 to {MAX_DURATION_S} s"));
    }
    if load.request_timeout_s == 0 {
        return bounds("--request-timeout must be at least 1 s");
    }
    Ok(())
}

/// Runs the load and returns its report.
pub async fn run(load: OpenAiLoad) -> Result<OpenAiReport, OpenAiLoadError> {
    Target::parse_http(&load.base_url)?;
    check(&load)?;
    let http = http_client::Client::builder()
        .tcp_nodelay(true)
        .pool_max_idle_per_host(usize::MAX)
        .build()
        .map_err(OpenAiLoadError::Client)?;
    let server =
        |pid: u32| procfs::read_tree(pid).map_err(|source| OpenAiLoadError::Server { pid, source });
    let before: Vec<procfs::Reading> = load
        .server_pids
        .iter()
        .map(|&p| server(p))
        .collect::<Result<_, _>>()?;

    let load = Arc::new(load);
    let shared = Arc::new(Shared::default());
    let started = Instant::now();
    let started_unix_ms = now_micros() / 1000;
    let deadline = started + Duration::from_secs(load.max_duration_s);
    let url = format!("{}/chat/completions", load.base_url.trim_end_matches('/'));
    let workers = load.concurrency.min(load.requests);
    let mut tasks = Vec::new();
    for worker in 0..workers {
        let (load, shared, http, url) = (load.clone(), shared.clone(), http.clone(), url.clone());
        tasks.push(tokio::spawn(async move {
            let mut samples = Samples::default();
            loop {
                let number = shared.next.fetch_add(1, Ordering::Relaxed);
                if number >= load.requests || Instant::now() >= deadline {
                    return samples;
                }
                let until =
                    (Instant::now() + Duration::from_secs(load.request_timeout_s)).min(deadline);
                let body = request_body(&load, worker, number);
                let one = one_request(&http, &url, &load, body, &shared, &mut samples);
                if timeout_at(until, one).await.is_err() {
                    shared.error(if until >= deadline {
                        "deadline"
                    } else {
                        "timeout"
                    });
                }
            }
        }));
    }
    let mut samples = Samples::default();
    for task in tasks {
        if let Ok(one) = task.await {
            samples.headers.extend(one.headers);
            samples.first_token.extend(one.first_token);
            samples.gap.extend(one.gap);
            samples.request.extend(one.request);
        }
    }
    let elapsed_s = started.elapsed().as_secs_f64();
    let get = |counter: &AtomicU64| counter.load(Ordering::Relaxed);
    let tokens = get(&shared.tokens);
    let mut servers = Vec::new();
    for (&pid, before) in load.server_pids.iter().zip(&before) {
        let after = server(pid)?;
        let cpu_s = (after.cpu_s - before.cpu_s).max(0.0);
        servers.push(ServerCost {
            pid,
            cpu_s,
            cpu_us_per_token: (tokens > 0).then(|| cpu_s * 1e6 / tokens as f64),
            rss_before_kib: before.rss_kib,
            rss_after_kib: after.rss_kib,
        });
    }
    let mut latency = BTreeMap::new();
    for (key, values) in [
        ("time_to_headers", &samples.headers),
        ("time_to_first_token", &samples.first_token),
        ("inter_token_gap", &samples.gap),
        ("request", &samples.request),
    ] {
        latency.insert(key.to_owned(), Summary::of(values));
    }
    let errors = shared.errors.by_kind();
    Ok(OpenAiReport {
        label: load.label.clone(),
        target: load.base_url.clone(),
        load: serde_json::to_value(&*load).unwrap_or_default(),
        started_unix_ms,
        elapsed_s,
        requests_sent: get(&shared.sent),
        requests_done: get(&shared.done),
        content_deltas: get(&shared.content_deltas),
        reasoning_deltas: get(&shared.reasoning_deltas),
        tokens,
        streams_without_usage: get(&shared.without_usage),
        errors,
        latency,
        servers,
    })
}

/// The body of request `number` (sent by `worker`): distinct messages, so a
/// cache in between cannot answer for the upstream.
fn request_body(load: &OpenAiLoad, worker: u64, number: u64) -> String {
    let mut message = format!("load {worker}-{number} ");
    while message.len() < load.message_chars {
        message.push('a');
    }
    message.truncate(load.message_chars.max(1));
    let mut body = serde_json::json!({
        "model": load.model,
        "stream": true,
        "stream_options": { "include_usage": true },
        "messages": [{ "role": "user", "content": message }],
    });
    if let Some(max) = load.max_tokens {
        body["max_tokens"] = max.into();
    }
    body.to_string()
}

/// One streamed request, recorded into `samples` and `shared`.
async fn one_request(
    http: &http_client::Client,
    url: &str,
    load: &OpenAiLoad,
    body: String,
    shared: &Shared,
    samples: &mut Samples,
) {
    let mut request = http
        .post(url)
        .header("content-type", "application/json")
        .header("accept", "text/event-stream")
        .body(body);
    if let Some(token) = &load.token {
        request = request.bearer_auth(token);
    }
    let sent = Instant::now();
    shared.sent.fetch_add(1, Ordering::Relaxed);
    let response = match request.send().await {
        Ok(response) => response,
        Err(error) => {
            tracing::debug!(%error, "openai load: request failed");
            return shared.error(if error.is_connect() {
                "connect"
            } else {
                "request"
            });
        }
    };
    samples.headers.push(micros(sent.elapsed()));
    let status = response.status();
    if !status.is_success() {
        // Read the error body so the connection can be reused.
        let _ = response.bytes().await;
        return shared.error(format!("http_{}", status.as_u16()));
    }
    let mut events = response.bytes_stream().eventsource();
    let (mut last_content, mut deltas, mut usage) = (None::<Instant>, 0u64, None);
    let outcome = loop {
        let event = match events.next().await {
            None => break Err("incomplete"),
            Some(Err(_)) => break Err("incomplete"),
            Some(Ok(event)) => event,
        };
        match classify(&event) {
            StreamEvent::Chunk {
                content,
                reasoning,
                completion_tokens,
            } => {
                let now = Instant::now();
                if !content.is_empty() {
                    match last_content {
                        None => samples.first_token.push(micros(now - sent)),
                        Some(previous) => samples.gap.push(micros(now - previous)),
                    }
                    last_content = Some(now);
                    deltas += 1;
                    // Counted as they arrive: a stream cut by the timeout or
                    // the deadline is dropped here and never reaches the end.
                    shared.content_deltas.fetch_add(1, Ordering::Relaxed);
                    shared.tokens.fetch_add(1, Ordering::Relaxed);
                }
                if reasoning {
                    shared.reasoning_deltas.fetch_add(1, Ordering::Relaxed);
                }
                usage = completion_tokens.or(usage);
            }
            StreamEvent::Done => break Ok(()),
            StreamEvent::Error(message) => {
                tracing::debug!(%message, "openai load: error in the stream");
                break Err("stream_error");
            }
            StreamEvent::Other => {}
        }
    };
    match usage {
        // The usage is the upstream's own count (thinking included): it
        // replaces the deltas counted so far.
        Some(usage) if usage >= deltas => {
            shared.tokens.fetch_add(usage - deltas, Ordering::Relaxed);
        }
        Some(usage) => {
            shared.tokens.fetch_sub(deltas - usage, Ordering::Relaxed);
        }
        None => {
            shared.without_usage.fetch_add(1, Ordering::Relaxed);
        }
    }
    match outcome {
        Ok(()) => {
            shared.done.fetch_add(1, Ordering::Relaxed);
            samples.request.push(micros(sent.elapsed()));
        }
        Err(kind) => shared.error(kind),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn requests_stream_with_usage_and_distinct_messages() {
        let mut load = OpenAiLoad::new("http://127.0.0.1:1/v1", "m");
        load.max_tokens = Some(7);
        load.message_chars = 20;
        let body: serde_json::Value = serde_json::from_str(&request_body(&load, 2, 9)).unwrap();
        assert_eq!(body["stream"], true);
        assert_eq!(body["stream_options"]["include_usage"], true);
        assert_eq!(body["max_tokens"], 7);
        assert_eq!(body["model"], "m");
        let message = body["messages"][0]["content"].as_str().unwrap();
        assert_eq!(message.len(), 20);
        assert!(message.starts_with("load 2-9 "));
        assert_ne!(request_body(&load, 2, 9), request_body(&load, 2, 10));
    }

    #[tokio::test]
    async fn refuses_remote_targets_and_unbounded_loads() {
        let remote = OpenAiLoad::new("http://192.0.2.1/v1", "m");
        assert!(matches!(
            run(remote).await,
            Err(OpenAiLoadError::Target(TargetError::NotLoopback(_)))
        ));
        let mut endless = OpenAiLoad::new("http://127.0.0.1:9/v1", "m");
        endless.max_duration_s = MAX_DURATION_S + 1;
        assert!(matches!(
            run(endless).await,
            Err(OpenAiLoadError::Bounds(_))
        ));
        let mut none = OpenAiLoad::new("http://127.0.0.1:9/v1", "m");
        none.requests = 0;
        assert!(matches!(run(none).await, Err(OpenAiLoadError::Bounds(_))));
    }

    fn report(label: &str, p50_us: u64, tokens: u64, cpu: Option<f64>) -> OpenAiReport {
        let mut report = OpenAiReport {
            label: label.into(),
            elapsed_s: 2.0,
            tokens,
            requests_done: 4,
            ..OpenAiReport::default()
        };
        report.latency.insert(
            "time_to_first_token".into(),
            Summary::of(&[p50_us, p50_us, p50_us]),
        );
        report.servers = cpu
            .map(|us| ServerCost {
                pid: 1,
                cpu_s: 1.0,
                cpu_us_per_token: Some(us),
                rss_before_kib: 1024,
                rss_after_kib: 2048,
            })
            .into_iter()
            .collect();
        report
    }

    #[test]
    fn comparison_puts_targets_side_by_side_with_ratios() {
        let mut litellm = report("litellm", 1_500, 100, Some(2_000.0));
        litellm.errors.insert("http_429".into(), 2);
        let table = comparison_table(&[report("mock", 1_000, 400, Some(10.0)), litellm]);
        let line = |start: &str| {
            table
                .lines()
                .find(|l| l.contains(start))
                .unwrap_or_else(|| panic!("no {start} in {table}"))
                .to_owned()
        };
        assert!(line("figure").contains("mock") && line("figure").contains("litellm"));
        let first = line("first token, p50");
        assert!(
            first.contains("1.000") && first.contains("1.500") && first.contains("1.50"),
            "{first}"
        );
        let rate = line("tokens delivered per second");
        assert!(
            rate.contains("200") && rate.contains("50") && rate.contains("0.25"),
            "{rate}"
        );
        let cpu = line("server CPU per token");
        assert!(
            cpu.contains("10.0") && cpu.contains("2000.0") && cpu.contains("200.00"),
            "{cpu}"
        );
        assert!(line("server RSS").contains("2.0"));
        assert!(line("errors").contains('2'));
        assert!(table.contains("litellm: errors: http_429=2"), "{table}");
        assert!(table.contains("mock: errors: none"), "{table}");
        assert!(
            !table.contains("gap between deltas"),
            "unmeasured rows are left out: {table}"
        );
    }

    #[test]
    fn report_json_round_trips() {
        let report = report("mock", 1_000, 400, Some(10.0));
        let json = serde_json::to_value(&report).unwrap();
        assert_eq!(json["latency"]["time_to_first_token"]["p50_us"], 1_000);
        assert_eq!(json["servers"][0]["cpu_us_per_token"], 10.0);
        let back: OpenAiReport = serde_json::from_value(json).unwrap();
        assert_eq!(back, report);
        assert!(report.table().contains("request to first content token"));
    }
}
