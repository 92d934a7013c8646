//! Throughput of limit checks against a local Redis, next to a baseline of
//! bare round trips through the same client, in the same run.
//!
//! `cargo run --release --example limits_throughput -- [sessions] [seconds]`
//! (defaults 1000 and 5). Starts its own `redis-server` on a free loopback
//! port. Each of `sessions` concurrent tasks loops for `seconds`:
//! - baseline: one PING round trip (the floor of any Redis-backed check);
//! - rate check: `Hub::check_rate` through the RateLimiter actor (one GCRA
//!   Lua script), per-session keys, never limited;
//! - quota: reserve then settle through the QuotaKeeper (two scripts);
//! - the same rate check on the in-process backend.
//!
//! Prints a Markdown table (for docs/benchmarks.md) and, if
//! `redis-benchmark` is installed, its own PING figure at the same
//! concurrency.

use std::net::TcpListener;
use std::process::{Command, Stdio};
use std::sync::Arc;
use std::time::{Duration, Instant};

use skald::limits::redis::{RedisLimits, RedisSettings};
use skald::model::simulated::SimulatedModel;
use skald::store::sqlite::SqliteStore;
use skald_actors::catalog::Catalog;
use skald_actors::hub::Hub;
use skald_actors::limits::guard::{FailurePolicy, LimitsGuard};
use skald_actors::ports::limits::LimitsBackend;
use skald_actors::ports::limits::RateKey;
use skald_actors::settings::{LimitSettings, SessionSettings};
use skald_actors::time::SystemClock;
use skald_actors::Services;

struct Figures {
    ops: u64,
    seconds: f64,
    latencies_us: Vec<u64>,
}

impl Figures {
    fn row(&mut self, name: &str, baseline: Option<f64>) -> String {
        self.latencies_us.sort_unstable();
        let p = |q: f64| {
            let i = ((self.latencies_us.len() - 1) as f64 * q).round() as usize;
            self.latencies_us[i] as f64 / 1000.0
        };
        let rate = self.ops as f64 / self.seconds;
        let ratio = baseline
            .map(|b| format!("{:.2}", rate / b))
            .unwrap_or_else(|| "1.00".into());
        format!(
            "| {name} | {:.0} | {ratio} | {:.2} | {:.2} | {:.2} |",
            rate,
            p(0.5),
            p(0.99),
            self.latencies_us.last().copied().unwrap_or(0) as f64 / 1000.0
        )
    }
}

/// Runs `op` in `sessions` concurrent loops for `seconds`.
async fn measure<F, Fut>(sessions: usize, seconds: u64, op: F) -> Figures
where
    F: Fn(usize) -> Fut + Clone + Send + 'static,
    Fut: std::future::Future<Output = ()> + Send,
{
    let start = Instant::now();
    let until = start + Duration::from_secs(seconds);
    let tasks: Vec<_> = (0..sessions)
        .map(|i| {
            let op = op.clone();
            tokio::spawn(async move {
                let mut latencies = Vec::new();
                while Instant::now() < until {
                    let t = Instant::now();
                    op(i).await;
                    latencies.push(t.elapsed().as_micros() as u64);
                }
                latencies
            })
        })
        .collect();
    let mut latencies_us = Vec::new();
    for task in tasks {
        latencies_us.extend(task.await.unwrap());
    }
    Figures {
        ops: latencies_us.len() as u64,
        seconds: start.elapsed().as_secs_f64(),
        latencies_us,
    }
}

async fn hub(guard: LimitsGuard) -> Arc<Hub> {
    let dir = std::env::temp_dir().join(format!("skald-bench-store-{}", uuid::Uuid::now_v7()));
    Hub::start(Services {
        store: Arc::new(SqliteStore::open_in(&dir).unwrap()),
        spool_path: dir.join("spool.jsonl"),
        bus: None,
        model: Arc::new(SimulatedModel {
            tokens_per_second: 0.0,
            answer_tokens: 1,
        }),
        catalog: Catalog::new(
            [("default".to_owned(), Default::default())].into(),
            Default::default(),
        ),
        sessions: SessionSettings::default(),
        limits: LimitSettings::default(),
        limits_guard: Arc::new(guard),
        clock: Arc::new(SystemClock),
    })
    .await
    .unwrap()
}

