//! The Relay actor: this instance's side of the stream bus, so that any
//! instance serves any user (it exists only when a bus, Redis, is
//! configured; without one nothing here runs and no stream pays a hop).
//!
//! It owns three things:
//! - **what this instance publishes**: every stream it runs, from its first
//!   frame to its `done`. The relay listens to their logs like a connection
//!   does and, on news, reads each dirty log from where it last published and
//!   writes every stream's new frames (as cut, with their `seq`) in one
//!   pipeline; a flush that fails keeps its place and is retried, so
//!   followers never see a gap. It renews the leases of those streams.
//! - **what this instance follows**: a *mirror* log for each stream another
//!   instance runs that a connection here resumed, fed by one reader task
//!   that blocks on all of them at once; connections attach to mirrors as
//!   to local logs (same frames, same `seq`, one `done`).
//! - **orphans**: streams whose owner's lease lapsed. Any instance may find
//!   them; the one that claims one stores what was published as the answer
//!   (`finish_reason: error`, code `unavailable`), settles its quota
//!   reservation from it, and publishes its `done`, once.
//!
//! It also sends `cancel`s to the instances that own the streams and
//! receives this instance's, and carries users' events (`started`) between
//! instances (the [`UserBoard`] delivers them here).

use std::collections::{HashMap, HashSet};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use ractor::{Actor, ActorProcessingErr, ActorRef, RpcReplyPort};
use skald_protocol::{ErrorBody, ErrorCode, FinishReason, ServerFrame, StreamId, Usage, UserId};
use tokio::sync::watch;
use tokio::time::Instant;

use crate::board::UserBoard;
use crate::limits::quota_keeper::QuotaMsg;
use crate::persister::PersisterMsg;
use crate::ports::bus::{
    Control, EntryId, Incoming, PublishBatch, StreamBus, StreamFrames, StreamMeta, UserEvent,
};
use crate::ports::limits::Settle;
use crate::ports::store::AnswerEnd;
use crate::registry::RegistryMsg;
use crate::slot::Slot;
use crate::stream::StreamMsg;
use crate::stream_log::{Cursor, Listener, StreamLog};

/// How long the reader blocks for new entries before it looks at what to
/// follow again.
const READ_BLOCK: Duration = Duration::from_millis(100);
/// How long frames wait for the flush that publishes them: a flush then
/// carries every stream's frames of that time (one command, a few hundred
/// frames under load), and a follower on another instance sees a frame at
/// most this much later. A new stream is announced at once (its `started`
/// may send a client to another instance right away).
const LINGER: Duration = Duration::from_millis(5);
/// After a failed flush, when to try again.
const RETRY: Duration = Duration::from_millis(200);
/// How long the relay's start waits for its subscriptions before it lets
/// the instance serve without them (they then come in the background).
const SUBSCRIBE_WAIT: Duration = Duration::from_secs(3);
/// Orphans closed per sweep.
const ORPHANS_PER_SWEEP: usize = 64;

pub enum RelayMsg {
    /// Publish this stream, which this instance runs, until its `done`.
    Publish {
        log: Arc<StreamLog>,
        quota_month: crate::time::Month,
        prompt_tokens_estimate: u64,
    },
    /// Publish what the dirty logs have new (self-scheduled).
    Flush,
    /// A stream another instance runs (or ran), for a connection of `user`.
    Follow {
        stream_id: StreamId,
        user: UserId,
        reply: RpcReplyPort<Option<Remote>>,
    },
    /// From the reader task: published frames.
    Entries(Vec<(StreamId, Vec<(EntryId, ServerFrame)>)>),
    /// Cancel a stream another instance runs.
    Cancel(Box<StreamMeta>),
    /// Tell the user's connections on other instances.
    UserEvent(Box<UserEvent>),
    /// From the bus: this instance's control messages, users' events.
    Incoming(Incoming),
    /// Renew the leases of what this instance runs (self-scheduled).
    Leases,
    /// Look for orphans; forget mirrors past their window (self-scheduled).
    Sweep,
}

/// A followed stream: its mirror and who runs it.
#[derive(Clone)]
pub struct Remote {
    pub log: Arc<StreamLog>,
    pub meta: StreamMeta,
}

