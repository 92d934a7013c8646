//! The `skald-loadtest` command line.
//!
//! One binary with a subcommand per tool, so the mock upstream, the load
//! generators `run`, `idle` and `openai`, and `baseline-relay` can be started
//! from scripts and compose files with the same flags everywhere. See
//! docs/loadtest.md.

use std::net::SocketAddr;

use anyhow::Context;
use clap::{Args, Parser, Subcommand};
use skald_loadtest::idle::{self, IdleConfig};
use skald_loadtest::mock_upstream::{self, MockConfig};
use skald_loadtest::openai::{self, OpenAiLoad};
use skald_loadtest::plot;
use skald_loadtest::relay::{self, RelayConfig};
use skald_loadtest::report::comparison_table;
use skald_loadtest::resume::{self, ResumeConfig};
use skald_loadtest::run::{self, RunConfig};
use tokio::net::TcpListener;

#[derive(Parser)]
#[command(
    name = "skald-loadtest",
    version,
    about = "Skald's load-test harness and mock upstream"
)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Serve the OpenAI-compatible mock upstream until Ctrl-C (model
    /// `mock-stamped`: every token carries the µs time it was sent).
    MockUpstream(MockUpstreamArgs),
    /// Drive N streaming sessions against a server and report latencies.
    Run(RunArgs),
    /// Hold N idle authenticated sessions; report the server's memory per session.
    Idle(IdleArgs),
    /// Serve the bare baseline relay (no actors, auth, limits or storage).
    BaselineRelay(RelayArgs),
    /// Stream chat completions from an OpenAI-compatible endpoint (loopback
    /// only) and report time to first token, tokens/s and errors.
    Openai(OpenAiArgs),
    /// Print `openai` JSON reports side by side, with ratios to the first.
    OpenaiCompare(OpenAiCompareArgs),
    /// Drop from one instance mid-answer, resume on another, and report the
    /// time from `resume` to the first replayed delta.
    Resume(ResumeArgs),
}

#[derive(Args)]
struct ResumeArgs {
    /// The instance that runs the answers (loopback only).
    #[arg(long)]
    from: String,
    /// The instance the client resumes on (loopback only).
    #[arg(long)]
    to: String,
    /// HS256 secret the tokens are signed with (the servers' SKALD_JWT_SECRET).
    #[arg(long, env = "SKALD_LOADTEST_SECRET", default_value = "")]
    secret: String,
    #[arg(long, default_value_t = 100)]
    rounds: u64,
    /// Deltas read before the drop.
    #[arg(long, default_value_t = 10)]
    after: u64,
    /// Of those, how many the resume asks again (0: the first delta is the
    /// model's next token).
    #[arg(long, default_value_t = 5)]
    replay: u64,
}

#[derive(Args)]
struct OpenAiArgs {
    /// OpenAI base URL (loopback only), e.g. http://127.0.0.1:9090/v1.
    #[arg(long, default_value = "http://127.0.0.1:9090/v1")]
    url: String,
    /// Bearer token (none when empty).
    #[arg(
        long,
        env = "SKALD_LOADTEST_OPENAI_TOKEN",
        default_value = "",
        hide_env_values = true
    )]
    token: String,
    #[arg(long, default_value = "default")]
    model: String,
    /// The target's name in tables (default: the URL).
    #[arg(long)]
    label: Option<String>,
    /// Streams in flight at once.
    #[arg(long, default_value_t = 10)]
    concurrency: u64,
    /// Requests in all.
    #[arg(long, default_value_t = 100)]
    requests: u64,
    /// The run stops after this many seconds, finished or not.
    #[arg(long, default_value_t = 60)]
    max_duration: u64,
    /// Longest wait for one whole request, s.
    #[arg(long, default_value_t = 60)]
    request_timeout: u64,
    #[arg(long, default_value_t = 32)]
    message_chars: usize,
    /// `max_tokens` of every request.
    #[arg(long)]
    max_tokens: Option<u32>,
    /// A server process to measure (CPU time and memory, with its
    /// descendants); may be repeated.
    #[arg(long)]
    server_pid: Vec<u32>,
    /// Write the JSON report here.
    #[arg(long, default_value = "openai-report.json")]
    report: std::path::PathBuf,
}

