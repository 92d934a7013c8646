//! The Persister actor: every finished answer and audit record goes to the
//! store through it.
//!
//! - **Batching**: answers that arrive within `BATCH_WINDOW` are written in
//!   one `finish_answers` call (one transaction, one fsync on SQLite), so a
//!   busy server does not pay a durable write per answer, and storage never
//!   sits between two tokens (it only ever runs after the last one). Audit
//!   records are batched the same way, after the answers of their flush: a
//!   flood of refused tokens (each one audited) costs a commit per window,
//!   not one each, and never holds up an answer's confirmation.
//! - **Nothing lost**: when the store fails, the batch goes to the spool, an
//!   append-only file in the data dir, fsynced, and every waiting stream is
//!   told its answer is safe. Every `DRAIN_EVERY` the spool is replayed into
//!   the store once it answers again (writes are idempotent, so a replay
//!   after a crash mid-drain is harmless), then emptied.
//! - **Checkpoints**: about once a second the registry hands over what
//!   each live answer holds so far; they are written in one batch, so a
//!   crash loses at most the last interval of an answer. At start, answers
//!   that a dead process left unfinished are closed as `error` with what
//!   was checkpointed (all of them on a store of this instance alone; on a
//!   shared store, those no instance checkpointed for a while, swept every
//!   [`SWEEP_EVERY`]).
//! - **Anonymisation**: hourly, full client addresses older than 30 days
//!   are replaced by their anonymised form.

use std::path::PathBuf;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;

use ractor::{Actor, ActorProcessingErr, ActorRef, RpcReplyPort};
use serde::{Deserialize, Serialize};
use tokio::io::AsyncWriteExt;

use crate::addresses::FULL_ADDRESS_DAYS;
use crate::ports::store::{AnswerCheckpoint, AuditRecord, FinishedAnswer, Store};
use crate::slot::Slot;
use crate::ActorsError;

const BATCH_WINDOW: Duration = Duration::from_millis(2);
const MAX_BATCH: usize = 256;
const DRAIN_EVERY: Duration = Duration::from_secs(1);
const ANONYMISE_EVERY: Duration = Duration::from_secs(3600);
/// On a shared store: how often answers no instance checkpoints any more
/// are looked for, and how long without a checkpoint makes one interrupted
/// (live answers are checkpointed at least every [`crate::registry`]
/// heartbeat, far more often).
pub const SWEEP_EVERY: Duration = Duration::from_secs(30);
pub const INTERRUPTED_AFTER: Duration = Duration::from_secs(120);

pub enum PersisterMsg {
    /// Store an answer; the reply says it is durable (in the store or the spool).
    Answer(FinishedAnswer, Option<RpcReplyPort<()>>),
    /// What live answers hold so far (best effort: a failed batch is
    /// dropped, the next one carries the same text and more).
    Checkpoints(Vec<AnswerCheckpoint>),
    Audit(AuditRecord),
    /// Close answers left unfinished by a dead instance (self-scheduled on
    /// a shared store).
    Sweep,
    /// Write what is batched (self-scheduled).
    Flush,
    /// Replay the spool if the store is back (self-scheduled).
    Drain,
    Anonymise,
    /// Reply once everything received so far is durable (shutdown, tests).
    Sync(RpcReplyPort<()>),
}

/// What the spool holds, one JSON object a line.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(tag = "kind", rename_all = "snake_case")]
enum Spooled {
    Answer(FinishedAnswer),
    Audit(AuditRecord),
}

/// What the Persister keeps that others read.
#[derive(Default)]
pub struct PersisterCounters {
    /// Records currently waiting in the spool (the `skald_spool_records`
    /// gauge; while not zero, new answers queue behind them).
    pub spooled: AtomicU64,
    /// Batches written to the store (benchmarks read it).
    pub batches: AtomicU64,
}

pub struct PersisterArgs {
    pub store: Arc<dyn Store>,
    pub spool_path: PathBuf,
    pub counters: Arc<PersisterCounters>,
}

pub struct Persister;

pub struct PersisterState {
    store: Arc<dyn Store>,
    spool_path: PathBuf,
    counters: Arc<PersisterCounters>,
    batch: Vec<FinishedAnswer>,
    waiters: Vec<RpcReplyPort<()>>,
    audits: Vec<AuditRecord>,
    flush_scheduled: bool,
}

impl Actor for Persister {
    type Msg = PersisterMsg;
    type State = PersisterState;
    type Arguments = PersisterArgs;