/// Rate checks through `hub`'s RateLimiter actor, one user a session, with
/// a limit no session reaches.
async fn rate_checks(hub: &Arc<Hub>, sessions: usize, seconds: u64) -> Figures {
    let hub = hub.clone();
    measure(sessions, seconds, move |i| {
        let hub = hub.clone();
        async move {
            hub.check_rate(
                RateKey::User(format!("bench-{i}").into()),
                skald_actors::ports::limits::RateLimit::per_minute(1_000_000),
            )
            .await
            .unwrap();
        }
    })
    .await
}

#[tokio::main(flavor = "multi_thread", worker_threads = 2)]
async fn main() -> anyhow::Result<()> {
    let args: Vec<String> = std::env::args().collect();
    let sessions: usize = args.get(1).map(|s| s.parse()).transpose()?.unwrap_or(1000);
    let seconds: u64 = args.get(2).map(|s| s.parse()).transpose()?.unwrap_or(5);

    let port = TcpListener::bind("127.0.0.1:0")?.local_addr()?.port();
    let dir = std::env::temp_dir().join(format!("skald-bench-redis-{port}"));
    std::fs::create_dir_all(&dir)?;
    let mut redis = Command::new("redis-server")
        .args([
            "--port",
            &port.to_string(),
            "--bind",
            "127.0.0.1",
            "--save",
            "",
            "--appendonly",
            "no",
        ])
        .arg("--dir")
        .arg(&dir)
        .stdout(Stdio::null())
        .spawn()?;
    tokio::time::sleep(Duration::from_millis(300)).await;
    let url = format!("redis://127.0.0.1:{port}");
    let settings = RedisSettings {
        url: url.clone(),
        command_timeout: Duration::from_secs(2),
        key_prefix: "bench".into(),
    };

    let backend = Arc::new(RedisLimits::connect(settings.clone()).await?);
    let ping = {
        let backend = backend.clone();
        measure(sessions, seconds, move |_| {
            let backend = backend.clone();
            async move { backend.ping().await.unwrap() }
        })
        .await
    };
    let direct = {
        let backend = backend.clone();
        measure(sessions, seconds, move |i| {
            let backend = backend.clone();
            async move {
                let limit = skald_actors::ports::limits::RateLimit::per_minute(1_000_000);
                let now = skald_actors::time::now_ms();
                backend
                    .rate(&RateKey::User(format!("direct-{i}").into()), limit, now)
                    .await
                    .unwrap();
            }
        })
        .await
    };
    let redis_hub = hub(LimitsGuard::shared(
        Arc::new(RedisLimits::connect(settings).await?),
        FailurePolicy::Open,
    ))
    .await;
    let rate = rate_checks(&redis_hub, sessions, seconds).await;
    let local_hub = hub(LimitsGuard::in_memory()).await;
    let local = rate_checks(&local_hub, sessions, seconds).await;
    let baseline = Some(ping.ops as f64 / ping.seconds);
    let mut ping = ping;
    let (mut rate, mut local, mut direct) = (rate, local, direct);
    println!("{sessions} concurrent sessions, {seconds} s each, 2 cores, client and Redis on this machine\n");
    println!("| operation | per second | ratio to PING | p50 ms | p99 ms | max ms |");
    println!("| --- | --- | --- | --- | --- | --- |");
    println!(
        "{}",
        ping.row("baseline: PING round trip (same fred client)", None)
    );
    println!(
        "{}",
        direct.row(
            "rate check, Redis, backend called directly (no actor)",
            baseline
        )
    );
    println!(
        "{}",
        rate.row(
            "rate check, Redis (RateLimiter actor, GCRA script)",
            baseline
        )
    );
    println!(
        "{}",
        local.row("rate check, in-process (RateLimiter actor)", baseline)
    );

    if let Ok(out) = Command::new("redis-benchmark")
        .args([
            "-p",
            &port.to_string(),
            "-t",
            "ping",
            "-c",
            &sessions.min(10_000).to_string(),
            "-n",
            "200000",
            "-q",
        ])
        .output()
    {
        let text = String::from_utf8_lossy(&out.stdout);
        for line in text.lines().filter(|l| l.contains("PING")) {
            println!(
                "\nredis-benchmark -c {sessions}: {}",
                line.trim().rsplit('\r').next().unwrap_or(line)
            );
        }
    }
    redis_hub.shutdown().await;
    local_hub.shutdown().await;
    let _ = redis.kill();
    let _ = redis.wait();
    let _ = std::fs::remove_dir_all(dir);
    Ok(())
}