pub struct RelayArgs {
    pub bus: Arc<dyn StreamBus>,
    pub board: Arc<UserBoard>,
    pub registry: Arc<Slot<RegistryMsg>>,
    pub persister: Arc<Slot<PersisterMsg>>,
    pub quota: Arc<Slot<QuotaMsg>>,
    pub stream_lease: Duration,
    pub resume_window: Duration,
    pub store_timeout: Duration,
}

/// The relay's listener on the logs it publishes: marks them dirty and asks
/// for one flush, however many tokens arrive before it runs.
struct Dirty {
    ids: Mutex<HashSet<StreamId>>,
    flush_pending: AtomicBool,
    relay: ActorRef<RelayMsg>,
}

impl Dirty {
    /// Marks these streams as having news, without asking for a flush.
    fn add(&self, ids: impl IntoIterator<Item = StreamId>) {
        self.ids
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .extend(ids);
    }
}

impl Listener for Dirty {
    fn mark_dirty(&self, stream_id: &StreamId) {
        self.add([stream_id.clone()]);
        if !self.flush_pending.swap(true, Ordering::AcqRel) {
            self.relay.send_after(LINGER, || RelayMsg::Flush);
        }
    }
}

struct Published {
    log: Arc<StreamLog>,
    /// Where the bus has it up to.
    cursor: Cursor,
    /// Until its first flush: the meta to announce.
    announce: Option<StreamMeta>,
}

struct Mirror {
    remote: Remote,
    /// The entry the follow started after (what was published when it
    /// began had been applied).
    from: EntryId,
    ended_at: Option<Instant>,
}

pub struct Relay;

pub struct RelayState {
    args: RelayArgs,
    dirty: Arc<Dirty>,
    published: HashMap<StreamId, Published>,
    mirrors: HashMap<StreamId, Mirror>,
    /// The streams the reader task follows, each from its entry.
    follows: watch::Sender<Vec<(StreamId, EntryId)>>,
}

impl Actor for Relay {
    type Msg = RelayMsg;
    type State = RelayState;
    type Arguments = RelayArgs;

    async fn pre_start(
        &self,
        myself: ActorRef<RelayMsg>,
        args: RelayArgs,
    ) -> Result<RelayState, ActorProcessingErr> {
        let (follows, watching) = watch::channel(Vec::new());
        tokio::spawn(read_loop(args.bus.clone(), watching, myself.clone()));
        // The control channel and users' events: subscribed before this
        // instance serves (pub/sub keeps nothing: an event published before
        // the subscription is lost), or, while Redis is down at start, in
        // the background, again and again.
        let bus = args.bus.clone();
        let subscribed = tokio::time::timeout(SUBSCRIBE_WAIT, subscribe(&bus))
            .await
            .ok();
        let relay = myself.clone();
        tokio::spawn(async move {
            let mut incoming = match subscribed {
                Some(incoming) => incoming,
                None => subscribe(&bus).await,
            };
            while let Some(message) = incoming.recv().await {
                if relay.cast(RelayMsg::Incoming(message)).is_err() {
                    return;
                }
            }
        });
        myself.send_interval(args.stream_lease / 3, || RelayMsg::Leases);
        myself.send_interval(args.stream_lease / 2, || RelayMsg::Sweep);
        Ok(RelayState {
            dirty: Arc::new(Dirty {
                ids: Mutex::default(),
                flush_pending: AtomicBool::new(false),
                relay: myself,
            }),
            args,
            published: HashMap::new(),
            mirrors: HashMap::new(),
            follows,
        })
    }

