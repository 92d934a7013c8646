//! The QuotaKeeper actor: monthly token and request quotas, reserved when a
//! `send` is accepted and settled when its stream ends.
//!
//! It owns what a quota outage leaves behind, so nothing else needs a lock
//! on it:
//! - the reservations this instance's fallback granted while the shared
//!   backend was down (their settles go to the fallback, and into the
//!   ledger);
//! - the **ledger**: tokens and requests spent meanwhile, per user and
//!   month, added to the shared backend when it is back;
//! - the settles the shared backend could not take, replayed then.
//!
//! Settles arrive as casts and are **batched**: those that arrive within
//! [`SETTLE_WINDOW`] go to the backend in one call (one Redis pipeline).
//! Decisions that wait on the backend (reserve, usage, a batch of settles,
//! the probe) run in tasks of their own, so a thousand sessions reserving
//! at once cost a thousand pipelined round trips, not a queue; a task
//! reports back to the actor what the state must remember.
//!
//! Every second the actor probes the shared backend; when it answers, the
//! deferred settles and the ledger are applied, and only then are
//! decisions routed to it again.

use std::collections::{HashMap, HashSet};
use std::sync::Arc;
use std::time::Duration;

use ractor::{Actor, ActorProcessingErr, ActorRef, RpcReplyPort};
use skald_protocol::{StreamId, UserId};

use super::guard::{DecidedBy, LimitsGuard};
use crate::ports::limits::{
    LimitsBackend, LimitsError, QuotaLimits, QuotaUsage, Reservation, ReserveDecision, Settle,
};
use crate::slot::Slot;
use crate::time::Month;
use crate::ActorsError;

const PROBE_EVERY: Duration = Duration::from_secs(1);
/// Settles that arrive this close together share one backend call.
pub const SETTLE_WINDOW: Duration = Duration::from_millis(2);
const MAX_SETTLE_BATCH: usize = 128;

pub enum QuotaMsg {
    Reserve {
        reservation: Reservation,
        limits: QuotaLimits,
        now_ms: i64,
        reply: RpcReplyPort<Result<ReserveDecision, LimitsError>>,
    },
    Settle(Settle),
    Usage {
        user: UserId,
        month: Month,
        now_ms: i64,
        reply: RpcReplyPort<Result<QuotaUsage, LimitsError>>,
    },
    /// Send the batched settles (self-scheduled).
    FlushSettles,
    Probe,
    /// From a reserve task: the fallback granted this reservation.
    FallbackGranted(StreamId),
    /// From a settle task: the shared backend could not take these.
    Deferred(Vec<Settle>),
    /// From the probe task: what it could not apply, and whether the
    /// shared backend is reconciled.
    Probed {
        deferred: Vec<Settle>,
        ledger: Ledger,
        reconciled: bool,
    },
}

/// Usage spent on the fallback, per user and month: (tokens, requests).
pub type Ledger = HashMap<(UserId, Month), (u64, u64)>;

pub struct QuotaKeeper;

pub struct QuotaArgs {
    pub guard: Arc<LimitsGuard>,
    /// How long a reservation lives if never settled.
    pub lease_ms: u64,
}

pub struct QuotaState {
    guard: Arc<LimitsGuard>,
    lease_ms: u64,
    fallback_reservations: HashSet<StreamId>,
    ledger: Ledger,
    deferred: Vec<Settle>,
    batch: Vec<Settle>,
    flush_scheduled: bool,
    probing: bool,
}

impl Actor for QuotaKeeper {
    type Msg = QuotaMsg;
    type State = QuotaState;
    type Arguments = QuotaArgs;

    async fn pre_start(
        &self,
        myself: ActorRef<QuotaMsg>,
        args: QuotaArgs,
    ) -> Result<QuotaState, ActorProcessingErr> {
        if args.guard.is_shared() {
            myself.send_interval(PROBE_EVERY, || QuotaMsg::Probe);
        }
        Ok(QuotaState {
            guard: args.guard,
            lease_ms: args.lease_ms,
            fallback_reservations: HashSet::new(),
            ledger: Ledger::new(),
            deferred: Vec::new(),
            batch: Vec::new(),
            flush_scheduled: false,
            probing: false,
        })
    }

