//! The Redis limits backend against real `redis-server` processes: the
//! contract every backend passes, two instances sharing one Redis, Redis
//! killed, paused and restarted under a live client, and retried settles.
//! Every wait is bounded; nothing asserts a tight timing.

use std::future::Future;
use std::time::{Duration, Instant};

use crate::common::redis_server::RedisServer;
use fred::interfaces::{ClientLike, KeysInterface};
use skald::limits::redis::{connect, RedisLimits, RedisSettings, RedisSetupError};
use skald_actors::ports::limits::{
    LimitsBackend, LimitsError, QuotaLimits, RateDecision, RateKey, RateLimit, Reservation,
    ReserveDecision, Settle, SlotKey,
};
use skald_actors::testkit::limits::claim;
use skald_actors::time::Month;
use skald_actors::UserId;

const T0: i64 = 1_767_225_600_000; // 2026-01-01T00:00:00Z
const LEASE: u64 = 600_000;
/// The most one operation may take while Redis is down (generous: the
/// configured command timeout is 300 ms).
const BOUND: Duration = Duration::from_secs(5);
/// How long a client has to find a restarted Redis again.
const RECOVERY: Duration = Duration::from_secs(15);

fn settings(url: String) -> RedisSettings {
    RedisSettings {
        url,
        command_timeout: Duration::from_millis(300),
        key_prefix: "skald-test".into(),
    }
}

async fn backend(server: &RedisServer) -> RedisLimits {
    bounded("connect", connect(settings(server.url())))
        .await
        .expect("valid settings")
}

async fn bounded<T>(what: &str, f: impl Future<Output = T>) -> T {
    tokio::time::timeout(BOUND, f)
        .await
        .unwrap_or_else(|_| panic!("{what} did not return within {BOUND:?}"))
}

fn month() -> Month {
    Month::of(T0)
}

fn uid(user: &str) -> UserId {
    user.into()
}

fn rk(key: &str) -> RateKey {
    RateKey::User(uid(key))
}

fn sk(key: &str) -> SlotKey {
    SlotKey(uid(key))
}

/// One settle on its own; whether it applied.
async fn settle_one(
    b: &RedisLimits,
    user: &str,
    id: &str,
    tokens: u64,
    count_request: bool,
) -> Result<bool, LimitsError> {
    let settle = Settle {
        id: id.into(),
        user: uid(user),
        month: month(),
        tokens,
        count_request,
    };
    Ok(b.settle(&[settle]).await?[0])
}

fn reservation(id: &str, user: &str, tokens: u64) -> Reservation {
    Reservation {
        id: id.into(),
        user: user.into(),
        month: month(),
        tokens,
        min_tokens: 1,
    }
}

fn unavailable<T: std::fmt::Debug>(what: &str, result: Result<T, LimitsError>) {
    match result {
        Err(LimitsError::Unavailable(message)) => assert!(!message.is_empty(), "{what}"),
        other => panic!("{what} while Redis is down: expected Unavailable, got {other:?}"),
    }
}

/// Every operation, each bounded, each `Unavailable`.
async fn every_operation_fails(b: &RedisLimits) {
    let limits = QuotaLimits {
        monthly_tokens: 1_000,
        monthly_requests: 10,
    };
    let rate = RateLimit::per_minute(5);
    let r = reservation("down", "down-user", 10);
    unavailable("rate", bounded("rate", b.rate(&rk("down"), rate, T0)).await);
    unavailable(
        "acquire_slot",
        bounded(
            "acquire_slot",
            b.acquire_slot(&claim(&sk("down"), "h", 2, 1_000), T0),
        )
        .await,
    );
    unavailable(
        "release_slot",
        bounded("release_slot", b.release_slot(&sk("down"), "h")).await,
    );
    unavailable(
        "reserve",
        bounded("reserve", b.reserve(&r, limits, LEASE, T0)).await,
    );
    unavailable(
        "settle",
        bounded("settle", settle_one(b, "down-user", "down", 5, true)).await,
    );
    unavailable(
        "add_usage",
        bounded("add_usage", b.add_usage(&uid("down-user"), month(), 1, 1)).await,
    );
    unavailable(
        "usage",
        bounded("usage", b.usage(&uid("down-user"), month(), LEASE, T0)).await,
    );
    unavailable("ping", bounded("ping", b.ping()).await);
}

