//! The contract every limits backend passes: the same exact assertions run
//! against the in-process backend (here) and against Redis (in `src/`, on
//! real `redis-server` processes). Keys are prefixed with `ns` so runs on a
//! shared Redis never see each other.

use crate::ports::limits::{
    LimitsBackend, QuotaLimits, RateDecision, RateLimit, Reservation, ReserveDecision,
};

const T0: i64 = 1_767_225_600_000; // 2026-01-01T00:00:00Z
const LEASE: u64 = 600_000;

pub async fn run_all(backend: &dyn LimitsBackend, ns: &str) {
    gcra_is_exact_and_keys_are_isolated(backend, ns).await;
    slots_are_bounded_refreshable_and_expire(backend, ns).await;
    reserve_and_settle_never_double_spend(backend, ns).await;
    concurrent_reservations_are_exact(backend, ns).await;
    expired_reservations_release_their_quota(backend, ns).await;
    forget_erases_a_users_state(backend, ns).await;
}

pub async fn forget_erases_a_users_state(b: &dyn LimitsBackend, ns: &str) {
    let user = format!("{ns}:gone");
    let rate_key = format!("{ns}:rate:gone");
    let slot_key = format!("{ns}:slots:gone");
    let limit = RateLimit { per_minute: 1 };
    assert_eq!(
        b.rate(&rate_key, limit, T0).await.unwrap(),
        RateDecision::Allowed
    );
    assert!(b.acquire_slot(&slot_key, "s", 1, LEASE, T0).await.unwrap());
    b.add_usage(&user, "2026-01", 10, 1).await.unwrap();
    b.forget(
        std::slice::from_ref(&rate_key),
        std::slice::from_ref(&slot_key),
        &user,
        &["2026-01".into()],
    )
    .await
    .unwrap();
    assert_eq!(
        b.rate(&rate_key, limit, T0).await.unwrap(),
        RateDecision::Allowed
    );
    assert!(b
        .acquire_slot(&slot_key, "other", 1, LEASE, T0)
        .await
        .unwrap());
    let usage = b.usage(&user, "2026-01", LEASE, T0).await.unwrap();
    assert_eq!((usage.tokens_used, usage.requests_used), (0, 0));
}

pub async fn gcra_is_exact_and_keys_are_isolated(b: &dyn LimitsBackend, ns: &str) {
    let key = format!("{ns}:rate:a");
    let limit = RateLimit { per_minute: 3 };
    for i in 0..3 {
        assert_eq!(
            b.rate(&key, limit, T0).await.unwrap(),
            RateDecision::Allowed,
            "event {i}"
        );
    }
    assert_eq!(
        b.rate(&key, limit, T0).await.unwrap(),
        RateDecision::Limited {
            retry_after_ms: 20_000
        }
    );
    assert_eq!(
        b.rate(&key, limit, T0 + 5_000).await.unwrap(),
        RateDecision::Limited {
            retry_after_ms: 15_000
        }
    );
    // Refusals cost nothing: after the wait, exactly one more.
    assert_eq!(
        b.rate(&key, limit, T0 + 20_000).await.unwrap(),
        RateDecision::Allowed
    );
    assert!(matches!(
        b.rate(&key, limit, T0 + 20_000).await.unwrap(),
        RateDecision::Limited { .. }
    ));
    // Another key is untouched.
    let other = format!("{ns}:rate:b");
    assert_eq!(
        b.rate(&other, limit, T0).await.unwrap(),
        RateDecision::Allowed
    );
    // A quiet minute restores the whole burst.
    for _ in 0..3 {
        assert_eq!(
            b.rate(&key, limit, T0 + 200_000).await.unwrap(),
            RateDecision::Allowed
        );
    }
}

pub async fn slots_are_bounded_refreshable_and_expire(b: &dyn LimitsBackend, ns: &str) {
    let key = format!("{ns}:slots:u");
    assert!(b.acquire_slot(&key, "a", 2, 1_000, T0).await.unwrap());
    assert!(b.acquire_slot(&key, "b", 2, 1_000, T0).await.unwrap());
    assert!(!b.acquire_slot(&key, "c", 2, 1_000, T0).await.unwrap());
    // Refreshing a held slot is not a new slot.
    assert!(b.acquire_slot(&key, "a", 2, 1_000, T0 + 500).await.unwrap());
    b.release_slot(&key, "b").await.unwrap();
    assert!(b.acquire_slot(&key, "c", 2, 1_000, T0 + 600).await.unwrap());
    // "a" was refreshed at +500 (until +1500), "c" holds until +1600.
    assert!(!b
        .acquire_slot(&key, "d", 2, 1_000, T0 + 1_400)
        .await
        .unwrap());
    assert!(b
        .acquire_slot(&key, "d", 2, 1_000, T0 + 1_550)
        .await
        .unwrap());
}