    /// Settles still batched are sent before the actor goes (a restart or
    /// the shutdown must not lose them).
    async fn post_stop(
        &self,
        _myself: ActorRef<QuotaMsg>,
        state: &mut QuotaState,
    ) -> Result<(), ActorProcessingErr> {
        let batch = std::mem::take(&mut state.batch);
        if !batch.is_empty() {
            if let Err(e) = state.guard.primary().settle(&batch).await {
                tracing::error!(error = %e, settles = batch.len(), "settles lost at stop");
            }
        }
        Ok(())
    }

    async fn handle(
        &self,
        myself: ActorRef<QuotaMsg>,
        message: QuotaMsg,
        state: &mut QuotaState,
    ) -> Result<(), ActorProcessingErr> {
        match message {
            QuotaMsg::Reserve {
                reservation,
                limits,
                now_ms,
                reply,
            } => {
                let guard = state.guard.clone();
                let lease_ms = state.lease_ms;
                tokio::spawn(async move {
                    let decided = guard
                        .reserve(&reservation, limits, lease_ms, now_ms)
                        .await
                        .map(|(decision, by)| {
                            if by == DecidedBy::Fallback
                                && matches!(decision, ReserveDecision::Granted { .. })
                            {
                                // Before the reply: the settle that ends this
                                // reservation is cast after it.
                                let _ = myself.cast(QuotaMsg::FallbackGranted(reservation.id));
                            }
                            decision
                        });
                    let _ = reply.send(decided);
                });
            }
            QuotaMsg::FallbackGranted(id) => {
                state.fallback_reservations.insert(id);
            }
            QuotaMsg::Settle(settle) => state.settle(&myself, settle).await,
            QuotaMsg::FlushSettles => {
                state.flush_scheduled = false;
                state.flush(&myself);
            }
            QuotaMsg::Deferred(settles) => {
                tracing::warn!(
                    settles = settles.len(),
                    "settles deferred until the limits backend is back"
                );
                state.deferred.extend(settles);
            }
            QuotaMsg::Usage {
                user,
                month,
                now_ms,
                reply,
            } => {
                let guard = state.guard.clone();
                let lease_ms = state.lease_ms;
                tokio::spawn(async move {
                    let _ = reply.send(guard.usage(&user, month, lease_ms, now_ms).await);
                });
            }
            QuotaMsg::Probe => {
                // One probe at a time: a slow backend must not pile them up.
                if !state.probing {
                    state.probing = true;
                    let deferred = std::mem::take(&mut state.deferred);
                    let ledger = std::mem::take(&mut state.ledger);
                    tokio::spawn(probe(state.guard.clone(), deferred, ledger, myself));
                }
            }
            QuotaMsg::Probed {
                deferred,
                ledger,
                reconciled,
            } => {
                state.probing = false;
                state.deferred.extend(deferred);
                for (key, (tokens, requests)) in ledger {
                    let entry = state.ledger.entry(key).or_default();
                    entry.0 += tokens;
                    entry.1 += requests;
                }
                // Back only with nothing left to reconcile (what arrived
                // during the probe goes with the next one).
                if reconciled && state.deferred.is_empty() && state.ledger.is_empty() {
                    state.guard.mark_up();
                }
            }
        }
        Ok(())
    }
}

impl QuotaState {
    async fn settle(&mut self, myself: &ActorRef<QuotaMsg>, settle: Settle) {
        if self.fallback_reservations.remove(&settle.id) {
            if let Some(fallback) = self.guard.fallback() {
                let _ = fallback.settle(std::slice::from_ref(&settle)).await;
            }
            let entry = self.ledger.entry((settle.user, settle.month)).or_default();
            entry.0 += settle.tokens;
            entry.1 += u64::from(settle.count_request);
            return;
        }
        self.batch.push(settle);
        if self.batch.len() >= MAX_SETTLE_BATCH {
            self.flush(myself);
        } else if !self.flush_scheduled {
            self.flush_scheduled = true;
            myself.send_after(SETTLE_WINDOW, || QuotaMsg::FlushSettles);
        }
    }

