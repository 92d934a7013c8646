//! The hub: the handle the edge holds on the actor system, and the root
//! supervisor behind it.
//!
//! The root supervisor owns the shared actors (the stream registry and the
//! session supervisor). If one of them fails it is restarted, at most
//! `MAX_RESTARTS` times in `RESTART_WINDOW`, and the restart is counted;
//! past that the root stops, which the edge sees as `is_alive() == false`.
//! The current child refs live in slots that the hub reads, so callers never
//! hold a ref to a dead registry.

use std::collections::VecDeque;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, RwLock};
use std::time::Duration;

use ractor::{Actor, ActorCell, ActorProcessingErr, ActorRef, SupervisionEvent};
use tokio::time::Instant;

use crate::limits::quota_keeper::{QuotaKeeper, QuotaMsg};
use crate::limits::rate_limiter::{RateLimiter, RateLimiterMsg};
use crate::persister::{Persister, PersisterArgs, PersisterCounters, PersisterMsg};
use crate::ports::limits::{
    LimitsError, QuotaLimits, QuotaUsage, RateDecision, RateLimit, Reservation, ReserveDecision,
};
use crate::ports::store::{AuditRecord, FinishedAnswer};
use crate::registry::{
    Registry, RegistryArgs, RegistryCounters, RegistryMsg, StartStream, StreamHandle,
};
use crate::session::{SessionArgs, SessionMsg};
use crate::supervisor::{SessionCounters, SessionSupervisor, SupervisorMsg};
use crate::{ActorsError, Services};

const MAX_RESTARTS: usize = 5;
const RESTART_WINDOW: Duration = Duration::from_secs(60);
/// Bound on an internal request to a shared actor (they answer in
/// microseconds; this only matters if one is wedged).
const CALL_TIMEOUT: Duration = Duration::from_secs(5);

/// The current refs of the shared actors (replaced when one restarts).
#[derive(Default)]
pub(crate) struct Slots {
    registry: RwLock<Option<ActorRef<RegistryMsg>>>,
    supervisor: RwLock<Option<ActorRef<SupervisorMsg>>>,
    rate_limiter: RwLock<Option<ActorRef<RateLimiterMsg>>>,
    quota_keeper: RwLock<Option<ActorRef<QuotaMsg>>>,
    persister: RwLock<Option<ActorRef<PersisterMsg>>>,
}

impl Slots {
    /// Hands an answer to the Persister and waits (at most `timeout`) until
    /// it is durable, in the store or the spool.
    pub(crate) async fn persist(&self, answer: FinishedAnswer, timeout: Duration) {
        let id = answer.message_id.clone();
        let stored = ask(read(&self.persister), |reply| {
            PersisterMsg::Answer(answer, Some(reply))
        });
        match tokio::time::timeout(timeout, stored).await {
            Ok(Ok(())) => {}
            _ => tracing::error!(message_id = %id, "the answer was not confirmed durable in time"),
        }
    }

    pub(crate) fn audit(&self, record: AuditRecord) {
        if let Some(persister) = read(&self.persister) {
            let _ = persister.cast(PersisterMsg::Audit(record));
        }
    }

    /// Ends a quota reservation (fire and forget: the QuotaKeeper never
    /// loses a settle once it has it).
    pub(crate) fn settle(
        &self,
        user: &str,
        month: &str,
        id: &str,
        tokens: u64,
        count_request: bool,
    ) {
        match read(&self.quota_keeper) {
            Some(keeper) => {
                let _ = keeper.cast(QuotaMsg::Settle {
                    user: user.to_owned(),
                    month: month.to_owned(),
                    id: id.to_owned(),
                    tokens,
                    count_request,
                });
            }
            None => tracing::error!(%id, "no QuotaKeeper to settle with"),
        }
    }
}

/// The answer of a call to a shared actor, or why there is none.
async fn ask<M, T>(
    actor: Option<ActorRef<M>>,
    build: impl FnOnce(ractor::RpcReplyPort<T>) -> M,
) -> Result<T, ActorsError>
where
    M: ractor::Message,
    T: Send + 'static,
{
    let actor = actor.ok_or(ActorsError::Stopped)?;
    match actor
        .call(build, Some(CALL_TIMEOUT))
        .await
        .map_err(|e| ActorsError::Call(e.to_string()))?
    {
        ractor::rpc::CallResult::Success(answer) => Ok(answer),
        _ => Err(ActorsError::Call("no answer in time".into())),
    }
}

/// Counters of the actor system, for metrics and tests.
#[derive(Default)]
pub struct Counters {
    pub sessions: Arc<SessionCounters>,
    pub streams: Arc<RegistryCounters>,
    pub persister: Arc<PersisterCounters>,
    /// Restarts of shared actors by the root supervisor.
    pub restarts: AtomicU64,
}

