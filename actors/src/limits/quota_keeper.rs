//! The QuotaKeeper actor: monthly token and request quotas, reserved when a
//! `send` is accepted and settled when its stream ends.
//!
//! Like the RateLimiter, it answers each request from its own task. It also
//! probes the shared backend every second: that is what notices Redis coming
//! back, replays the settles it could not take and adds the usage spent
//! meanwhile (see [`LimitsGuard::probe`]).

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::Duration;

use ractor::{Actor, ActorProcessingErr, ActorRef, RpcReplyPort};

use super::guard::LimitsGuard;
use crate::ports::limits::{LimitsError, QuotaLimits, QuotaUsage, Reservation, ReserveDecision};

const PROBE_EVERY: Duration = Duration::from_secs(1);

pub enum QuotaMsg {
    Reserve {
        reservation: Reservation,
        limits: QuotaLimits,
        lease_ms: u64,
        now_ms: i64,
        reply: RpcReplyPort<Result<ReserveDecision, LimitsError>>,
    },
    Settle {
        user: String,
        month: String,
        id: String,
        tokens: u64,
        count_request: bool,
    },
    Usage {
        user: String,
        month: String,
        lease_ms: u64,
        now_ms: i64,
        reply: RpcReplyPort<Result<QuotaUsage, LimitsError>>,
    },
    Probe,
}

pub struct QuotaKeeper;

pub struct QuotaState {
    guard: Arc<LimitsGuard>,
    probing: Arc<AtomicBool>,
}

impl Actor for QuotaKeeper {
    type Msg = QuotaMsg;
    type State = QuotaState;
    type Arguments = Arc<LimitsGuard>;

    async fn pre_start(
        &self,
        myself: ActorRef<QuotaMsg>,
        guard: Arc<LimitsGuard>,
    ) -> Result<QuotaState, ActorProcessingErr> {
        myself.send_interval(PROBE_EVERY, || QuotaMsg::Probe);
        Ok(QuotaState {
            guard,
            probing: Arc::new(AtomicBool::new(false)),
        })
    }

    async fn handle(
        &self,
        _myself: ActorRef<QuotaMsg>,
        message: QuotaMsg,
        state: &mut QuotaState,
    ) -> Result<(), ActorProcessingErr> {
        let guard = state.guard.clone();
        match message {
            QuotaMsg::Reserve {
                reservation,
                limits,
                lease_ms,
                now_ms,
                reply,
            } => {
                tokio::spawn(async move {
                    let _ = reply.send(guard.reserve(&reservation, limits, lease_ms, now_ms).await);
                });
            }
            QuotaMsg::Settle {
                user,
                month,
                id,
                tokens,
                count_request,
            } => {
                tokio::spawn(async move {
                    guard
                        .settle(&user, &month, &id, tokens, count_request)
                        .await;
                });
            }
            QuotaMsg::Usage {
                user,
                month,
                lease_ms,
                now_ms,
                reply,
            } => {
                tokio::spawn(async move {
                    let _ = reply.send(guard.usage(&user, &month, lease_ms, now_ms).await);
                });
            }
            QuotaMsg::Probe => {
                // One probe at a time: a slow backend must not pile them up.
                if !state.probing.swap(true, Ordering::AcqRel) {
                    let probing = state.probing.clone();
                    tokio::spawn(async move {
                        guard.probe().await;
                        probing.store(false, Ordering::Release);
                    });
                }
            }
        }
        Ok(())
    }
}
