//! The root supervisor: owns the shared actors (Persister, RateLimiter,
//! QuotaKeeper, the stream registry and the session supervisor) and puts
//! their refs in the [`Directory`]'s slots.
//!
//! If one of them fails it is restarted, at most [`MAX_RESTARTS`] times in
//! [`RESTART_WINDOW`], and the restart is counted; past that the root
//! stops, which the edge sees as `Hub::is_alive() == false` (`/readyz`
//! 503). The limiters' state that must survive a restart lives in the
//! [`crate::limits::guard::LimitsGuard`] they are given again.

use std::collections::VecDeque;
use std::sync::Arc;
use std::time::Duration;

use ractor::{Actor, ActorCell, ActorProcessingErr, ActorRef, SupervisionEvent};
use tokio::time::Instant;

use crate::directory::Directory;
use crate::hub::Counters;
use crate::limits::quota_keeper::{QuotaArgs, QuotaKeeper};
use crate::limits::rate_limiter::RateLimiter;
use crate::persister::{Persister, PersisterArgs};
use crate::registry::{Registry, RegistryArgs};
use crate::relay::{Relay, RelayArgs};
use crate::slot::Slot;
use crate::supervisor::{SessionSupervisor, SupervisorMsg};

pub const MAX_RESTARTS: usize = 5;
pub const RESTART_WINDOW: Duration = Duration::from_secs(60);

pub struct Root;

#[derive(Debug, Clone, Copy)]
enum Child {
    Registry,
    Supervisor,
    RateLimiter,
    QuotaKeeper,
    Persister,
    Relay,
}

const CHILDREN: [Child; 6] = [
    Child::Persister,
    Child::RateLimiter,
    Child::QuotaKeeper,
    Child::Registry,
    Child::Relay,
    Child::Supervisor,
];

pub struct RootArgs {
    pub directory: Arc<Directory>,
    pub supervisor: Arc<Slot<SupervisorMsg>>,
    pub counters: Arc<Counters>,
}

pub struct RootState {
    args: RootArgs,
    restarts: VecDeque<Instant>,
}

impl RootState {
    async fn spawn(&self, child: Child, root: ActorCell) -> Result<(), ActorProcessingErr> {
        let d = &self.args.directory;
        let services = &d.services;
        match child {
            Child::Persister => {
                let args = PersisterArgs {
                    store: services.store.clone(),
                    spool_path: services.spool_path.clone(),
                    counters: self.args.counters.persister.clone(),
                };
                let (actor, _) = Actor::spawn_linked(None, Persister, args, root).await?;
                d.persister.set(Some(actor));
            }
            Child::RateLimiter => {
                let guard = services.limits_guard.clone();
                let (actor, _) = Actor::spawn_linked(None, RateLimiter, guard, root).await?;
                d.rate_limiter.set(Some(actor));
            }
            Child::QuotaKeeper => {
                let args = QuotaArgs {
                    guard: services.limits_guard.clone(),
                    lease_ms: services.limits.reservation_lease_ms,
                };
                let (actor, _) = Actor::spawn_linked(None, QuotaKeeper, args, root).await?;
                d.quota_keeper.set(Some(actor));
            }
            Child::Registry => {
                let args = RegistryArgs {
                    services: services.clone(),
                    persister: d.persister.clone(),
                    quota: d.quota_keeper.clone(),
                };
                let (actor, _) = Actor::spawn_linked(None, Registry, args, root).await?;
                d.registry.set(Some(actor));
            }
            Child::Relay => {
                // Only with a stream bus: without one, nothing is published.
                let Some(bus) = services.bus.clone() else {
                    return Ok(());
                };
                let sessions = &services.sessions;
                let args = RelayArgs {
                    bus,
                    board: d.board.clone(),
                    registry: d.registry.clone(),
                    persister: d.persister.clone(),
                    quota: d.quota_keeper.clone(),
                    stream_lease: sessions.stream_lease(),
                    resume_window: sessions.resume_window(),
                    store_timeout: sessions.store_timeout(),
                };
                let (actor, _) = Actor::spawn_linked(None, Relay, args, root).await?;
                d.relay.set(Some(actor));
            }
            Child::Supervisor => {
                let counters = self.args.counters.sessions.clone();
                let (actor, _) =
                    Actor::spawn_linked(None, SessionSupervisor, counters, root).await?;
                self.args.supervisor.set(Some(actor));
            }
        }
        Ok(())
    }

    fn which(&self, id: ractor::ActorId) -> Option<Child> {
        let d = &self.args.directory;
        CHILDREN.into_iter().find(|child| match child {
            Child::Registry => d.registry.holds(id),
            Child::Supervisor => self.args.supervisor.holds(id),
            Child::RateLimiter => d.rate_limiter.holds(id),
            Child::QuotaKeeper => d.quota_keeper.holds(id),
            Child::Persister => d.persister.holds(id),
            Child::Relay => d.relay.holds(id),
        })
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
        for child in CHILDREN {
            state.spawn(child, myself.get_cell()).await?;
        }
        Ok(state)
    }

    async fn post_stop(
        &self,
        _myself: ActorRef<()>,
        state: &mut RootState,
    ) -> Result<(), ActorProcessingErr> {
        let d = &state.args.directory;
        d.registry.set(None);
        d.rate_limiter.set(None);
        d.quota_keeper.set(None);
        d.persister.set(None);
        d.relay.set(None);
        state.args.supervisor.set(None);
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
        let Some(which) = state.which(cell.get_id()) else {
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
        metrics::counter!("skald_actor_restarts_total").increment(1);
        tracing::error!(%why, actor = ?which, "a shared actor ended; restarting it");
        state.spawn(which, myself.get_cell()).await
    }
}
