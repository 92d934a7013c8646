//! The contract every limits backend passes: the same exact assertions run
//! against the in-process backend (here) and against Redis (in `src/`, on
//! real `redis-server` processes). Keys are prefixed with `ns` so runs on a
//! shared Redis never see each other.

use skald_protocol::{StreamId, UserId};

use crate::ports::limits::{
    LimitsBackend, QuotaLimits, RateDecision, RateKey, RateLimit, Reservation, ReserveDecision,
    Settle, SlotClaim, SlotKey,
};
use crate::settings::LimitOverride;
use crate::time::Month;

const T0: i64 = 1_767_225_600_000; // 2026-01-01T00:00:00Z
const LEASE: u64 = 600_000;

fn jan() -> Month {
    Month::of(T0)
}

fn user(ns: &str, name: &str) -> UserId {
    UserId::from(format!("{ns}:{name}"))
}

fn settle(user: &UserId, id: &str, tokens: u64, count_request: bool) -> Settle {
    Settle {
        id: StreamId::from(id),
        user: user.clone(),
        month: jan(),
        tokens,
        count_request,
    }
}

/// A claim on one of `key`'s slots.
pub fn claim(key: &SlotKey, holder: &str, max: u32, lease_ms: u64) -> SlotClaim {
    SlotClaim {
        key: key.clone(),
        holder: holder.to_owned(),
        max,
        lease_ms,
    }
}

/// Settles one reservation; whether there was one to settle.
async fn settle_one(b: &dyn LimitsBackend, s: Settle) -> bool {
    let applied = b.settle(std::slice::from_ref(&s)).await.unwrap();
    assert_eq!(applied.len(), 1, "one answer per settle");
    applied[0]
}

pub async fn run_all(backend: &dyn LimitsBackend, ns: &str) {
    gcra_is_exact_and_keys_are_isolated(backend, ns).await;
    slots_are_bounded_refreshable_and_expire(backend, ns).await;
    reserve_and_settle_never_double_spend(backend, ns).await;
    concurrent_reservations_are_exact(backend, ns).await;
    expired_reservations_release_their_quota(backend, ns).await;
    forget_erases_rates_and_slots_but_keeps_quota_counters(backend, ns).await;
    settles_in_one_call_apply_each_once(backend, ns).await;
    user_limits_are_stored_replaced_and_deleted(backend, ns).await;
}

/// Overrides are global: this run's are those of users prefixed with `ns`.
pub async fn user_limits_are_stored_replaced_and_deleted(b: &dyn LimitsBackend, ns: &str) {
    let (vip, other) = (user(ns, "vip"), user(ns, "other"));
    let mine = || async {
        let all = b.user_limits().await.unwrap();
        all.into_iter()
            .filter(|(u, _)| u.as_str().starts_with(ns))
            .collect::<Vec<_>>()
    };
    assert_eq!(mine().await, vec![]);
    let first = LimitOverride {
        messages_per_minute: Some(3),
        monthly_tokens: Some(u64::from(u32::MAX) * 4),
        monthly_requests: None,
    };
    b.set_user_limits(&vip, Some(&first)).await.unwrap();
    b.set_user_limits(&other, Some(&LimitOverride::default()))
        .await
        .unwrap();
    let replaced = LimitOverride {
        monthly_requests: Some(10),
        ..Default::default()
    };
    b.set_user_limits(&vip, Some(&replaced)).await.unwrap();
    assert_eq!(
        mine().await,
        vec![
            (other.clone(), LimitOverride::default()),
            (vip.clone(), replaced)
        ]
    );
    b.set_user_limits(&vip, None).await.unwrap();
    b.set_user_limits(&vip, None).await.unwrap();
    assert_eq!(
        mine().await,
        vec![(other.clone(), LimitOverride::default())]
    );
    b.set_user_limits(&other, None).await.unwrap();
}

pub async fn forget_erases_rates_and_slots_but_keeps_quota_counters(
    b: &dyn LimitsBackend,
    ns: &str,
) {
    let gone = user(ns, "gone");
    let rate_key = RateKey::User(gone.clone());
    let slot_key = SlotKey(gone.clone());
    let limit = RateLimit::per_minute(1);
    assert_eq!(
        b.rate(&rate_key, limit, T0).await.unwrap(),
        RateDecision::Allowed
    );
    assert!(b
        .acquire_slot(&claim(&slot_key, "s", 1, LEASE), T0)
        .await
        .unwrap());
    b.add_usage(&gone, jan(), 10, 1).await.unwrap();
    b.forget(
        std::slice::from_ref(&rate_key),
        std::slice::from_ref(&slot_key),
    )
    .await
    .unwrap();
    assert_eq!(
        b.rate(&rate_key, limit, T0).await.unwrap(),
        RateDecision::Allowed
    );
    assert!(b
        .acquire_slot(&claim(&slot_key, "other", 1, LEASE), T0)
        .await
        .unwrap());
    // The month's counters stay: erasure must not hand out a new quota.
    let usage = b.usage(&gone, jan(), LEASE, T0).await.unwrap();
    assert_eq!((usage.tokens_used, usage.requests_used), (10, 1));
}

