//! The stream registry: starts Stream actors, supervises them, and keeps
//! every live or recently finished stream findable by id for
//! `resume_window`, so that `resume` and `cancel` reach a stream from any
//! connection of its user.
//!
//! Streams are its children (not the sessions'), because a stream outlives
//! the connection that started it. A stream that fails has concluded
//! itself already (see `stream.rs`: stored, `done`, settled); the registry
//! counts the failure and keeps the entry for resume.
//!
//! It also **checkpoints** live answers: every `checkpoint_interval` it
//! hands the Persister, in one batch, the text of each live stream that
//! grew since its last checkpoint (and, on a shared store, of every live
//! stream at least every [`HEARTBEAT`], so other instances can tell a
//! quiet stream from a dead one).

use std::collections::HashMap;
use std::sync::Arc;
use std::time::Duration;

use ractor::{Actor, ActorId, ActorProcessingErr, ActorRef, RpcReplyPort, SupervisionEvent};
use skald_protocol::{ErrorBody, StreamId, UserId};
use tokio::time::Instant;

use crate::limits::quota_keeper::QuotaMsg;
use crate::persister::PersisterMsg;
use crate::ports::store::AnswerCheckpoint;
use crate::slot::Slot;
use crate::stream::{Generation, StreamActor, StreamArgs, StreamMsg};
use crate::stream_log::StreamLog;
use crate::time::Month;
use crate::{ActorsError, Services};

/// On a shared store, a live stream is checkpointed at least this often,
/// grown or not.
pub const HEARTBEAT: Duration = Duration::from_secs(20);

pub enum RegistryMsg {
    /// Start a Stream actor for `log`.
    Start(Box<StartStream>, RpcReplyPort<Result<(), ActorsError>>),
    /// Find a stream of `user` (another user's stream is not found).
    Lookup {
        stream_id: StreamId,
        user: UserId,
        reply: RpcReplyPort<Option<StreamHandle>>,
    },
    /// Forget streams that ended more than `resume_window` ago.
    Sweep,
    /// Checkpoint live answers (self-scheduled).
    Checkpoint,
    /// How many streams are still generating.
    LiveCount(RpcReplyPort<usize>),
    /// Server shutdown: end every live stream with this error.
    AbortAll(ErrorBody),
    /// GDPR erasure: cancel the user's live streams and forget all of them.
    ForgetUser {
        user: UserId,
        reply: RpcReplyPort<usize>,
    },
}

pub struct StartStream {
    pub log: Arc<StreamLog>,
    /// The request, or the upstream request that began before the stream
    /// (while the exchange was made durable).
    pub generation: Generation,
    pub prompt_tokens_estimate: u64,
    /// The month of the stream's quota reservation (its id is the stream
    /// id), settled with the stream's usage when it ends.
    pub quota_month: Month,
}

/// A stream as a session finds it: here, or run by another instance.
#[derive(Clone)]
pub struct StreamHandle {
    pub log: Arc<StreamLog>,
    /// `None` once the stream ended, or when another instance runs it.
    pub actor: Option<ActorRef<StreamMsg>>,
    /// Who runs it, when it is another instance (the log is then a mirror).
    pub remote: Option<crate::ports::bus::StreamMeta>,
}

pub struct Registry;

pub struct RegistryArgs {
    pub services: Arc<Services>,
    pub persister: Arc<Slot<PersisterMsg>>,
    pub quota: Arc<Slot<QuotaMsg>>,
}

pub struct RegistryState {
    args: RegistryArgs,
    streams: HashMap<StreamId, Entry>,
    by_actor: HashMap<ActorId, StreamId>,
}

