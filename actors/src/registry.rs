//! The stream registry: starts Stream actors, supervises them, and keeps
//! every live or recently finished stream findable by id for
//! `resume_window`, so that `resume` and `cancel` reach a stream from any
//! connection of its user.
//!
//! Streams are its children (not the sessions'), because a stream outlives
//! the connection that started it. A stream that fails has already sent its
//! `done` through its log (see `stream.rs`); the registry records the
//! failure, stores what was generated, and keeps the entry for resume.

use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;

use ractor::{Actor, ActorId, ActorProcessingErr, ActorRef, RpcReplyPort, SupervisionEvent};
use tokio::time::Instant;

use crate::hub::Slots;
use crate::ports::model::ModelRequest;
use crate::stream::{StreamActor, StreamArgs, StreamMsg};
use crate::stream_log::StreamLog;
use crate::Services;

pub enum RegistryMsg {
    /// Start a Stream actor for `log`.
    Start(StartStream, RpcReplyPort<Result<(), String>>),
    /// Find a stream of `user` (another user's stream is not found).
    Lookup {
        stream_id: String,
        user: String,
        reply: RpcReplyPort<Option<StreamHandle>>,
    },
    /// Forget streams that ended more than `resume_window` ago.
    Sweep,
    /// How many streams are still generating.
    LiveCount(RpcReplyPort<usize>),
    /// Server shutdown: end every live stream with this error.
    AbortAll(skald_protocol::ErrorBody),
    /// GDPR erasure: cancel the user's live streams and forget all of them.
    ForgetUser {
        user: String,
        reply: RpcReplyPort<usize>,
    },
}

pub struct StartStream {
    pub log: Arc<StreamLog>,
    pub request: ModelRequest,
    pub prompt_tokens_estimate: u64,
    /// The month of the stream's quota reservation (its id is the stream
    /// id), settled with the stream's usage when it ends.
    pub quota_month: String,
}

/// A stream as the registry knows it.
#[derive(Clone)]
pub struct StreamHandle {
    pub log: Arc<StreamLog>,
    /// `None` once the stream ended.
    pub actor: Option<ActorRef<StreamMsg>>,
}

/// Counters other parts read (metrics, tests).
#[derive(Default)]
pub struct RegistryCounters {
    pub started: AtomicU64,
    pub failed: AtomicU64,
}

pub struct Registry;

pub struct RegistryArgs {
    pub services: Arc<Services>,
    pub counters: Arc<RegistryCounters>,
    pub(crate) slots: Arc<Slots>,
}

pub struct RegistryState {
    services: Arc<Services>,
    counters: Arc<RegistryCounters>,
    slots: Arc<Slots>,
    streams: HashMap<Arc<str>, Entry>,
    by_actor: HashMap<ActorId, Arc<str>>,
}

struct Entry {
    log: Arc<StreamLog>,
    actor: Option<ActorRef<StreamMsg>>,
    ended_at: Option<Instant>,
    quota_month: String,
}

impl Actor for Registry {
    type Msg = RegistryMsg;
    type State = RegistryState;
    type Arguments = RegistryArgs;

    async fn pre_start(
        &self,
        myself: ActorRef<RegistryMsg>,
        args: RegistryArgs,
    ) -> Result<RegistryState, ActorProcessingErr> {
        let every = (args.services.sessions.resume_window() / 4).max(Duration::from_millis(250));
        myself.send_interval(every, || RegistryMsg::Sweep);
        Ok(RegistryState {
            services: args.services,
            counters: args.counters,
            slots: args.slots,
            streams: HashMap::new(),
            by_actor: HashMap::new(),
        })
    }