/// Every operation once, on fresh keys (`n` makes them unique), checking
/// the answers.
async fn every_operation_works(b: &RedisLimits, n: u32) -> Result<(), LimitsError> {
    let user = format!("probe-user-{n}");
    let key = format!("probe-{n}");
    let limits = QuotaLimits {
        monthly_tokens: 1_000,
        monthly_requests: 10,
    };
    b.ping().await?;
    assert_eq!(
        b.rate(&rk(&key), RateLimit::per_minute(1), T0).await?,
        RateDecision::Allowed
    );
    assert!(b.acquire_slot(&claim(&sk(&key), "h", 1, 1_000), T0).await?);
    b.release_slot(&sk(&key), "h").await?;
    assert_eq!(
        b.reserve(&reservation("r", &user, 100), limits, LEASE, T0)
            .await?,
        ReserveDecision::Granted { tokens: 100 }
    );
    assert!(settle_one(b, &user, "r", 40, true).await?);
    b.add_usage(&uid(&user), month(), 2, 1).await?;
    let usage = b.usage(&uid(&user), month(), LEASE, T0).await?;
    assert_eq!((usage.tokens_used, usage.requests_used), (42, 2));
    assert_eq!((usage.tokens_reserved, usage.requests_reserved), (0, 0));
    Ok(())
}