    async fn handle(
        &self,
        myself: ActorRef<RelayMsg>,
        message: RelayMsg,
        state: &mut RelayState,
    ) -> Result<(), ActorProcessingErr> {
        match message {
            RelayMsg::Publish {
                log,
                quota_month,
                prompt_tokens_estimate,
            } => {
                let ids = &log.ids;
                let meta = StreamMeta {
                    owner: state.args.bus.instance().clone(),
                    stream_id: ids.stream_id.clone(),
                    user: ids.user.clone(),
                    conversation_id: ids.conversation_id.clone(),
                    message_id: ids.message_id.clone(),
                    quota_month,
                    prompt_tokens_estimate,
                };
                let listener: std::sync::Weak<dyn Listener> = Arc::downgrade(&state.dirty) as _;
                log.subscribe(listener);
                state.published.insert(
                    ids.stream_id.clone(),
                    Published {
                        log: log.clone(),
                        cursor: Cursor::default(),
                        announce: Some(meta),
                    },
                );
                // Announced now, before this session's `started` goes out.
                state.dirty.add([log.ids.stream_id.clone()]);
                state.flush(&myself).await;
            }
            RelayMsg::Flush => state.flush(&myself).await,
            RelayMsg::Follow {
                stream_id,
                user,
                reply,
            } => {
                let remote = state.follow(&stream_id, &user).await;
                let _ = reply.send(remote);
            }
            RelayMsg::Entries(batches) => state.apply(batches),
            RelayMsg::Cancel(meta) => {
                let control = Control::Cancel {
                    stream_id: meta.stream_id.clone(),
                    user: meta.user.clone(),
                };
                if let Err(e) = state.args.bus.control(&meta.owner, &control).await {
                    tracing::warn!(error = %e, stream_id = %meta.stream_id, "cancel not relayed");
                }
            }
            RelayMsg::UserEvent(mut event) => {
                event.instance = Some(state.args.bus.instance().clone());
                if let Err(e) = state.args.bus.user_event(&event).await {
                    tracing::warn!(error = %e, "user event not relayed");
                }
            }
            RelayMsg::Incoming(Incoming::Control(Control::Cancel { stream_id, user })) => {
                let found = state.args.registry.lookup(&stream_id, &user).await;
                if let Some(actor) = found.and_then(|handle| handle.actor) {
                    let _ = actor.cast(StreamMsg::Cancel);
                }
            }
            RelayMsg::Incoming(Incoming::User(event)) => {
                // This instance's own events were delivered here already.
                if event.instance.as_ref() != Some(state.args.bus.instance()) {
                    state
                        .args
                        .board
                        .deliver(&event.user, &event.origin, &event.frame);
                }
            }
            RelayMsg::Leases => {
                let live: Vec<StreamId> = state.published.keys().cloned().collect();
                let until = crate::time::now_ms() + state.args.stream_lease.as_millis() as i64;
                if let Err(e) = state.args.bus.refresh_leases(&live, until).await {
                    tracing::warn!(error = %e, streams = live.len(), "leases not renewed");
                }
            }
            RelayMsg::Sweep => state.sweep().await,
        }
        Ok(())
    }
}

impl RelayState {
    /// Publishes what every dirty log has new, in one batch.
    async fn flush(&mut self, myself: &ActorRef<RelayMsg>) {
        self.dirty.flush_pending.store(false, Ordering::Release);
        let dirty: Vec<StreamId> = {
            let mut ids = self.dirty.ids.lock().unwrap_or_else(|p| p.into_inner());
            ids.drain().collect()
        };
        let mut batch = PublishBatch::default();
        let mut progress = Vec::new();
        for id in &dirty {
            let Some(published) = self.published.get_mut(id) else {
                continue;
            };
            if let Some(meta) = published.announce.clone() {
                batch.announce.push(meta);
            }
            let read = published.log.read_from(published.cursor);
            if !read.frames.is_empty() {
                batch.frames.push(StreamFrames {
                    stream_id: id.clone(),
                    frames: read.frames,
                    ended: read.done,
                });
            }
            progress.push((id.clone(), read.next, read.done));
        }
        let entries: usize = batch.frames.iter().map(|s| s.frames.len()).sum();
        match self.args.bus.publish(&batch).await {
            Ok(()) => {
                metrics::counter!("skald_bus_frames_published_total").increment(entries as u64);
                metrics::counter!("skald_bus_flushes_total").increment(1);
                for (id, next, done) in progress {
                    if done {
                        self.published.remove(&id);
                    } else if let Some(published) = self.published.get_mut(&id) {
                        published.cursor = next;
                        published.announce = None;
                    }
                }
            }
            Err(e) => {
                // Nothing moves: the same frames (as recorded in the logs)
                // go with the next flush.
                tracing::warn!(error = %e, frames = entries, "frames not published yet");
                self.dirty.add(dirty);
                if !self.dirty.flush_pending.swap(true, Ordering::AcqRel) {
                    myself.send_after(RETRY, || RelayMsg::Flush);
                }
            }
        }
    }

