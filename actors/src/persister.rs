//! The Persister actor: every finished answer and audit record goes to the
//! store through it.
//!
//! - **Batching**: answers that arrive within `BATCH_WINDOW` are written in
//!   one `finish_answers` call (one transaction, one fsync on SQLite), so a
//!   busy server does not pay a durable write per answer, and storage never
//!   sits between two tokens (it only ever runs after the last one).
//! - **Nothing lost**: when the store fails, the batch goes to the spool, an
//!   append-only file in the data dir, fsynced, and every waiting stream is
//!   told its answer is safe. Every `DRAIN_EVERY` the spool is replayed into
//!   the store once it answers again (writes are idempotent, so a replay
//!   after a crash mid-drain is harmless), then emptied.
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
use crate::ports::store::{AuditRecord, FinishedAnswer, Store};

const BATCH_WINDOW: Duration = Duration::from_millis(2);
const MAX_BATCH: usize = 256;
const DRAIN_EVERY: Duration = Duration::from_secs(1);
const ANONYMISE_EVERY: Duration = Duration::from_secs(3600);

pub enum PersisterMsg {
    /// Store an answer; the reply says it is durable (in the store or the spool).
    Answer(FinishedAnswer, Option<RpcReplyPort<()>>),
    Audit(AuditRecord),
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

/// Counters for metrics and tests.
#[derive(Default)]
pub struct PersisterCounters {
    pub answers_stored: AtomicU64,
    pub batches: AtomicU64,
    /// Records currently waiting in the spool.
    pub spooled: AtomicU64,
    pub store_errors: AtomicU64,
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
        myself.send_interval(DRAIN_EVERY, || PersisterMsg::Drain);
        myself.send_interval(ANONYMISE_EVERY, || PersisterMsg::Anonymise);
        let _ = myself.cast(PersisterMsg::Anonymise);
        Ok(PersisterState {
            store: args.store,
            spool_path: args.spool_path,
            counters: args.counters,
            batch: Vec::new(),
            waiters: Vec::new(),
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
                if state.batch.len() >= MAX_BATCH {
                    state.flush().await;
                } else if !state.flush_scheduled {
                    state.flush_scheduled = true;
                    myself.send_after(BATCH_WINDOW, || PersisterMsg::Flush);
                }
            }
            PersisterMsg::Flush => {
                state.flush_scheduled = false;
                state.flush().await;
            }
            PersisterMsg::Audit(record) => {
                if let Err(e) = state.store.append_audit(record.clone()).await {
                    tracing::warn!(error = %e, "audit record spooled");
                    state.counters.store_errors.fetch_add(1, Ordering::Relaxed);
                    state.spool(&[Spooled::Audit(record)]).await;
                }
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
    /// Writes the batch to the store, or to the spool if the store fails,
    /// then releases the streams waiting on it.
    async fn flush(&mut self) {
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
            Err(crate::ports::store::StoreError::Unavailable(
                "spool not drained yet".into(),
            ))
        };
        match stored {
            Ok(()) => {
                self.counters.answers_stored.fetch_add(n, Ordering::Relaxed);
                self.counters.batches.fetch_add(1, Ordering::Relaxed);
            }
            Err(e) => {
                tracing::warn!(error = %e, answers = n, "store unavailable; answers spooled");
                self.counters.store_errors.fetch_add(1, Ordering::Relaxed);
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
        let mut answers = Vec::new();
        for record in &records {
            match record {
                Spooled::Answer(answer) => answers.push(answer.clone()),
                Spooled::Audit(audit) => {
                    if self.store.append_audit(audit.clone()).await.is_err() {
                        return;
                    }
                }
            }
        }
        for chunk in answers.chunks(MAX_BATCH) {
            if self.store.finish_answers(chunk.to_vec()).await.is_err() {
                return;
            }
            self.counters
                .answers_stored
                .fetch_add(chunk.len() as u64, Ordering::Relaxed);
        }
        if let Err(e) = tokio::fs::remove_file(&self.spool_path).await {
            tracing::error!(error = %e, "could not empty the drained spool");
            return;
        }
        self.counters.spooled.store(0, Ordering::Relaxed);
        tracing::info!(records = records.len(), "spool drained into the store");
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