#[derive(Args)]
struct OpenAiCompareArgs {
    /// `openai` reports of the same load; ratios are to the first.
    #[arg(required = true)]
    reports: Vec<std::path::PathBuf>,
}

#[derive(Args)]
struct RunArgs {
    /// Server WebSocket URL (loopback only).
    #[arg(long, default_value = "ws://127.0.0.1:8080/v1/ws")]
    url: String,
    /// Also load this URL (normally the baseline relay) with the same load,
    /// first, and print target / baseline ratios.
    #[arg(long)]
    baseline_url: Option<String>,
    /// HS256 secret the tokens are signed with (the server's SKALD_JWT_SECRET).
    #[arg(long, env = "SKALD_LOADTEST_SECRET", default_value = "")]
    secret: String,
    #[arg(long, default_value_t = 10)]
    sessions: u64,
    /// New sessions per second (0: all at once).
    #[arg(long, default_value_t = 0.0, value_parser = non_negative)]
    ramp: f64,
    /// Messages each session sends, one after the other's `done`.
    #[arg(long, default_value_t = 1)]
    messages: u64,
    /// Pause between an answer's `done` and the next `send`, ms.
    #[arg(long, default_value_t = 0)]
    think_ms: u64,
    /// Keep every session open until this many seconds after the run
    /// started (with `--messages 0` and `--ramp`: a connection storm).
    #[arg(long, default_value_t = 0)]
    hold: u64,
    /// Characters per message.
    #[arg(long, default_value_t = 32)]
    message_chars: usize,
    /// `send.bot` (default: the server's default bot).
    #[arg(long)]
    bot: Option<String>,
    /// Longest wait for a connect or one answer, s.
    #[arg(long, default_value_t = 60)]
    message_timeout: u64,
    /// The run stops after this many seconds, finished or not.
    #[arg(long, default_value_t = 300)]
    max_duration: u64,
    #[arg(long, default_value = "load")]
    user_prefix: String,
    /// Connect every session from 127.0.0.1 instead of spreading over 127.0.0.0/8.
    #[arg(long)]
    no_spread: bool,
    /// Write the JSON report here.
    #[arg(long, default_value = "loadtest-report.json")]
    report: std::path::PathBuf,
    /// No progress bar.
    #[arg(long)]
    quiet: bool,
    /// Draw no SVG plots (by default, with stamped tokens: REPORT.latency-over-time.svg
    /// and REPORT.latency-histogram.svg, and the same with `.baseline` for the baseline).
    #[arg(long)]
    no_plots: bool,
}

#[derive(Args)]
struct IdleArgs {
    #[arg(long, default_value = "ws://127.0.0.1:8080/v1/ws")]
    url: String,
    #[arg(long, env = "SKALD_LOADTEST_SECRET", default_value = "")]
    secret: String,
    /// Sessions in total (per process at most the open-files limit minus 64).
    #[arg(long, default_value_t = 1000)]
    sessions: u64,
    /// Client processes to spread the sessions over.
    #[arg(long, default_value_t = 1)]
    processes: u32,
    /// Connects in flight at once.
    #[arg(long, default_value_t = 200)]
    concurrency: usize,
    /// Seconds to hold the sessions once open (Ctrl-C ends sooner).
    #[arg(long, default_value_t = 10)]
    hold: u64,
    /// Seconds between the last open and the memory reading.
    #[arg(long, default_value_t = 2)]
    settle: u64,
    /// The server's process id, to read its VmRSS before and after.
    #[arg(long)]
    server_pid: Option<u32>,
    #[arg(long, default_value_t = 0)]
    source_offset: u64,
    #[arg(long, default_value = "idle")]
    user_prefix: String,
    /// Internal: run as one of the parent's child processes.
    #[arg(long, hide = true)]
    child: bool,
}