pub async fn reserve_and_settle_never_double_spend(b: &dyn LimitsBackend, ns: &str) {
    let user = format!("{ns}:user");
    let month = "2026-01";
    let limits = QuotaLimits {
        monthly_tokens: 1_000,
        monthly_requests: 3,
    };
    let r = |id: &str, tokens: u64, min_tokens: u64| Reservation {
        id: id.into(),
        user: user.clone(),
        month: month.into(),
        tokens,
        min_tokens,
    };
    let granted = |tokens| ReserveDecision::Granted { tokens };
    assert_eq!(
        b.reserve(&r("r1", 400, 10), limits, LEASE, T0)
            .await
            .unwrap(),
        granted(400)
    );
    // The same reservation again (a retried command) counts once.
    assert_eq!(
        b.reserve(&r("r1", 400, 10), limits, LEASE, T0)
            .await
            .unwrap(),
        granted(400)
    );
    // What is left is granted, not more.
    assert_eq!(
        b.reserve(&r("r2", 700, 10), limits, LEASE, T0)
            .await
            .unwrap(),
        granted(600)
    );
    assert_eq!(
        b.reserve(&r("r3", 100, 10), limits, LEASE, T0)
            .await
            .unwrap(),
        ReserveDecision::TokensExhausted
    );
    assert!(b.settle(&user, month, "r1", 100, true).await.unwrap());
    assert!(
        !b.settle(&user, month, "r1", 100, true).await.unwrap(),
        "settled once"
    );
    let usage = b.usage(&user, month, LEASE, T0).await.unwrap();
    assert_eq!((usage.tokens_used, usage.requests_used), (100, 1));
    assert_eq!((usage.tokens_reserved, usage.requests_reserved), (600, 1));
    // 300 tokens are free again; two requests are taken (one used, one reserved).
    assert_eq!(
        b.reserve(&r("r3", 100, 10), limits, LEASE, T0)
            .await
            .unwrap(),
        granted(100)
    );
    assert_eq!(
        b.reserve(&r("r4", 10, 1), limits, LEASE, T0).await.unwrap(),
        ReserveDecision::RequestsExhausted
    );
    // A release (the send failed before its ack) gives the request back.
    assert!(b.settle(&user, month, "r2", 0, false).await.unwrap());
    assert_eq!(
        b.reserve(&r("r4", 10, 1), limits, LEASE, T0).await.unwrap(),
        granted(10)
    );
    // Usage added directly (reconciliation after an outage).
    b.add_usage(&user, month, 50, 2).await.unwrap();
    let usage = b.usage(&user, month, LEASE, T0).await.unwrap();
    assert_eq!((usage.tokens_used, usage.requests_used), (150, 3));
    // Another month starts from zero.
    let next = b.usage(&user, "2026-02", LEASE, T0).await.unwrap();
    assert_eq!(
        (next.tokens_used, next.requests_used, next.tokens_reserved),
        (0, 0, 0)
    );
}

pub async fn concurrent_reservations_are_exact(b: &dyn LimitsBackend, ns: &str) {
    let user = format!("{ns}:crowd");
    let limits = QuotaLimits {
        monthly_tokens: 1_000_000,
        monthly_requests: 10,
    };
    let attempts = (0..30).map(|i| {
        let r = Reservation {
            id: format!("s{i}"),
            user: user.clone(),
            month: "2026-01".into(),
            tokens: 100,
            min_tokens: 1,
        };
        async move { b.reserve(&r, limits, LEASE, T0).await.unwrap() }
    });
    let decisions = futures::future::join_all(attempts).await;
    let granted = decisions
        .iter()
        .filter(|d| matches!(d, ReserveDecision::Granted { .. }))
        .count();
    assert_eq!(granted, 10);
}

pub async fn expired_reservations_release_their_quota(b: &dyn LimitsBackend, ns: &str) {
    let user = format!("{ns}:crashed");
    let limits = QuotaLimits {
        monthly_tokens: 100,
        monthly_requests: 100,
    };
    let r = |id: &str| Reservation {
        id: id.into(),
        user: user.clone(),
        month: "2026-01".into(),
        tokens: 100,
        min_tokens: 1,
    };
    assert!(matches!(
        b.reserve(&r("lost"), limits, 1_000, T0).await.unwrap(),
        ReserveDecision::Granted { tokens: 100 }
    ));
    assert_eq!(
        b.reserve(&r("next"), limits, 1_000, T0 + 500)
            .await
            .unwrap(),
        ReserveDecision::TokensExhausted
    );
    assert!(matches!(
        b.reserve(&r("next"), limits, 1_000, T0 + 1_500)
            .await
            .unwrap(),
        ReserveDecision::Granted { tokens: 100 }
    ));
    // The expired reservation cannot be settled any more.
    assert!(!b.settle(&user, "2026-01", "lost", 10, true).await.unwrap());
}