/// Polls until every operation works again (same client), or panics.
async fn recovers(b: &RedisLimits, what: &str) {
    let deadline = Instant::now() + RECOVERY;
    let mut n = 0;
    loop {
        n += 1;
        match bounded("probe", every_operation_works(b, n)).await {
            Ok(()) => return,
            Err(_) if Instant::now() < deadline => {
                tokio::time::sleep(Duration::from_millis(100)).await;
            }
            Err(e) => panic!("{what}: still failing after {RECOVERY:?}: {e}"),
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn redis_backend_passes_the_contract() {
    let server = RedisServer::start();
    let b = backend(&server).await;
    assert_eq!(b.name(), "redis");
    assert!(b.is_connected(), "connected to a running Redis");
    skald_actors::testkit::limits::run_all(&b, "t1").await;

    // Each script was loaded once, then run by its SHA: no EVAL of bodies.
    let raw = raw_client(&server).await;
    let stats = command_stats(&raw).await;
    assert!(!stats.contains("cmdstat_eval:"), "{stats}");
    let loads: u64 = stat_calls(&stats, "cmdstat_script|load");
    assert!((1..=7).contains(&loads), "SCRIPT LOAD calls: {loads}");
    assert!(stat_calls(&stats, "cmdstat_evalsha") > 50, "{stats}");
    let _ = raw.quit().await;
}

/// The `calls=` count of one `INFO commandstats` line.
fn stat_calls(stats: &str, name: &str) -> u64 {
    stats
        .lines()
        .find_map(|line| line.strip_prefix(&format!("{name}:calls=")))
        .and_then(|rest| rest.split(',').next())
        .and_then(|n| n.parse().ok())
        .unwrap_or(0)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_instances_share_one_quota_and_one_rate() {
    let server = RedisServer::start();
    let (a, b) = (backend(&server).await, backend(&server).await);
    let instances = [&a, &b];

    // 30 concurrent reservations, split across both, against 10 requests.
    let limits = QuotaLimits {
        monthly_tokens: 1_000_000,
        monthly_requests: 10,
    };
    let attempts = (0..30).map(|i| {
        let backend = instances[i % 2];
        let r = reservation(&format!("s{i}"), "shared-user", 100);
        async move { backend.reserve(&r, limits, LEASE, T0).await.unwrap() }
    });
    let decisions = futures::future::join_all(attempts).await;
    let granted = decisions
        .iter()
        .filter(|d| matches!(d, ReserveDecision::Granted { tokens: 100 }))
        .count();
    assert_eq!(granted, 10, "{decisions:?}");
    assert_eq!(
        decisions
            .iter()
            .filter(|d| **d == ReserveDecision::RequestsExhausted)
            .count(),
        20
    );
    for backend in instances {
        let usage = backend
            .usage(&uid("shared-user"), month(), LEASE, T0)
            .await
            .unwrap();
        assert_eq!(
            (usage.requests_reserved, usage.tokens_reserved),
            (10, 1_000)
        );
    }

    // 5 a minute, consumed concurrently from both instances: exactly 5.
    let rate = RateLimit::per_minute(5);
    let shared = rk("shared-key");
    let events = (0..12).map(|i| instances[i % 2].rate(&shared, rate, T0));
    let decisions: Vec<RateDecision> = futures::future::join_all(events)
        .await
        .into_iter()
        .map(Result::unwrap)
        .collect();
    let allowed = decisions
        .iter()
        .filter(|d| **d == RateDecision::Allowed)
        .count();
    assert_eq!(allowed, 5, "{decisions:?}");
    // Every refusal says when the next one is due: one interval (12 s).
    for d in decisions.iter().filter(|d| **d != RateDecision::Allowed) {
        assert_eq!(
            *d,
            RateDecision::Limited {
                retry_after_ms: 12_000
            }
        );
    }
    // After that wait, exactly one more, whichever instance asks.
    assert_eq!(
        b.rate(&rk("shared-key"), rate, T0 + 12_000).await.unwrap(),
        RateDecision::Allowed
    );
    assert!(matches!(
        a.rate(&rk("shared-key"), rate, T0 + 12_000).await.unwrap(),
        RateDecision::Limited { .. }
    ));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn redis_killed_answers_stay_bounded_and_the_same_client_recovers() {
    let mut server = RedisServer::start();
    let b = backend(&server).await;
    every_operation_works(&b, 0).await.unwrap();

    server.stop();
    // At once (the connection may not have noticed yet), and again while
    // the client is in its reconnection loop.
    every_operation_fails(&b).await;
    tokio::time::sleep(Duration::from_millis(700)).await;
    every_operation_fails(&b).await;

    server.restart();
    recovers(&b, "after a restart on the same port").await;
    skald_actors::testkit::limits::run_all(&b, "after-restart").await;
    // The restarted Redis had no scripts cached: the client got NOSCRIPT
    // and ran the body with EVAL, which cached it again for EVALSHA.
    let raw = raw_client(&server).await;
    let stats = command_stats(&raw).await;
    assert!(stats.contains("cmdstat_eval:calls="), "{stats}");
    assert!(stats.contains("cmdstat_evalsha:calls="), "{stats}");
    let _ = raw.quit().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn redis_that_stops_answering_is_bounded_too() {
    let server = RedisServer::start();
    let b = backend(&server).await;
    every_operation_works(&b, 0).await.unwrap();

    // The TCP connection stays up but nothing answers: the command timeout
    // bounds every call.
    server.pause();
    every_operation_fails(&b).await;
    server.resume();
    recovers(&b, "after a pause").await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn connect_succeeds_while_redis_is_down_and_works_once_it_is_up() {
    let mut server = RedisServer::start();
    server.stop();
    assert!(!server.answers());

    let b = tokio::time::timeout(Duration::from_secs(10), connect(settings(server.url())))
        .await
        .expect("connect returns while Redis is down")
        .expect("valid settings");
    assert!(!b.is_connected());
    every_operation_fails(&b).await;

    server.restart();
    recovers(&b, "after Redis came up").await;
    assert!(b.is_connected());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_retried_settle_applies_once_across_instances() {
    let server = RedisServer::start();
    let (a, b) = (backend(&server).await, backend(&server).await);
    let limits = QuotaLimits {
        monthly_tokens: 1_000,
        monthly_requests: 10,
    };
    let user = "settler";

    // A retried reserve, from the other instance, is the same reservation.
    let r1 = reservation("stream-1", user, 100);
    assert_eq!(
        a.reserve(&r1, limits, LEASE, T0).await.unwrap(),
        ReserveDecision::Granted { tokens: 100 }
    );
    assert_eq!(
        b.reserve(&r1, limits, LEASE, T0).await.unwrap(),
        ReserveDecision::Granted { tokens: 100 }
    );
    let usage = a.usage(&uid(user), month(), LEASE, T0).await.unwrap();
    assert_eq!((usage.requests_reserved, usage.tokens_reserved), (1, 100));

    // Sequential retries, on both instances.
    assert!(settle_one(&a, user, "stream-1", 40, true).await.unwrap());
    assert!(!settle_one(&a, user, "stream-1", 40, true).await.unwrap());
    assert!(!settle_one(&b, user, "stream-1", 40, true).await.unwrap());
    let usage = b.usage(&uid(user), month(), LEASE, T0).await.unwrap();
    assert_eq!((usage.tokens_used, usage.requests_used), (40, 1));
    assert_eq!((usage.tokens_reserved, usage.requests_reserved), (0, 0));

    // Concurrent retries, on both instances: exactly one applies.
    let r2 = reservation("stream-2", user, 100);
    assert!(matches!(
        b.reserve(&r2, limits, LEASE, T0).await.unwrap(),
        ReserveDecision::Granted { .. }
    ));
    let settles = (0..8).map(|i| settle_one([&a, &b][i % 2], user, "stream-2", 30, true));
    let applied = futures::future::join_all(settles)
        .await
        .into_iter()
        .map(Result::unwrap)
        .filter(|applied| *applied)
        .count();
    assert_eq!(applied, 1);
    let usage = a.usage(&uid(user), month(), LEASE, T0).await.unwrap();
    assert_eq!((usage.tokens_used, usage.requests_used), (70, 2));
    assert_eq!(usage.requests_reserved, 0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn keys_are_encoded_cluster_safe_and_expire() {
    let server = RedisServer::start();
    let b = backend(&server).await;
    let limits = QuotaLimits {
        monthly_tokens: 1_000,
        monthly_requests: 10,
    };
    // Ids that would break a naive hash tag or collide once encoded.
    let users = ["a{b}", "a%7Bb%7D", "a}{", "a|2026-01", "a"];
    for (i, user) in users.iter().enumerate() {
        b.add_usage(&uid(user), month(), 10 * (i as u64 + 1), 1)
            .await
            .unwrap();
    }
    for (i, user) in users.iter().enumerate() {
        let usage = b.usage(&uid(user), month(), LEASE, T0).await.unwrap();
        assert_eq!(usage.tokens_used, 10 * (i as u64 + 1), "{user}");
    }
    let r = reservation("x", "a{b}", 5);
    assert!(matches!(
        b.reserve(&r, limits, LEASE, T0).await.unwrap(),
        ReserveDecision::Granted { tokens: 5 }
    ));
    b.rate(&rk("a{b}"), RateLimit::per_minute(2), crate_now())
        .await
        .unwrap();
    assert!(b
        .acquire_slot(&claim(&sk("a{b}"), "h", 1, 30_000), crate_now())
        .await
        .unwrap());

    let (counters, reservations) = b.quota_keys(&uid("a{b}"), month());
    assert_eq!(counters, "skald-test:q:{a%7Bb%7D|2026-01}");
    assert_eq!(reservations, "skald-test:q:{a%7Bb%7D|2026-01}:res");
    assert_eq!(
        fred::util::redis_keyslot(counters.as_bytes()),
        fred::util::redis_keyslot(reservations.as_bytes()),
        "one script's keys share a slot"
    );

    let raw = raw_client(&server).await;
    let day = 86_400_000i64;
    for key in [&counters, &reservations] {
        let ttl: i64 = raw.pttl(key.as_str()).await.unwrap();
        assert!(ttl > 61 * day && ttl <= 62 * day, "{key}: {ttl}");
    }
    // A rate key lives until its TAT (30 s ahead) plus a margin.
    let ttl: i64 = raw.pttl(b.rate_key(&rk("a{b}"))).await.unwrap();
    assert!(ttl > 30_000 && ttl <= 91_000, "rate key ttl {ttl}");
    let ttl: i64 = raw.pttl(b.slots_key(&sk("a{b}"))).await.unwrap();
    assert!(ttl > 30_000 && ttl <= 91_000, "slots key ttl {ttl}");
    let keys: Vec<String> = raw
        .custom(
            fred::types::CustomCommand::new_static("KEYS", None, false),
            vec!["*"],
        )
        .await
        .unwrap();
    assert!(!keys.is_empty());
    assert!(
        keys.iter().all(|k| k.starts_with("skald-test:")),
        "{keys:?}"
    );
    let _ = raw.quit().await;
}

/// A plain fred client, to look at what the backend wrote.
async fn raw_client(server: &RedisServer) -> fred::clients::Client {
    let config = fred::types::config::Config::from_url(&server.url()).unwrap();
    let raw = fred::clients::Client::new(config, None, None, None);
    bounded("raw connect", raw.init()).await.unwrap();
    raw
}

async fn command_stats(raw: &fred::clients::Client) -> String {
    let info = fred::types::CustomCommand::new_static("INFO", None, false);
    raw.custom(info, vec!["commandstats"]).await.unwrap()
}

/// Wall-clock ms, for the checks of real key TTLs.
fn crate_now() -> i64 {
    skald_actors::time::now_ms()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn settings_are_checked_and_passwords_never_shown() {
    let invalid = connect(RedisSettings::new("redis://u:hunter2@host:notaport")).await;
    let error = invalid.err().expect("an invalid URL is refused");
    assert!(
        matches!(error, RedisSetupError::InvalidUrl { .. }),
        "{error}"
    );
    assert!(!error.to_string().contains("hunter2"), "{error}");

    let mut bad_prefix = RedisSettings::new("redis://127.0.0.1:1");
    bad_prefix.key_prefix = "a{b".into();
    assert!(matches!(
        connect(bad_prefix).await.err(),
        Some(RedisSetupError::InvalidPrefix(_))
    ));
    let mut zero = RedisSettings::new("redis://127.0.0.1:1");
    zero.command_timeout = Duration::ZERO;
    assert_eq!(
        connect(zero).await.err(),
        Some(RedisSetupError::InvalidTimeout)
    );

    let debug = format!("{:?}", RedisSettings::new("redis://u:hunter2@h:1"));
    assert!(
        !debug.contains("hunter2") && debug.contains("u:***@h:1"),
        "{debug}"
    );

    // Errors of a client with a password name no password.
    let mut server = RedisServer::start();
    server.stop();
    let url = format!("redis://u:hunter2@127.0.0.1:{}", server.port);
    let b = connect(settings(url)).await.unwrap();
    match bounded("rate", b.rate(&rk("k"), RateLimit::per_minute(1), T0)).await {
        Err(LimitsError::Unavailable(message)) => assert!(!message.contains("hunter2")),
        other => panic!("expected Unavailable, got {other:?}"),
    }

    // TLS to a server that does not speak it: the client starts, keeps
    // trying, and answers Unavailable within the bound (no panic).
    server.restart();
    let tls = connect(settings(format!("rediss://127.0.0.1:{}", server.port)))
        .await
        .expect("a TLS URL is valid");
    every_operation_fails(&tls).await;
}