#[derive(Args)]
struct RelayArgs {
    #[arg(long, default_value = "127.0.0.1:9100")]
    listen: SocketAddr,
    /// OpenAI base URL of the upstream (the mock).
    #[arg(long, default_value = "http://127.0.0.1:9090/v1")]
    upstream_url: String,
    #[arg(long, default_value = "mock-stamped")]
    model: String,
}

#[derive(Args)]
struct MockUpstreamArgs {
    /// Address to listen on.
    #[arg(long, default_value = "127.0.0.1:9090")]
    listen: SocketAddr,
    /// Content tokens per second per stream (0 = as fast as possible).
    #[arg(long, default_value_t = 50.0, value_parser = non_negative)]
    tokens_per_second: f64,
    /// Tokens in every answer (before the request's max tokens).
    #[arg(long, default_value_t = 120)]
    answer_tokens: u32,
}

fn non_negative(value: &str) -> Result<f64, String> {
    match value.parse::<f64>() {
        Ok(rate) if rate.is_finite() && rate >= 0.0 => Ok(rate),
        _ => Err(format!("`{value}` is not a non-negative number")),
    }
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_default_env()
                .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info")),
        )
        .init();
    match Cli::parse().command {
        Command::MockUpstream(args) => mock_upstream(args).await,
        Command::Run(args) => run_command(args).await,
        Command::Idle(args) => idle_command(args).await,
        Command::BaselineRelay(args) => relay_command(args).await,
        Command::Openai(args) => openai_command(args).await,
        Command::OpenaiCompare(args) => openai_compare(&args),
        Command::Resume(args) => {
            let report = resume::resume(ResumeConfig {
                from: args.from,
                to: args.to,
                secret: args.secret,
                rounds: args.rounds,
                after: args.after,
                replay: args.replay,
            })
            .await?;
            println!("{}", serde_json::to_string_pretty(&report)?);
            Ok(())
        }
    }
}

async fn openai_command(args: OpenAiArgs) -> anyhow::Result<()> {
    let load = OpenAiLoad {
        label: args.label.unwrap_or_else(|| args.url.clone()),
        base_url: args.url,
        token: (!args.token.is_empty()).then_some(args.token),
        model: args.model,
        concurrency: args.concurrency,
        requests: args.requests,
        max_duration_s: args.max_duration,
        request_timeout_s: args.request_timeout,
        message_chars: args.message_chars,
        max_tokens: args.max_tokens,
        server_pids: args.server_pid,
    };
    eprintln!(
        "openai: {} x {} streams of {} against {}",
        load.requests, load.concurrency, load.model, load.base_url
    );
    let report = openai::run(load).await?;
    println!("{}", report.table());
    std::fs::write(&args.report, serde_json::to_string_pretty(&report)?)
        .with_context(|| format!("cannot write {}", args.report.display()))?;
    eprintln!("report written to {}", args.report.display());
    Ok(())
}

fn openai_compare(args: &OpenAiCompareArgs) -> anyhow::Result<()> {
    let mut reports = Vec::new();
    for path in &args.reports {
        let text = std::fs::read_to_string(path)
            .with_context(|| format!("cannot read {}", path.display()))?;
        let report: openai::OpenAiReport = serde_json::from_str(&text)
            .with_context(|| format!("{} is not an openai report", path.display()))?;
        reports.push(report);
    }
    print!("{}", openai::comparison_table(&reports));
    Ok(())
}