pub struct Hub {
    pub services: Arc<Services>,
    pub counters: Arc<Counters>,
    draining: std::sync::atomic::AtomicBool,
    slots: Arc<Slots>,
    root: ActorRef<()>,
}

impl Hub {
    /// Starts the root supervisor and its children.
    pub async fn start(services: Services) -> Result<Arc<Hub>, ActorsError> {
        let services = Arc::new(services);
        let counters = Arc::new(Counters::default());
        let slots = Arc::new(Slots::default());
        let args = RootArgs {
            services: services.clone(),
            counters: counters.clone(),
            slots: slots.clone(),
        };
        let (root, _) = Actor::spawn(None, Root, args)
            .await
            .map_err(|e| ActorsError::Spawn(e.to_string()))?;
        Ok(Arc::new(Hub {
            services,
            counters,
            draining: std::sync::atomic::AtomicBool::new(false),
            slots,
            root,
        }))
    }

    /// Starts a session actor for an authenticated connection.
    pub async fn spawn_session(
        &self,
        args: SessionArgs,
    ) -> Result<ActorRef<SessionMsg>, ActorsError> {
        ask(read(&self.slots.supervisor), |port| {
            SupervisorMsg::Spawn(args, port)
        })
        .await?
        .map_err(ActorsError::Spawn)
    }

    pub(crate) async fn start_stream(&self, start: StartStream) -> Result<(), ActorsError> {
        ask(read(&self.slots.registry), |port| {
            RegistryMsg::Start(start, port)
        })
        .await?
        .map_err(ActorsError::Spawn)
    }

    /// A live or recently finished stream of `user`.
    pub async fn lookup_stream(&self, stream_id: &str, user: &str) -> Option<StreamHandle> {
        ask(read(&self.slots.registry), |reply| RegistryMsg::Lookup {
            stream_id: stream_id.to_owned(),
            user: user.to_owned(),
            reply,
        })
        .await
        .ok()
        .flatten()
    }

    /// Asks every connection to close (server shutdown).
    pub fn close_all(&self, code: skald_protocol::CloseCode, reason: &str) {
        if let Some(supervisor) = read(&self.slots.supervisor) {
            let _ = supervisor.cast(SupervisorMsg::CloseAll(code, reason.to_owned()));
        }
    }

    /// GDPR erasure of everything the server holds about `user`: live and
    /// resumable streams, limit and quota state, and every stored record.
    pub async fn erase_user(&self, user: &str) -> Result<(), String> {
        let streams = ask(read(&self.slots.registry), |reply| {
            RegistryMsg::ForgetUser {
                user: user.to_owned(),
                reply,
            }
        })
        .await
        .map_err(|e| e.to_string())?;
        let months = crate::time::recent_months(self.now_ms(), 3);
        self.services
            .limits_guard
            .forget(
                &[format!("user:{user}")],
                &[format!("conn:{user}")],
                user,
                &months,
            )
            .await
            .map_err(|e| e.to_string())?;
        self.services
            .store
            .erase_user(user)
            .await
            .map_err(|e| e.to_string())?;
        tracing::info!(streams, "a user was erased");
        Ok(())
    }

    /// From now on, new messages are refused (`unavailable`): the server
    /// is draining before it stops.
    pub fn start_draining(&self) {
        self.draining.store(true, Ordering::Relaxed);
    }

    pub fn is_draining(&self) -> bool {
        self.draining.load(Ordering::Relaxed)
    }

    /// How many streams are still generating.
    pub async fn live_streams(&self) -> usize {
        ask(read(&self.slots.registry), RegistryMsg::LiveCount)
            .await
            .unwrap_or(0)
    }

    /// Ends every live stream with `unavailable` (the drain timed out).
    pub fn abort_streams(&self, message: &str) {
        if let Some(registry) = read(&self.slots.registry) {
            let _ = registry.cast(RegistryMsg::AbortAll(skald_protocol::ErrorBody {
                code: skald_protocol::ErrorCode::Unavailable,
                message: message.to_owned(),
            }));
        }
    }

    /// Records an audit event (through the Persister: never lost).
    pub fn audit(&self, record: AuditRecord) {
        self.slots.audit(record);
    }

    /// Waits until every answer handed to the Persister so far is durable.
    pub async fn sync_storage(&self) -> Result<(), ActorsError> {
        ask(read(&self.slots.persister), PersisterMsg::Sync).await
    }

    /// The time limits and quotas use.
    pub fn now_ms(&self) -> i64 {
        self.services.clock.now_ms()
    }

