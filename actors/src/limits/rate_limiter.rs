//! The RateLimiter actor: rate limits (messages per user, requests per
//! address) and connection slots per user.
//!
//! Checks never queue behind each other: each one runs in its own task and
//! answers its `RpcReplyPort` itself, so a thousand sessions checking at
//! once cost a thousand concurrent (pipelined) Redis round trips, not a
//! thousand sequential ones. The failure policy it decides under is the
//! [`LimitsGuard`] it shares with the QuotaKeeper (which probes the backend
//! back up).

use std::sync::Arc;

use ractor::{Actor, ActorProcessingErr, ActorRef, RpcReplyPort};

use super::guard::LimitsGuard;
use crate::ports::limits::{LimitsError, RateDecision, RateKey, RateLimit, SlotClaim, SlotKey};
use crate::slot::Slot;

pub enum RateLimiterMsg {
    Check {
        key: RateKey,
        limit: RateLimit,
        now_ms: i64,
        reply: RpcReplyPort<Result<RateDecision, LimitsError>>,
    },
    AcquireSlot {
        claim: SlotClaim,
        now_ms: i64,
        reply: RpcReplyPort<Result<bool, LimitsError>>,
    },
    ReleaseSlot {
        key: SlotKey,
        holder: String,
    },
    /// GDPR erasure of rate and slot state.
    Forget {
        rate_keys: Vec<RateKey>,
        slot_keys: Vec<SlotKey>,
        reply: RpcReplyPort<Result<(), LimitsError>>,
    },
}

pub struct RateLimiter;

impl Actor for RateLimiter {
    type Msg = RateLimiterMsg;
    type State = Arc<LimitsGuard>;
    type Arguments = Arc<LimitsGuard>;

    async fn pre_start(
        &self,
        _myself: ActorRef<RateLimiterMsg>,
        guard: Arc<LimitsGuard>,
    ) -> Result<Arc<LimitsGuard>, ActorProcessingErr> {
        Ok(guard)
    }

    async fn handle(
        &self,
        _myself: ActorRef<RateLimiterMsg>,
        message: RateLimiterMsg,
        guard: &mut Arc<LimitsGuard>,
    ) -> Result<(), ActorProcessingErr> {
        let guard = guard.clone();
        match message {
            RateLimiterMsg::Check {
                key,
                limit,
                now_ms,
                reply,
            } => {
                tokio::spawn(async move {
                    let _ = reply.send(guard.rate(&key, limit, now_ms).await);
                });
            }
            RateLimiterMsg::AcquireSlot {
                claim,
                now_ms,
                reply,
            } => {
                tokio::spawn(async move {
                    let _ = reply.send(guard.acquire_slot(&claim, now_ms).await);
                });
            }
            RateLimiterMsg::ReleaseSlot { key, holder } => {
                tokio::spawn(async move { guard.release_slot(&key, &holder).await });
            }
            RateLimiterMsg::Forget {
                rate_keys,
                slot_keys,
                reply,
            } => {
                tokio::spawn(async move {
                    let _ = reply.send(guard.forget(&rate_keys, &slot_keys).await);
                });
            }
        }
        Ok(())
    }
}

/// The calls sessions and the edge make to the RateLimiter.
impl Slot<RateLimiterMsg> {
    pub async fn check(
        &self,
        key: RateKey,
        limit: RateLimit,
        now_ms: i64,
    ) -> Result<RateDecision, LimitsError> {
        self.call(|reply| RateLimiterMsg::Check {
            key,
            limit,
            now_ms,
            reply,
        })
        .await
        .map_err(LimitsError::unavailable)?
    }

    pub async fn acquire_slot(&self, claim: SlotClaim, now_ms: i64) -> Result<bool, LimitsError> {
        self.call(|reply| RateLimiterMsg::AcquireSlot {
            claim,
            now_ms,
            reply,
        })
        .await
        .map_err(LimitsError::unavailable)?
    }

    pub fn release_slot(&self, key: SlotKey, holder: &str) {
        let _ = self.cast(RateLimiterMsg::ReleaseSlot {
            key,
            holder: holder.to_owned(),
        });
    }

    pub async fn forget(
        &self,
        rate_keys: Vec<RateKey>,
        slot_keys: Vec<SlotKey>,
    ) -> Result<(), LimitsError> {
        self.call(|reply| RateLimiterMsg::Forget {
            rate_keys,
            slot_keys,
            reply,
        })
        .await
        .map_err(LimitsError::unavailable)?
    }
}