async fn run_command(args: RunArgs) -> anyhow::Result<()> {
    let load = |url: &str| RunConfig {
        url: url.to_owned(),
        secret: args.secret.clone(),
        sessions: args.sessions,
        ramp_per_second: args.ramp,
        messages_per_session: args.messages,
        think_time_ms: args.think_ms,
        hold_s: args.hold,
        message_chars: args.message_chars,
        bot: args.bot.clone(),
        message_timeout_s: args.message_timeout,
        max_duration_s: args.max_duration,
        user_prefix: args.user_prefix.clone(),
        spread_sources: !args.no_spread,
        source_offset: 0,
        progress: !args.quiet,
    };
    let baseline = match &args.baseline_url {
        Some(url) => {
            eprintln!("baseline: {url}");
            let report = run::run(load(url)).await?;
            println!("{}", report.table());
            Some(report)
        }
        None => None,
    };
    eprintln!("target: {}", args.url);
    let report = run::run(load(&args.url)).await?;
    println!("{}", report.table());
    let mut json = serde_json::json!({ "target": report });
    let stem = args.report.with_extension("");
    let mut plots = vec![(&report, stem.clone())];
    if let Some(baseline) = &baseline {
        println!("{}", comparison_table(&report, baseline));
        json["baseline"] = serde_json::to_value(baseline)?;
        plots.push((baseline, stem.with_extension("baseline")));
    }
    if !args.no_plots {
        for (report, stem) in plots {
            match plot::write(report, &stem) {
                Ok(paths) => {
                    for path in paths {
                        eprintln!("plot written to {}", path.display());
                    }
                }
                Err(error) => eprintln!("no plots for {}: {error:#}", report.target),
            }
        }
    }
    std::fs::write(&args.report, serde_json::to_string_pretty(&json)?)
        .with_context(|| format!("cannot write {}", args.report.display()))?;
    eprintln!("report written to {}", args.report.display());
    Ok(())
}

async fn idle_command(args: IdleArgs) -> anyhow::Result<()> {
    let config = IdleConfig {
        url: args.url,
        secret: args.secret,
        sessions: args.sessions,
        concurrency: args.concurrency,
        hold_s: args.hold,
        settle_s: args.settle,
        server_pid: args.server_pid,
        processes: args.processes,
        source_offset: args.source_offset,
        user_prefix: args.user_prefix,
    };
    if args.child {
        return idle::child(config).await;
    }
    let report = idle::idle(config).await?;
    println!("{}", serde_json::to_string_pretty(&report)?);
    Ok(())
}

/// A listener with Skald's default backlog (4 096): tokio's `bind` queues
/// only 128 connections, and a burst above that waits a one-second SYN
/// retransmit, which would make the baseline look worse than it is.
fn bind(address: std::net::SocketAddr) -> anyhow::Result<TcpListener> {
    let listen = || {
        let socket = match address {
            std::net::SocketAddr::V4(_) => tokio::net::TcpSocket::new_v4()?,
            std::net::SocketAddr::V6(_) => tokio::net::TcpSocket::new_v6()?,
        };
        socket.set_reuseaddr(true)?;
        socket.bind(address)?;
        socket.listen(4096)
    };
    listen().with_context(|| format!("cannot listen on {address}"))
}

async fn relay_command(args: RelayArgs) -> anyhow::Result<()> {
    let listener = bind(args.listen)?;
    tracing::info!(
        upstream = %args.upstream_url,
        model = %args.model,
        "baseline relay listening on ws://{}/v1/ws",
        listener.local_addr()?
    );
    let config = RelayConfig {
        upstream_url: args.upstream_url,
        model: args.model,
    };
    relay::serve(listener, config, async {
        let _ = tokio::signal::ctrl_c().await;
    })
    .await
}

async fn mock_upstream(args: MockUpstreamArgs) -> anyhow::Result<()> {
    let listener = bind(args.listen)?;
    let addr = listener.local_addr()?;
    let config = MockConfig {
        tokens_per_second: args.tokens_per_second,
        answer_tokens: args.answer_tokens,
    };
    tracing::info!(?config, "mock upstream listening on http://{addr}/v1");
    let ctrl_c = async {
        let _ = tokio::signal::ctrl_c().await;
    };
    mock_upstream::serve(listener, config, ctrl_c)
        .await
        .context("mock upstream failed")?;
    tracing::info!("mock upstream stopped");
    Ok(())
}