    /// One event against a rate limit (`key` names who is limited, e.g.
    /// `user:u-42` or `addr:127.0.0.1`).
    pub async fn check_rate(
        &self,
        key: &str,
        per_minute: u32,
    ) -> Result<RateDecision, LimitsError> {
        let now_ms = self.now_ms();
        ask(read(&self.slots.rate_limiter), |reply| {
            RateLimiterMsg::Check {
                key: key.to_owned(),
                limit: RateLimit { per_minute },
                now_ms,
                reply,
            }
        })
        .await
        .map_err(unavailable)?
    }

    /// Takes (or refreshes) one of the user's connection slots.
    pub async fn acquire_connection(&self, user: &str, holder: &str) -> Result<bool, LimitsError> {
        let limits = &self.services.limits;
        let now_ms = self.now_ms();
        ask(read(&self.slots.rate_limiter), |reply| {
            RateLimiterMsg::AcquireSlot {
                key: format!("conn:{user}"),
                holder: holder.to_owned(),
                max: limits.max_connections_per_user,
                lease_ms: limits.connection_lease_ms,
                now_ms,
                reply,
            }
        })
        .await
        .map_err(unavailable)?
    }

    pub fn release_connection(&self, user: &str, holder: &str) {
        if let Some(limiter) = read(&self.slots.rate_limiter) {
            let _ = limiter.cast(RateLimiterMsg::ReleaseSlot {
                key: format!("conn:{user}"),
                holder: holder.to_owned(),
            });
        }
    }

    pub(crate) async fn reserve(
        &self,
        reservation: Reservation,
        limits: QuotaLimits,
    ) -> Result<ReserveDecision, LimitsError> {
        let lease_ms = self.services.limits.reservation_lease_ms;
        let now_ms = self.now_ms();
        ask(read(&self.slots.quota_keeper), |reply| QuotaMsg::Reserve {
            reservation,
            limits,
            lease_ms,
            now_ms,
            reply,
        })
        .await
        .map_err(unavailable)?
    }

    pub(crate) fn settle(
        &self,
        user: &str,
        month: &str,
        id: &str,
        tokens: u64,
        count_request: bool,
    ) {
        self.slots.settle(user, month, id, tokens, count_request);
    }

    /// The user's usage this month (UTC): the month and its counters.
    pub async fn usage(&self, user: &str) -> Result<(String, QuotaUsage), LimitsError> {
        let now_ms = self.now_ms();
        let month = crate::time::month_of(now_ms);
        let lease_ms = self.services.limits.reservation_lease_ms;
        let usage = ask(read(&self.slots.quota_keeper), |reply| QuotaMsg::Usage {
            user: user.to_owned(),
            month: month.clone(),
            lease_ms,
            now_ms,
            reply,
        })
        .await
        .map_err(unavailable)??;
        Ok((month, usage))
    }

    /// False once the root supervisor gave up (restart intensity exceeded)
    /// or was stopped.
    pub fn is_alive(&self) -> bool {
        matches!(
            self.root.get_status(),
            ractor::ActorStatus::Running
                | ractor::ActorStatus::Starting
                | ractor::ActorStatus::Upgrading
        )
    }

    /// Stops every actor (and with them every stream).
    pub async fn shutdown(&self) {
        let _ = self
            .root
            .stop_and_wait(Some("shutdown".into()), Some(CALL_TIMEOUT))
            .await;
    }
}

fn unavailable(e: ActorsError) -> LimitsError {
    LimitsError::Unavailable(e.to_string())
}

fn read<T: Clone>(slot: &RwLock<Option<T>>) -> Option<T> {
    slot.read().unwrap_or_else(|p| p.into_inner()).clone()
}

fn write<T>(slot: &RwLock<Option<T>>, value: Option<T>) {
    *slot.write().unwrap_or_else(|p| p.into_inner()) = value;
}

struct Root;

#[derive(Debug, Clone, Copy)]
enum Child {
    Registry,
    Supervisor,
    RateLimiter,
    QuotaKeeper,
    Persister,
}

struct RootArgs {
    services: Arc<Services>,
    counters: Arc<Counters>,
    slots: Arc<Slots>,
}

struct RootState {
    args: RootArgs,
    restarts: VecDeque<Instant>,
}

impl RootState {
    async fn spawn_registry(&self, root: ActorCell) -> Result<(), ActorProcessingErr> {
        let args = RegistryArgs {
            services: self.args.services.clone(),
            counters: self.args.counters.streams.clone(),
            slots: self.args.slots.clone(),
        };
        let (registry, _) = Actor::spawn_linked(None, Registry, args, root).await?;
        write(&self.args.slots.registry, Some(registry));
        Ok(())
    }

