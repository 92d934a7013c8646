//! The session supervisor: parent of every Session actor.
//!
//! ractor's default `handle_supervisor_evt` stops a supervisor when any
//! child stops, which would end every session when one client leaves. Here a
//! child's normal end only removes it; a child's failure (a panic) closes
//! that connection with 1011 and is counted. Nothing is restarted: a
//! session's state is its connection, which is gone.

use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;

use ractor::{Actor, ActorId, ActorProcessingErr, ActorRef, RpcReplyPort, SupervisionEvent};
use skald_protocol::{CloseCode, ErrorCode, ServerFrame};

use crate::outbox::Outbox;
use crate::session::{Session, SessionArgs, SessionMsg};
use crate::slot::Slot;
use crate::ActorsError;

pub enum SupervisorMsg {
    /// Start a session for an authenticated connection.
    Spawn(
        Box<SessionArgs>,
        RpcReplyPort<Result<ActorRef<SessionMsg>, ActorsError>>,
    ),
    /// Close every connection (server shutdown).
    CloseAll(CloseCode, String),
}

/// Counters other parts read (metrics, tests).
#[derive(Default)]
pub struct SessionCounters {
    /// Sessions open now (the `skald_sessions_open` gauge).
    pub open: AtomicU64,
}

pub struct SessionSupervisor;

pub struct SupervisorState {
    counters: Arc<SessionCounters>,
    outboxes: HashMap<ActorId, Arc<Outbox>>,
}

impl Actor for SessionSupervisor {
    type Msg = SupervisorMsg;
    type State = SupervisorState;
    type Arguments = Arc<SessionCounters>;

    async fn pre_start(
        &self,
        _myself: ActorRef<SupervisorMsg>,
        counters: Arc<SessionCounters>,
    ) -> Result<SupervisorState, ActorProcessingErr> {
        Ok(SupervisorState {
            counters,
            outboxes: HashMap::new(),
        })
    }

    async fn handle(
        &self,
        myself: ActorRef<SupervisorMsg>,
        message: SupervisorMsg,
        state: &mut SupervisorState,
    ) -> Result<(), ActorProcessingErr> {
        match message {
            SupervisorMsg::Spawn(args, reply) => {
                let outbox = args.outbox.clone();
                let spawned =
                    Box::pin(Actor::spawn_linked(None, Session, *args, myself.get_cell())).await;
                let result = match spawned {
                    Ok((session, _)) => {
                        state.outboxes.insert(session.get_id(), outbox);
                        state.counters.open.fetch_add(1, Ordering::Relaxed);
                        metrics::counter!("skald_sessions_started_total").increment(1);
                        Ok(session)
                    }
                    Err(e) => Err(ActorsError::Spawn(e)),
                };
                let _ = reply.send(result);
            }
            SupervisorMsg::CloseAll(code, reason) => {
                for outbox in state.outboxes.values() {
                    outbox.close(code, reason.clone());
                }
            }
        }
        Ok(())
    }

    async fn handle_supervisor_evt(
        &self,
        _myself: ActorRef<SupervisorMsg>,
        event: SupervisionEvent,
        state: &mut SupervisorState,
    ) -> Result<(), ActorProcessingErr> {
        match event {
            SupervisionEvent::ActorTerminated(cell, _, _)
                if state.outboxes.remove(&cell.get_id()).is_some() =>
            {
                state.counters.open.fetch_sub(1, Ordering::Relaxed);
            }
            SupervisionEvent::ActorFailed(cell, err) => {
                if let Some(outbox) = state.outboxes.remove(&cell.get_id()) {
                    state.counters.open.fetch_sub(1, Ordering::Relaxed);
                    metrics::counter!("skald_session_panics_total").increment(1);
                    tracing::error!(error = %err, "session failed; closing its connection with 1011");
                    outbox.push(&ServerFrame::error(
                        ErrorCode::Internal,
                        "internal error; the session was stopped",
                    ));
                    outbox.close(CloseCode::Internal, "internal error");
                }
            }
            _ => {}
        }
        Ok(())
    }
}

/// The calls the hub makes to the session supervisor.
impl Slot<SupervisorMsg> {
    pub async fn spawn(&self, args: SessionArgs) -> Result<ActorRef<SessionMsg>, ActorsError> {
        self.call(|reply| SupervisorMsg::Spawn(Box::new(args), reply))
            .await?
    }

    pub fn close_all(&self, code: CloseCode, reason: &str) {
        let _ = self.cast(SupervisorMsg::CloseAll(code, reason.to_owned()));
    }
}