    async fn follow(&mut self, stream_id: &StreamId, user: &UserId) -> Option<Remote> {
        if let Some(mirror) = self.mirrors.get(stream_id) {
            return (mirror.remote.meta.user == *user).then(|| mirror.remote.clone());
        }
        let meta = match self.args.bus.meta(stream_id).await {
            Ok(Some(meta)) if meta.user == *user => meta,
            Ok(_) => return None,
            Err(e) => {
                tracing::warn!(error = %e, %stream_id, "cannot follow a stream of another instance");
                return None;
            }
        };
        let remote = Remote {
            log: Arc::new(StreamLog::new(meta.ids())),
            meta,
        };
        // What was published so far is applied before the follower gets
        // the mirror (a resume checks its `seq` against it); the reader
        // task takes it from there.
        let from = match replay(self.args.bus.as_ref(), stream_id, &remote.log).await {
            Ok(last) => last,
            Err(e) => {
                tracing::warn!(error = %e, %stream_id, "cannot replay a stream of another instance");
                return None;
            }
        };
        let ended_at = remote.log.is_finished().then(Instant::now);
        self.mirrors.insert(
            stream_id.clone(),
            Mirror {
                remote: remote.clone(),
                from,
                ended_at,
            },
        );
        self.update_follows();
        Some(remote)
    }

    fn update_follows(&self) {
        let live: Vec<(StreamId, EntryId)> = self
            .mirrors
            .iter()
            .filter(|(_, m)| m.ended_at.is_none())
            .map(|(id, m)| (id.clone(), m.from.clone()))
            .collect();
        self.follows.send_replace(live);
    }

    fn apply(&mut self, batches: Vec<(StreamId, Vec<(EntryId, ServerFrame)>)>) {
        let mut ended = false;
        for (stream_id, entries) in batches {
            let Some(mirror) = self.mirrors.get_mut(&stream_id) else {
                continue;
            };
            for (_, frame) in &entries {
                mirror.remote.log.apply(frame);
            }
            if mirror.ended_at.is_none() && mirror.remote.log.is_finished() {
                mirror.ended_at = Some(Instant::now());
                ended = true;
            }
        }
        if ended {
            self.update_follows();
        }
    }

    async fn sweep(&mut self) {
        let window = self.args.resume_window;
        let before = self.mirrors.len();
        self.mirrors
            .retain(|_, m| m.ended_at.is_none_or(|t| t.elapsed() < window));
        if self.mirrors.len() != before {
            self.update_follows();
        }
        let lapsed = match self
            .args
            .bus
            .lapsed(crate::time::now_ms(), ORPHANS_PER_SWEEP)
            .await
        {
            Ok(lapsed) => lapsed,
            Err(e) => {
                tracing::debug!(error = %e, "no orphan sweep");
                return;
            }
        };
        for stream_id in lapsed {
            let orphans = Orphans {
                bus: self.args.bus.clone(),
                persister: self.args.persister.clone(),
                quota: self.args.quota.clone(),
                store_timeout: self.args.store_timeout,
            };
            tokio::spawn(async move { orphans.close(stream_id).await });
        }
    }
}

/// This instance's control messages and users' events, once subscribed.
async fn subscribe(bus: &Arc<dyn StreamBus>) -> tokio::sync::mpsc::Receiver<Incoming> {
    loop {
        match bus.listen().await {
            Ok(incoming) => return incoming,
            Err(e) => {
                tracing::warn!(error = %e, "stream bus: not listening yet");
                tokio::time::sleep(RETRY).await;
            }
        }
    }
}

/// Follows every stream the relay asks for, one `XREAD BLOCK` for all.
async fn read_loop(
    bus: Arc<dyn StreamBus>,
    mut follows: watch::Receiver<Vec<(StreamId, EntryId)>>,
    relay: ActorRef<RelayMsg>,
) {
    let mut cursors: HashMap<StreamId, EntryId> = HashMap::new();
    loop {
        let wanted: Vec<(StreamId, EntryId)> = follows.borrow_and_update().clone();
        cursors.retain(|id, _| wanted.iter().any(|(w, _)| w == id));
        for (id, from) in wanted {
            cursors.entry(id).or_insert(from);
        }
        if cursors.is_empty() {
            if follows.changed().await.is_err() {
                return;
            }
            continue;
        }
        let after: Vec<(StreamId, EntryId)> = cursors
            .iter()
            .map(|(s, e)| (s.clone(), e.clone()))
            .collect();
        match bus.read(&after, READ_BLOCK).await {
            Ok(batches) => {
                if batches.is_empty() {
                    continue;
                }
                for (stream_id, entries) in &batches {
                    if let Some((last, _)) = entries.last() {
                        cursors.insert(stream_id.clone(), last.clone());
                    }
                }
                if relay.cast(RelayMsg::Entries(batches)).is_err() {
                    return;
                }
            }
            Err(_) => tokio::time::sleep(RETRY).await,
        }
    }
}