    async fn handle(
        &self,
        myself: ActorRef<RegistryMsg>,
        message: RegistryMsg,
        state: &mut RegistryState,
    ) -> Result<(), ActorProcessingErr> {
        match message {
            RegistryMsg::Start(start, reply) => {
                let result = state.start(&myself, start).await;
                let _ = reply.send(result);
            }
            RegistryMsg::Lookup {
                stream_id,
                user,
                reply,
            } => {
                let found = state
                    .streams
                    .get(stream_id.as_str())
                    .filter(|e| e.log.ids.user == user)
                    .map(|e| StreamHandle {
                        log: e.log.clone(),
                        actor: e.actor.clone(),
                    });
                let _ = reply.send(found);
            }
            RegistryMsg::LiveCount(reply) => {
                let live = state.streams.values().filter(|e| e.actor.is_some()).count();
                let _ = reply.send(live);
            }
            RegistryMsg::AbortAll(error) => {
                for actor in state.streams.values().filter_map(|e| e.actor.as_ref()) {
                    let _ = actor.cast(StreamMsg::Abort(error.clone()));
                }
            }
            RegistryMsg::ForgetUser { user, reply } => {
                let mut forgotten = 0;
                state.streams.retain(|_, e| {
                    if e.log.ids.user != user {
                        return true;
                    }
                    if let Some(actor) = &e.actor {
                        let _ = actor.cast(StreamMsg::Cancel);
                    }
                    forgotten += 1;
                    false
                });
                let _ = reply.send(forgotten);
            }
            RegistryMsg::Sweep => {
                let window = state.services.sessions.resume_window();
                let now = Instant::now();
                state
                    .streams
                    .retain(|_, e| e.ended_at.is_none_or(|t| now.duration_since(t) < window));
            }
        }
        Ok(())
    }

    async fn handle_supervisor_evt(
        &self,
        _myself: ActorRef<RegistryMsg>,
        event: SupervisionEvent,
        state: &mut RegistryState,
    ) -> Result<(), ActorProcessingErr> {
        let (cell, failure) = match event {
            SupervisionEvent::ActorTerminated(cell, _, _) => (cell, None),
            SupervisionEvent::ActorFailed(cell, err) => (cell, Some(err)),
            _ => return Ok(()),
        };
        let Some(stream_id) = state.by_actor.remove(&cell.get_id()) else {
            return Ok(());
        };
        let Some(entry) = state.streams.get_mut(&stream_id) else {
            return Ok(());
        };
        entry.actor = None;
        entry.ended_at = Some(Instant::now());
        // Every end (finish, cancel, failure, panic) settles the quota with
        // what was generated: the log has ended by now (see stream.rs).
        let usage = entry.log.end().map(|e| e.usage).unwrap_or_default();
        state.slots.settle(
            &entry.log.ids.user,
            &entry.quota_month,
            &stream_id,
            usage.prompt_tokens + usage.completion_tokens,
            true,
        );
        if let Some(err) = failure {
            state.counters.failed.fetch_add(1, Ordering::Relaxed);
            tracing::error!(%stream_id, error = %err, "stream actor failed");
            // Its state's Drop already finished the log with `internal`;
            // keep what was generated.
            if let Some(end) = entry.log.end() {
                let (text, _) = entry.log.text_and_tokens();
                let answer = crate::stream::finished_answer(&entry.log, text, &end);
                let slots = state.slots.clone();
                let timeout = state.services.sessions.store_timeout();
                tokio::spawn(async move { slots.persist(answer, timeout).await });
            }
        }
        Ok(())
    }
}

impl RegistryState {
    async fn start(
        &mut self,
        myself: &ActorRef<RegistryMsg>,
        start: StartStream,
    ) -> Result<(), String> {
        let sessions = &self.services.sessions;
        let args = StreamArgs {
            log: start.log.clone(),
            request: start.request,
            prompt_tokens_estimate: start.prompt_tokens_estimate,
            model: self.services.model.clone(),
            slots: self.slots.clone(),
            first_token_timeout: sessions.first_token_timeout(),
            token_idle_timeout: sessions.token_idle_timeout(),
            store_timeout: sessions.store_timeout(),
        };
        let (actor, _) = Box::pin(Actor::spawn_linked(
            None,
            StreamActor,
            args,
            myself.get_cell(),
        ))
        .await
        .map_err(|e| e.to_string())?;
        self.counters.started.fetch_add(1, Ordering::Relaxed);
        let stream_id = start.log.ids.stream_id.clone();
        self.by_actor.insert(actor.get_id(), stream_id.clone());
        self.streams.insert(
            stream_id,
            Entry {
                log: start.log,
                actor: Some(actor),
                ended_at: None,
                quota_month: start.quota_month,
            },
        );
        Ok(())
    }
}