struct Entry {
    log: Arc<StreamLog>,
    actor: Option<ActorRef<StreamMsg>>,
    ended_at: Option<Instant>,
    /// Bytes of the answer the last checkpoint held, and when it was taken.
    checkpointed: (usize, Instant),
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
        let sessions = &args.services.sessions;
        let every = (sessions.resume_window() / 4).max(Duration::from_millis(250));
        myself.send_interval(every, || RegistryMsg::Sweep);
        myself.send_interval(sessions.checkpoint_interval(), || RegistryMsg::Checkpoint);
        Ok(RegistryState {
            args,
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
                let result = state.start(&myself, *start).await;
                let _ = reply.send(result);
            }
            RegistryMsg::Lookup {
                stream_id,
                user,
                reply,
            } => {
                let found = state
                    .streams
                    .get(&stream_id)
                    .filter(|e| e.log.ids.user == user)
                    .map(|e| StreamHandle {
                        log: e.log.clone(),
                        actor: e.actor.clone(),
                        remote: None,
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
                let window = state.args.services.sessions.resume_window();
                let now = Instant::now();
                state
                    .streams
                    .retain(|_, e| e.ended_at.is_none_or(|t| now.duration_since(t) < window));
            }
            RegistryMsg::Checkpoint => state.checkpoint(),
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
        if let Some(entry) = state.streams.get_mut(&stream_id) {
            entry.actor = None;
            entry.ended_at = Some(Instant::now());
        }
        if let Some(err) = failure {
            metrics::counter!("skald_stream_panics_total").increment(1);
            tracing::error!(%stream_id, error = %err, "stream actor failed");
        }
        Ok(())
    }
}

impl RegistryState {
    async fn start(
        &mut self,
        myself: &ActorRef<RegistryMsg>,
        start: StartStream,
    ) -> Result<(), ActorsError> {
        let services = &self.args.services;
        let sessions = &services.sessions;
        let args = StreamArgs {
            log: start.log.clone(),
            generation: start.generation,
            prompt_tokens_estimate: start.prompt_tokens_estimate,
            quota_month: start.quota_month,
            model: services.model.clone(),
            persister: self.args.persister.clone(),
            quota: self.args.quota.clone(),
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
        .await?;
        metrics::counter!("skald_streams_started_total").increment(1);
        let stream_id = start.log.ids.stream_id.clone();
        self.by_actor.insert(actor.get_id(), stream_id.clone());
        self.streams.insert(
            stream_id,
            Entry {
                log: start.log,
                actor: Some(actor),
                ended_at: None,
                checkpointed: (0, Instant::now()),
            },
        );
        Ok(())
    }

    /// One batch of checkpoints: the live answers that grew (and, on a
    /// shared store, those quiet for a heartbeat).
    fn checkpoint(&mut self) {
        let heartbeat = self.args.services.store.is_shared();
        let now = Instant::now();
        let at_ms = crate::time::now_ms();
        let mut batch = Vec::new();
        for entry in self.streams.values_mut().filter(|e| e.actor.is_some()) {
            let (known, when) = entry.checkpointed;
            let due = heartbeat && now.duration_since(when) >= HEARTBEAT;
            let Some(content) = entry.log.unfinished_text((!due).then_some(known)) else {
                continue;
            };
            entry.checkpointed = (content.len(), now);
            batch.push(AnswerCheckpoint {
                conversation_id: entry.log.ids.conversation_id.clone(),
                message_id: entry.log.ids.message_id.clone(),
                content,
                at_ms,
            });
        }
        self.args.persister.checkpoint(batch);
    }
}

/// The calls sessions and the hub make to the registry.
impl Slot<RegistryMsg> {
    pub async fn start(&self, start: StartStream) -> Result<(), ActorsError> {
        self.call(|reply| RegistryMsg::Start(Box::new(start), reply))
            .await?
    }

    /// A live or recently finished stream of `user`.
    pub async fn lookup(&self, stream_id: &StreamId, user: &UserId) -> Option<StreamHandle> {
        self.call(|reply| RegistryMsg::Lookup {
            stream_id: stream_id.clone(),
            user: user.clone(),
            reply,
        })
        .await
        .ok()
        .flatten()
    }
}
