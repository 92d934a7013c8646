//! The RateLimiter actor: rate limits (messages per user, requests per
//! address) and connection slots per user.
//!
//! Checks never queue behind each other: each request runs in its own task
//! and answers its `RpcReplyPort` itself, so a thousand sessions checking
//! at once cost a thousand concurrent (pipelined) Redis round trips, not a
//! thousand sequential ones. The actor is the supervised owner of the
//! shared [`LimitsGuard`], which survives its restarts.

use std::sync::Arc;

use ractor::{Actor, ActorProcessingErr, ActorRef, RpcReplyPort};

use super::guard::LimitsGuard;
use crate::ports::limits::{LimitsError, RateDecision, RateLimit};

pub enum RateLimiterMsg {
    Check {
        key: String,
        limit: RateLimit,
        now_ms: i64,
        reply: RpcReplyPort<Result<RateDecision, LimitsError>>,
    },
    AcquireSlot {
        key: String,
        holder: String,
        max: u32,
        lease_ms: u64,
        now_ms: i64,
        reply: RpcReplyPort<Result<bool, LimitsError>>,
    },
    ReleaseSlot {
        key: String,
        holder: String,
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
                key,
                holder,
                max,
                lease_ms,
                now_ms,
                reply,
            } => {
                tokio::spawn(async move {
                    let _ = reply.send(
                        guard
                            .acquire_slot(&key, &holder, max, lease_ms, now_ms)
                            .await,
                    );
                });
            }
            RateLimiterMsg::ReleaseSlot { key, holder } => {
                tokio::spawn(async move { guard.release_slot(&key, &holder).await });
            }
        }
        Ok(())
    }
}
