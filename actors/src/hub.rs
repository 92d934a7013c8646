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

#[derive(Default)]
struct Slots {
    registry: RwLock<Option<ActorRef<RegistryMsg>>>,
    supervisor: RwLock<Option<ActorRef<SupervisorMsg>>>,
}

/// Counters of the actor system, for metrics and tests.
#[derive(Default)]
pub struct Counters {
    pub sessions: Arc<SessionCounters>,
    pub streams: Arc<RegistryCounters>,
    /// Restarts of shared actors by the root supervisor.
    pub restarts: AtomicU64,
}

pub struct Hub {
    pub services: Arc<Services>,
    pub counters: Arc<Counters>,
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
            slots,
            root,
        }))
    }

    fn registry(&self) -> Result<ActorRef<RegistryMsg>, ActorsError> {
        read(&self.slots.registry).ok_or(ActorsError::Stopped)
    }

    fn supervisor(&self) -> Result<ActorRef<SupervisorMsg>, ActorsError> {
        read(&self.slots.supervisor).ok_or(ActorsError::Stopped)
    }

    /// Starts a session actor for an authenticated connection.
    pub async fn spawn_session(
        &self,
        args: SessionArgs,
    ) -> Result<ActorRef<SessionMsg>, ActorsError> {
        let supervisor = self.supervisor()?;
        let reply = supervisor
            .call(|port| SupervisorMsg::Spawn(args, port), Some(CALL_TIMEOUT))
            .await
            .map_err(|e| ActorsError::Call(e.to_string()))?;
        match reply {
            ractor::rpc::CallResult::Success(result) => result.map_err(ActorsError::Spawn),
            _ => Err(ActorsError::Call(
                "session supervisor did not answer".into(),
            )),
        }
    }

    pub(crate) async fn start_stream(&self, start: StartStream) -> Result<(), ActorsError> {
        let registry = self.registry()?;
        match registry
            .call(|port| RegistryMsg::Start(start, port), Some(CALL_TIMEOUT))
            .await
            .map_err(|e| ActorsError::Call(e.to_string()))?
        {
            ractor::rpc::CallResult::Success(result) => result.map_err(ActorsError::Spawn),
            _ => Err(ActorsError::Call("stream registry did not answer".into())),
        }
    }

    /// A live or recently finished stream of `user`.
    pub async fn lookup_stream(&self, stream_id: &str, user: &str) -> Option<StreamHandle> {
        let registry = self.registry().ok()?;
        let reply = registry
            .call(
                |reply| RegistryMsg::Lookup {
                    stream_id: stream_id.to_owned(),
                    user: user.to_owned(),
                    reply,
                },
                Some(CALL_TIMEOUT),
            )
            .await
            .ok()?;
        match reply {
            ractor::rpc::CallResult::Success(found) => found,
            _ => None,
        }
    }

    /// Asks every connection to close (server shutdown).
    pub fn close_all(&self, code: skald_protocol::CloseCode, reason: &str) {
        if let Ok(supervisor) = self.supervisor() {
            let _ = supervisor.cast(SupervisorMsg::CloseAll(code, reason.to_owned()));
        }
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

fn read<T: Clone>(slot: &RwLock<Option<T>>) -> Option<T> {
    slot.read().unwrap_or_else(|p| p.into_inner()).clone()
}

fn write<T>(slot: &RwLock<Option<T>>, value: Option<T>) {
    *slot.write().unwrap_or_else(|p| p.into_inner()) = value;
}

struct Root;

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
        };
        let (registry, _) = Actor::spawn_linked(None, Registry, args, root).await?;
        write(&self.args.slots.registry, Some(registry));
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
        let is_registry = read(&state.args.slots.registry).is_some_and(|r| r.get_id() == id);
        let is_supervisor = read(&state.args.slots.supervisor).is_some_and(|r| r.get_id() == id);
        if !is_registry && !is_supervisor {
            return Ok(());
        }
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
        tracing::error!(%why, registry = is_registry, "a shared actor ended; restarting it");
        if is_registry {
            state.spawn_registry(myself.get_cell()).await?;
        } else {
            state.spawn_supervisor(myself.get_cell()).await?;
        }
        Ok(())
    }
}