    async fn spawn_rate_limiter(&self, root: ActorCell) -> Result<(), ActorProcessingErr> {
        let guard = self.args.services.limits_guard.clone();
        let (actor, _) = Actor::spawn_linked(None, RateLimiter, guard, root).await?;
        write(&self.args.slots.rate_limiter, Some(actor));
        Ok(())
    }

    async fn spawn_quota_keeper(&self, root: ActorCell) -> Result<(), ActorProcessingErr> {
        let guard = self.args.services.limits_guard.clone();
        let (actor, _) = Actor::spawn_linked(None, QuotaKeeper, guard, root).await?;
        write(&self.args.slots.quota_keeper, Some(actor));
        Ok(())
    }

    async fn spawn_persister(&self, root: ActorCell) -> Result<(), ActorProcessingErr> {
        let args = PersisterArgs {
            store: self.args.services.store.clone(),
            spool_path: self.args.services.spool_path.clone(),
            counters: self.args.counters.persister.clone(),
        };
        let (actor, _) = Actor::spawn_linked(None, Persister, args, root).await?;
        write(&self.args.slots.persister, Some(actor));
        Ok(())
    }

    async fn spawn_supervisor(&self, root: ActorCell) -> Result<(), ActorProcessingErr> {
        let counters = self.args.counters.sessions.clone();
        let (supervisor, _) = Actor::spawn_linked(None, SessionSupervisor, counters, root).await?;
        write(&self.args.slots.supervisor, Some(supervisor));
        Ok(())
    }
}

impl Actor for Root {
    type Msg = ();
    type State = RootState;
    type Arguments = RootArgs;

    async fn pre_start(
        &self,
        myself: ActorRef<()>,
        args: RootArgs,
    ) -> Result<RootState, ActorProcessingErr> {
        let state = RootState {
            args,
            restarts: VecDeque::new(),
        };
        state.spawn_persister(myself.get_cell()).await?;
        state.spawn_rate_limiter(myself.get_cell()).await?;
        state.spawn_quota_keeper(myself.get_cell()).await?;
        state.spawn_registry(myself.get_cell()).await?;
        state.spawn_supervisor(myself.get_cell()).await?;
        Ok(state)
    }

    async fn post_stop(
        &self,
        _myself: ActorRef<()>,
        state: &mut RootState,
    ) -> Result<(), ActorProcessingErr> {
        write(&state.args.slots.registry, None);
        write(&state.args.slots.supervisor, None);
        write(&state.args.slots.rate_limiter, None);
        write(&state.args.slots.quota_keeper, None);
        write(&state.args.slots.persister, None);
        Ok(())
    }

    async fn handle_supervisor_evt(
        &self,
        myself: ActorRef<()>,
        event: SupervisionEvent,
        state: &mut RootState,
    ) -> Result<(), ActorProcessingErr> {
        let (cell, why) = match event {
            SupervisionEvent::ActorFailed(cell, err) => (cell, err.to_string()),
            SupervisionEvent::ActorTerminated(cell, _, reason) => {
                (cell, reason.unwrap_or_else(|| "stopped".into()))
            }
            _ => return Ok(()),
        };
        let id = cell.get_id();
        let slots = &state.args.slots;
        let which = if read(&slots.registry).is_some_and(|r| r.get_id() == id) {
            Child::Registry
        } else if read(&slots.supervisor).is_some_and(|r| r.get_id() == id) {
            Child::Supervisor
        } else if read(&slots.rate_limiter).is_some_and(|r| r.get_id() == id) {
            Child::RateLimiter
        } else if read(&slots.quota_keeper).is_some_and(|r| r.get_id() == id) {
            Child::QuotaKeeper
        } else if read(&slots.persister).is_some_and(|r| r.get_id() == id) {
            Child::Persister
        } else {
            return Ok(());
        };
        let now = Instant::now();
        state
            .restarts
            .retain(|t| now.duration_since(*t) < RESTART_WINDOW);
        if state.restarts.len() >= MAX_RESTARTS {
            tracing::error!(%why, "a shared actor failed too often; stopping the actor system");
            myself.stop(Some("restart intensity exceeded".into()));
            return Ok(());
        }
        state.restarts.push_back(now);
        state.args.counters.restarts.fetch_add(1, Ordering::Relaxed);
        tracing::error!(%why, actor = ?which, "a shared actor ended; restarting it");
        let root = myself.get_cell();
        match which {
            Child::Registry => state.spawn_registry(root).await?,
            Child::Supervisor => state.spawn_supervisor(root).await?,
            Child::RateLimiter => state.spawn_rate_limiter(root).await?,
            Child::QuotaKeeper => state.spawn_quota_keeper(root).await?,
            Child::Persister => state.spawn_persister(root).await?,
        }
        Ok(())
    }
}
