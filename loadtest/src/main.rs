//! The `skald-loadtest` command line.
//!
//! One binary with a subcommand per tool, so the mock upstream (and, later,
//! the load generators `run`, `idle` and `baseline-relay`) can be started from
//! scripts and compose files with the same flags everywhere.

use std::net::SocketAddr;

use anyhow::Context;
use clap::{Args, Parser, Subcommand};
use skald_loadtest::mock_upstream::{self, MockConfig};
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
    /// Serve the OpenAI-compatible mock upstream until Ctrl-C.
    MockUpstream(MockUpstreamArgs),
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
    }
}

async fn mock_upstream(args: MockUpstreamArgs) -> anyhow::Result<()> {
    let listener = TcpListener::bind(args.listen)
        .await
        .with_context(|| format!("cannot listen on {}", args.listen))?;
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