    async fn pre_start(
        &self,
        myself: ActorRef<PersisterMsg>,
        args: PersisterArgs,
    ) -> Result<PersisterState, ActorProcessingErr> {
        if let Some(dir) = args.spool_path.parent() {
            tokio::fs::create_dir_all(dir).await?;
        }
        // What a previous run left in the spool is drained like any other.
        let waiting = read_spool(&args.spool_path)
            .await
            .map(|r| r.len())
            .unwrap_or(0);
        args.counters
            .spooled
            .store(waiting as u64, Ordering::Relaxed);
        if args.store.is_shared() {
            myself.send_interval(SWEEP_EVERY, || PersisterMsg::Sweep);
        }
        myself.send_interval(DRAIN_EVERY, || PersisterMsg::Drain);
        myself.send_interval(ANONYMISE_EVERY, || PersisterMsg::Anonymise);
        let _ = myself.cast(PersisterMsg::Anonymise);
        Ok(PersisterState {
            store: args.store,
            spool_path: args.spool_path,
            counters: args.counters,
            batch: Vec::new(),
            waiters: Vec::new(),
            audits: Vec::new(),
            flush_scheduled: false,
        })
    }

    async fn post_stop(
        &self,
        _myself: ActorRef<PersisterMsg>,
        state: &mut PersisterState,
    ) -> Result<(), ActorProcessingErr> {
        state.flush().await;
        Ok(())
    }

    async fn handle(
        &self,
        myself: ActorRef<PersisterMsg>,
        message: PersisterMsg,
        state: &mut PersisterState,
    ) -> Result<(), ActorProcessingErr> {
        match message {
            PersisterMsg::Answer(answer, reply) => {
                state.batch.push(answer);
                state.waiters.extend(reply);
                state.batched(&myself).await;
            }
            PersisterMsg::Audit(record) => {
                state.audits.push(record);
                state.batched(&myself).await;
            }
            PersisterMsg::Flush => {
                state.flush_scheduled = false;
                state.flush().await;
            }
            PersisterMsg::Checkpoints(checkpoints) => {
                let n = checkpoints.len();
                if let Err(e) = state.store.checkpoint_answers(checkpoints).await {
                    tracing::warn!(error = %e, answers = n, "checkpoint skipped; the next one follows");
                }
            }
            PersisterMsg::Sweep => {
                let cutoff = crate::time::now_ms() - INTERRUPTED_AFTER.as_millis() as i64;
                close_interrupted(state.store.as_ref(), cutoff).await;
            }
            PersisterMsg::Drain => state.drain().await,
            PersisterMsg::Anonymise => {
                let cutoff = crate::time::now_ms() - FULL_ADDRESS_DAYS * 86_400_000;
                match state.store.anonymise_addresses(cutoff).await {
                    Ok(0) => {}
                    Ok(n) => tracing::info!(records = n, "client addresses anonymised"),
                    Err(e) => tracing::warn!(error = %e, "address anonymisation deferred"),
                }
            }
            PersisterMsg::Sync(reply) => {
                state.flush().await;
                let _ = reply.send(());
            }
        }
        Ok(())
    }
}

impl PersisterState {
    /// After a record joined the batch: writes it now if it is full, or
    /// asks for a flush at the end of the window.
    async fn batched(&mut self, myself: &ActorRef<PersisterMsg>) {
        if self.batch.len() >= MAX_BATCH || self.audits.len() >= MAX_BATCH {
            self.flush().await;
        } else if !self.flush_scheduled {
            self.flush_scheduled = true;
            myself.send_after(BATCH_WINDOW, || PersisterMsg::Flush);
        }
    }

    /// Writes the batch, then the audit records, to the store, or to the
    /// spool if the store fails; releases the streams waiting on the
    /// answers as soon as those are durable.
    async fn flush(&mut self) {
        self.flush_answers().await;
        self.flush_audits().await;
    }

    async fn flush_audits(&mut self) {
        if self.audits.is_empty() {
            return;
        }
        let audits = std::mem::take(&mut self.audits);
        let stored = if self.counters.spooled.load(Ordering::Relaxed) == 0 {
            self.store.append_audits(audits.clone()).await
        } else {
            Err(crate::ports::store::StoreError::unavailable(
                "spool not drained yet",
            ))
        };
        if let Err(e) = stored {
            tracing::warn!(error = %e, records = audits.len(), "audit records spooled");
            metrics::counter!("skald_persister_errors_total").increment(1);
            let records: Vec<Spooled> = audits.into_iter().map(Spooled::Audit).collect();
            self.spool(&records).await;
        }
    }

    async fn flush_answers(&mut self) {
        if self.batch.is_empty() {
            return;
        }
        let batch = std::mem::take(&mut self.batch);
        let n = batch.len() as u64;
        // Answers never jump ahead of older spooled ones: while the spool
        // holds records, new ones queue behind them.
        let stored = if self.counters.spooled.load(Ordering::Relaxed) == 0 {
            let started = std::time::Instant::now();
            let result = self.store.finish_answers(batch.clone()).await;
            metrics::histogram!("skald_store_write_duration_seconds", "op" => "finish_answers")
                .record(started.elapsed().as_secs_f64());
            result
        } else {
            Err(crate::ports::store::StoreError::unavailable(
                "spool not drained yet",
            ))
        };
        match stored {
            Ok(()) => {
                metrics::counter!("skald_answers_stored_total").increment(n);
                metrics::counter!("skald_store_batches_total").increment(1);
                self.counters.batches.fetch_add(1, Ordering::Relaxed);
            }
            Err(e) => {
                tracing::warn!(error = %e, answers = n, "store unavailable; answers spooled");
                metrics::counter!("skald_persister_errors_total").increment(1);
                let records: Vec<Spooled> = batch.into_iter().map(Spooled::Answer).collect();
                self.spool(&records).await;
            }
        }
        for waiter in self.waiters.drain(..) {
            let _ = waiter.send(());
        }
    }