pub async fn settles_in_one_call_apply_each_once(b: &dyn LimitsBackend, ns: &str) {
    let who = user(ns, "batch");
    let limits = QuotaLimits {
        monthly_tokens: 10_000,
        monthly_requests: 100,
    };
    for id in ["b1", "b2", "b3"] {
        let r = Reservation {
            id: id.into(),
            user: who.clone(),
            month: jan(),
            tokens: 100,
            min_tokens: 1,
        };
        b.reserve(&r, limits, LEASE, T0).await.unwrap();
    }
    let applied = b
        .settle(&[
            settle(&who, "b1", 10, true),
            settle(&who, "b2", 20, true),
            settle(&who, "b1", 10, true),
            settle(&who, "missing", 5, true),
            settle(&who, "b3", 0, false),
        ])
        .await
        .unwrap();
    assert_eq!(applied, [true, true, false, false, true]);
    let usage = b.usage(&who, jan(), LEASE, T0).await.unwrap();
    assert_eq!((usage.tokens_used, usage.requests_used), (30, 2));
    assert_eq!((usage.tokens_reserved, usage.requests_reserved), (0, 0));
    assert!(b.settle(&[]).await.unwrap().is_empty());
}

pub async fn gcra_is_exact_and_keys_are_isolated(b: &dyn LimitsBackend, ns: &str) {
    let key = RateKey::User(user(ns, "rate-a"));
    let limit = RateLimit::per_minute(3);
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
    let other = RateKey::User(user(ns, "rate-b"));
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
    let key = SlotKey(user(ns, "slots"));
    assert!(b
        .acquire_slot(&claim(&key, "a", 2, 1_000), T0)
        .await
        .unwrap());
    assert!(b
        .acquire_slot(&claim(&key, "b", 2, 1_000), T0)
        .await
        .unwrap());
    assert!(!b
        .acquire_slot(&claim(&key, "c", 2, 1_000), T0)
        .await
        .unwrap());
    // Refreshing a held slot is not a new slot.
    assert!(b
        .acquire_slot(&claim(&key, "a", 2, 1_000), T0 + 500)
        .await
        .unwrap());
    b.release_slot(&key, "b").await.unwrap();
    assert!(b
        .acquire_slot(&claim(&key, "c", 2, 1_000), T0 + 600)
        .await
        .unwrap());
    // "a" was refreshed at +500 (until +1500), "c" holds until +1600.
    assert!(!b
        .acquire_slot(&claim(&key, "d", 2, 1_000), T0 + 1_400)
        .await
        .unwrap());
    assert!(b
        .acquire_slot(&claim(&key, "d", 2, 1_000), T0 + 1_550)
        .await
        .unwrap());
}

pub async fn reserve_and_settle_never_double_spend(b: &dyn LimitsBackend, ns: &str) {
    let user = user(ns, "user");
    let month = jan();
    let limits = QuotaLimits {
        monthly_tokens: 1_000,
        monthly_requests: 3,
    };
    let r = |id: &str, tokens: u64, min_tokens: u64| Reservation {
        id: id.into(),
        user: user.clone(),
        month,
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
    assert!(settle_one(b, settle(&user, "r1", 100, true)).await);
    assert!(
        !settle_one(b, settle(&user, "r1", 100, true)).await,
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
    assert!(settle_one(b, settle(&user, "r2", 0, false)).await);
    assert_eq!(
        b.reserve(&r("r4", 10, 1), limits, LEASE, T0).await.unwrap(),
        granted(10)
    );
    // Usage added directly (reconciliation after an outage).
    b.add_usage(&user, month, 50, 2).await.unwrap();
    let usage = b.usage(&user, month, LEASE, T0).await.unwrap();
    assert_eq!((usage.tokens_used, usage.requests_used), (150, 3));
    // Another month starts from zero.
    let next = b
        .usage(&user, Month::of(month.next_start_ms()), LEASE, T0)
        .await
        .unwrap();
    assert_eq!(
        (next.tokens_used, next.requests_used, next.tokens_reserved),
        (0, 0, 0)
    );
}

pub async fn concurrent_reservations_are_exact(b: &dyn LimitsBackend, ns: &str) {
    let user = user(ns, "crowd");
    let limits = QuotaLimits {
        monthly_tokens: 1_000_000,
        monthly_requests: 10,
    };
    let attempts = (0..30).map(|i| {
        let r = Reservation {
            id: StreamId::from(format!("s{i}")),
            user: user.clone(),
            month: jan(),
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
    let user = user(ns, "crashed");
    let limits = QuotaLimits {
        monthly_tokens: 100,
        monthly_requests: 100,
    };
    let r = |id: &str| Reservation {
        id: id.into(),
        user: user.clone(),
        month: jan(),
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
    assert!(!settle_one(b, settle(&user, "lost", 10, true)).await);
}