/// Applies to `log` everything published of a stream so far; the last
/// entry read.
async fn replay(
    bus: &dyn StreamBus,
    stream_id: &StreamId,
    log: &StreamLog,
) -> Result<EntryId, crate::ports::bus::BusError> {
    let mut after = EntryId::start();
    loop {
        let mut read = bus
            .read(&[(stream_id.clone(), after.clone())], Duration::ZERO)
            .await?;
        let Some((_, entries)) = read.pop() else {
            return Ok(after);
        };
        let Some((last, _)) = entries.last() else {
            return Ok(after);
        };
        after = last.clone();
        for (_, frame) in &entries {
            log.apply(frame);
        }
    }
}

/// Closing the stream of an instance that died.
struct Orphans {
    bus: Arc<dyn StreamBus>,
    persister: Arc<Slot<PersisterMsg>>,
    quota: Arc<Slot<QuotaMsg>>,
    store_timeout: Duration,
}

impl Orphans {
    async fn close(self, stream_id: StreamId) {
        match self.bus.claim_orphan(&stream_id).await {
            Ok(true) => {}
            _ => return,
        }
        let Ok(Some(meta)) = self.bus.meta(&stream_id).await else {
            return;
        };
        // What was published, read in full.
        let mirror = StreamLog::new(meta.ids());
        if replay(self.bus.as_ref(), &stream_id, &mirror)
            .await
            .is_err()
        {
            return;
        }
        if mirror.is_finished() {
            return; // its `done` made it out; only the lease was left behind
        }
        let (text, tokens) = mirror.text_and_tokens();
        let end = AnswerEnd {
            finish_reason: FinishReason::Error,
            usage: Usage {
                prompt_tokens: meta.prompt_tokens_estimate,
                completion_tokens: tokens,
                reasoning_tokens: None,
                estimated: true,
            },
            error: Some(ErrorBody {
                code: ErrorCode::Unavailable,
                message: "the server running this answer stopped; this is what it had sent".into(),
            }),
        };
        // What was published: the answer and the reasoning (tool calls
        // are not published; only the OpenAI-compatible API, which does
        // not follow streams across instances, asks for them).
        let answer = crate::stream::finished_answer(&mirror, text, &end);
        if let Err(e) = self.persister.persist(answer, self.store_timeout).await {
            tracing::error!(error = %e, %stream_id, "an orphaned answer was not stored");
        }
        self.quota.settle(Settle {
            id: stream_id.clone(),
            user: meta.user.clone(),
            month: meta.quota_month,
            tokens: end.usage.total(),
            count_request: true,
        });
        let done = ServerFrame::Done {
            stream_id: stream_id.clone(),
            message_id: meta.message_id.clone(),
            finish_reason: end.finish_reason,
            usage: end.usage,
            error: end.error,
        };
        let batch = PublishBatch {
            announce: Vec::new(),
            frames: vec![StreamFrames {
                stream_id: stream_id.clone(),
                frames: vec![done.encode()],
                ended: true,
            }],
        };
        match self.bus.publish(&batch).await {
            Ok(()) => {
                metrics::counter!("skald_bus_orphans_closed_total").increment(1);
                tracing::warn!(%stream_id, owner = %meta.owner, "closed the stream of a dead instance");
            }
            Err(e) => tracing::error!(error = %e, %stream_id, "an orphan's done was not published"),
        }
    }
}

/// The calls sessions make to the relay.
impl Slot<RelayMsg> {
    pub async fn follow(&self, stream_id: &StreamId, user: &UserId) -> Option<Remote> {
        self.call(|reply| RelayMsg::Follow {
            stream_id: stream_id.clone(),
            user: user.clone(),
            reply,
        })
        .await
        .ok()
        .flatten()
    }
}