    async fn spool(&self, records: &[Spooled]) {
        let mut lines = String::new();
        for record in records {
            if let Ok(line) = serde_json::to_string(record) {
                lines.push_str(&line);
                lines.push('\n');
            }
        }
        let written = async {
            let mut file = tokio::fs::OpenOptions::new()
                .create(true)
                .append(true)
                .open(&self.spool_path)
                .await?;
            file.write_all(lines.as_bytes()).await?;
            file.sync_all().await
        }
        .await;
        match written {
            Ok(()) => {
                self.counters
                    .spooled
                    .fetch_add(records.len() as u64, Ordering::Relaxed);
            }
            Err(e) => {
                tracing::error!(error = %e, path = %self.spool_path.display(), "could not write the spool")
            }
        }
    }

    async fn drain(&mut self) {
        if self.counters.spooled.load(Ordering::Relaxed) == 0 || self.store.ping().await.is_err() {
            return;
        }
        let Ok(records) = read_spool(&self.spool_path).await else {
            return;
        };
        let (mut answers, mut audits) = (Vec::new(), Vec::new());
        for record in &records {
            match record {
                Spooled::Answer(answer) => answers.push(answer.clone()),
                Spooled::Audit(audit) => audits.push(audit.clone()),
            }
        }
        for chunk in audits.chunks(MAX_BATCH) {
            if self.store.append_audits(chunk.to_vec()).await.is_err() {
                return;
            }
        }
        for chunk in answers.chunks(MAX_BATCH) {
            if self.store.finish_answers(chunk.to_vec()).await.is_err() {
                return;
            }
            metrics::counter!("skald_answers_stored_total").increment(chunk.len() as u64);
        }
        if let Err(e) = tokio::fs::remove_file(&self.spool_path).await {
            tracing::error!(error = %e, "could not empty the drained spool");
            return;
        }
        self.counters.spooled.store(0, Ordering::Relaxed);
        tracing::info!(records = records.len(), "spool drained into the store");
    }
}

/// Closes answers that a dead process left unfinished. The hub calls it
/// once at start, before any stream exists: on a store of this instance
/// alone with `now` (nothing else writes it), on a shared one with
/// [`INTERRUPTED_AFTER`] ago.
pub(crate) async fn close_interrupted(store: &dyn Store, older_than_ms: i64) {
    match store.close_interrupted(older_than_ms).await {
        Ok(0) => {}
        Ok(n) => tracing::warn!(
            answers = n,
            "closed answers interrupted by a crash (finish_reason error, content as checkpointed)"
        ),
        Err(e) => tracing::warn!(error = %e, "could not close interrupted answers; retried later"),
    }
}

/// The calls other actors make to the Persister.
impl Slot<PersisterMsg> {
    /// Hands an answer over and waits (at most `timeout`) until it is
    /// durable, in the store or the spool.
    pub async fn persist(
        &self,
        answer: FinishedAnswer,
        timeout: Duration,
    ) -> Result<(), ActorsError> {
        self.call_within(|reply| PersisterMsg::Answer(answer, Some(reply)), timeout)
            .await
    }

    pub fn checkpoint(&self, checkpoints: Vec<AnswerCheckpoint>) {
        if !checkpoints.is_empty() {
            let _ = self.cast(PersisterMsg::Checkpoints(checkpoints));
        }
    }

    /// Records an audit event (never lost: spooled if the store is down).
    pub fn audit(&self, record: AuditRecord) {
        if self.cast(PersisterMsg::Audit(record)).is_err() {
            tracing::error!("no Persister to take an audit record");
        }
    }

    /// Waits until everything handed over so far is durable.
    pub async fn sync(&self) -> Result<(), ActorsError> {
        self.call(PersisterMsg::Sync).await
    }
}

async fn read_spool(path: &std::path::Path) -> std::io::Result<Vec<Spooled>> {
    let text = match tokio::fs::read_to_string(path).await {
        Ok(text) => text,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(Vec::new()),
        Err(e) => return Err(e),
    };
    Ok(text
        .lines()
        .filter_map(|line| match serde_json::from_str(line) {
            Ok(record) => Some(record),
            Err(e) => {
                // A torn last line (crash mid-write) is the only way to get here.
                tracing::warn!(error = %e, "skipping an unreadable spool line");
                None
            }
        })
        .collect())
}