    /// Sends the batch in one call; what the backend cannot take comes back
    /// as [`QuotaMsg::Deferred`].
    fn flush(&mut self, myself: &ActorRef<QuotaMsg>) {
        let batch = std::mem::take(&mut self.batch);
        if batch.is_empty() {
            return;
        }
        if self.guard.is_shared() && !self.guard.is_healthy() {
            self.deferred.extend(batch);
            return;
        }
        let guard = self.guard.clone();
        let myself = myself.clone();
        tokio::spawn(async move {
            match guard.primary().settle(&batch).await {
                Ok(applied) => {
                    let missing = applied.iter().filter(|a| !**a).count();
                    if missing > 0 {
                        tracing::debug!(
                            missing,
                            "settles found no reservation (expired or applied)"
                        );
                    }
                }
                Err(e) => {
                    guard.mark_down(&e);
                    if guard.is_shared() {
                        let _ = myself.cast(QuotaMsg::Deferred(batch));
                    } else {
                        tracing::error!(error = %e, settles = batch.len(), "settles failed");
                    }
                }
            }
        });
    }
}

/// Pings the shared backend; when it answers, applies the deferred settles
/// and adds the ledger, and reports what is left.
async fn probe(
    guard: Arc<LimitsGuard>,
    deferred: Vec<Settle>,
    ledger: Ledger,
    myself: ActorRef<QuotaMsg>,
) {
    let primary: &dyn LimitsBackend = guard.primary();
    if let Err(e) = primary.ping().await {
        guard.mark_down(&e);
        let _ = myself.cast(QuotaMsg::Probed {
            deferred,
            ledger,
            reconciled: false,
        });
        return;
    }
    let mut left = Vec::new();
    if !deferred.is_empty() {
        match primary.settle(&deferred).await {
            Ok(applied) => {
                metrics::counter!("skald_limits_reconciled_total").increment(applied.len() as u64);
            }
            Err(_) => left = deferred,
        }
    }
    let mut unsent = Ledger::new();
    for ((user, month), (tokens, requests)) in ledger {
        match primary.add_usage(&user, month, tokens, requests).await {
            Ok(()) => metrics::counter!("skald_limits_reconciled_total").increment(1),
            Err(_) => {
                unsent.insert((user, month), (tokens, requests));
            }
        }
    }
    let reconciled = left.is_empty() && unsent.is_empty();
    let _ = myself.cast(QuotaMsg::Probed {
        deferred: left,
        ledger: unsent,
        reconciled,
    });
}

/// The calls sessions and streams make to the QuotaKeeper.
impl Slot<QuotaMsg> {
    pub async fn reserve(
        &self,
        reservation: Reservation,
        limits: QuotaLimits,
        now_ms: i64,
    ) -> Result<ReserveDecision, LimitsError> {
        self.call(|reply| QuotaMsg::Reserve {
            reservation,
            limits,
            now_ms,
            reply,
        })
        .await
        .map_err(LimitsError::unavailable)?
    }

    /// Ends a reservation (fire and forget: once the QuotaKeeper has a
    /// settle, it never loses it).
    pub fn settle(&self, settle: Settle) {
        let id = settle.id.clone();
        if let Err(e) = self.cast(QuotaMsg::Settle(settle)) {
            tracing::error!(%id, error = %e, "no QuotaKeeper to settle with");
        }
    }

    pub async fn usage(
        &self,
        user: &UserId,
        month: Month,
        now_ms: i64,
    ) -> Result<QuotaUsage, LimitsError> {
        self.call(|reply| QuotaMsg::Usage {
            user: user.clone(),
            month,
            now_ms,
            reply,
        })
        .await
        .map_err(|e: ActorsError| LimitsError::unavailable(e))?
    }
}
