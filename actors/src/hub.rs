//! The hub: the handle the edge holds on the actor system.
//!
//! A facade over the [`Directory`] (the shared actors' slots) and the
//! session supervisor: the edge starts sessions, checks address limits,
//! reads usage, erases users and drains through it, and never builds an
//! actor's message itself. The root supervisor behind it is in `root.rs`.

use std::net::IpAddr;
use std::sync::Arc;

use ractor::{Actor, ActorRef};
use skald_protocol::{CloseCode, ErrorBody, ErrorCode, StreamId, UserId};

use crate::directory::Directory;
use crate::exchange::{Ask, Begun, Caller, Refusal};
use crate::persister::PersisterCounters;
use crate::ports::limits::{
    LimitsError, QuotaUsage, RateDecision, RateKey, RateLimit, SlotClaim, SlotKey,
};
use crate::ports::store::{AuditRecord, StoreError};
use crate::registry::RegistryMsg;
use crate::root::{Root, RootArgs};
use crate::session::{SessionArgs, SessionMsg};
use crate::slot::{Slot, CALL_TIMEOUT};
use crate::supervisor::{SessionCounters, SupervisorMsg};
use crate::time::Month;
use crate::{ActorsError, Services};

/// What the actors keep as state and `/metrics` shows as gauges (events
/// are counted where they happen, with the `metrics` facade).
#[derive(Default)]
pub struct Counters {
    pub sessions: Arc<SessionCounters>,
    pub persister: Arc<PersisterCounters>,
}

/// Why an erasure could not complete (it is safe to run again).
#[derive(Debug, thiserror::Error)]
pub enum EraseError {
    #[error("the stream registry: {0}")]
    Streams(#[source] ActorsError),
    #[error("limits: {0}")]
    Limits(#[source] LimitsError),
    #[error("store: {0}")]
    Store(#[source] StoreError),
}

pub struct Hub {
    pub services: Arc<Services>,
    pub counters: Arc<Counters>,
    pub directory: Arc<Directory>,
    supervisor: Arc<Slot<SupervisorMsg>>,
    root: ActorRef<()>,
    reloader: tokio::task::JoinHandle<()>,
}

impl Hub {
    /// Closes what a previous run left unfinished, then starts the root
    /// supervisor and its children.
    pub async fn start(services: Services) -> Result<Arc<Hub>, ActorsError> {
        let services = Arc::new(services);
        let store = services.store.as_ref();
        let cutoff = match store.is_shared() {
            // Only answers nobody checkpointed for a while: other instances
            // run theirs.
            true => crate::time::now_ms() - crate::persister::INTERRUPTED_AFTER.as_millis() as i64,
            // Nothing else writes this store: every unfinished answer is one
            // a dead process left.
            false => crate::time::now_ms(),
        };
        crate::persister::close_interrupted(store, cutoff).await;
        if let Err(e) = crate::catalog::reload(&services).await {
            tracing::warn!(error = %e, "could not read the stored bots and user limits; serving the configuration's until they can be read");
        }
        let reloader = crate::catalog::spawn_reloader(Arc::downgrade(&services));
        let counters = Arc::new(Counters::default());
        let directory = Arc::new(Directory::new(services.clone()));
        let supervisor = Slot::empty();
        let args = RootArgs {
            directory: directory.clone(),
            supervisor: supervisor.clone(),
            counters: counters.clone(),
        };
        let (root, _) = Actor::spawn(None, Root, args).await?;
        Ok(Arc::new(Hub {
            services,
            counters,
            directory,
            supervisor,
            root,
            reloader,
        }))
    }

    /// Starts a session actor for an authenticated connection.
    pub async fn spawn_session(
        &self,
        args: SessionArgs,
    ) -> Result<ActorRef<SessionMsg>, ActorsError> {
        self.supervisor.spawn(args).await
    }

    /// Begins an exchange for an edge that is not a session (the
    /// OpenAI-compatible API): the same steps as a WebSocket `send`.
    pub async fn begin_exchange(&self, caller: Caller<'_>, ask: Ask) -> Result<Begun, Refusal> {
        crate::exchange::begin(&self.directory, caller, ask).await
    }

    /// Cancels a stream of `user` that this instance runs (its caller went
    /// away); a stream that already ended is left as it is.
    pub async fn cancel_stream(&self, stream_id: &StreamId, user: &UserId) {
        let handle = self.directory.registry.lookup(stream_id, user).await;
        if let Some(actor) = handle.and_then(|h| h.actor) {
            let _ = actor.cast(crate::stream::StreamMsg::Cancel);
        }
    }

    /// Asks every connection to close (server shutdown).
    pub fn close_all(&self, code: CloseCode, reason: &str) {
        self.supervisor.close_all(code, reason);
    }

    /// GDPR erasure of everything the server holds about `user`: live and
    /// resumable streams, rate-limit and connection state, and every stored
    /// record. The month's usage counters stay (counters without content:
    /// erasing them would hand an erased user a fresh quota).
    pub async fn erase_user(&self, user: &UserId) -> Result<(), EraseError> {
        let streams = self
            .directory
            .registry
            .call(|reply| RegistryMsg::ForgetUser {
                user: user.clone(),
                reply,
            })
            .await
            .map_err(EraseError::Streams)?;
        self.directory
            .rate_limiter
            .forget(
                vec![RateKey::User(user.clone())],
                vec![SlotKey(user.clone())],
            )
            .await
            .map_err(EraseError::Limits)?;
        self.services
            .store
            .erase_user(user)
            .await
            .map_err(EraseError::Store)?;
        tracing::info!(streams, "a user was erased");
        Ok(())
    }

    /// From now on, new messages are refused (`unavailable`).
    pub fn start_draining(&self) {
        self.directory.start_draining();
    }

    pub fn is_draining(&self) -> bool {
        self.directory.is_draining()
    }

    /// How many streams are still generating.
    pub async fn live_streams(&self) -> usize {
        self.directory
            .registry
            .call(RegistryMsg::LiveCount)
            .await
            .unwrap_or(0)
    }

    /// Ends every live stream with `unavailable` (the drain timed out).
    pub fn abort_streams(&self, message: &str) {
        let _ = self
            .directory
            .registry
            .cast(RegistryMsg::AbortAll(ErrorBody {
                code: ErrorCode::Unavailable,
                message: message.to_owned(),
            }));
    }

    /// Records an audit event (through the Persister: never lost).
    pub fn audit(&self, record: AuditRecord) {
        self.directory.persister.audit(record);
    }

    /// Waits until every answer handed to the Persister so far is durable.
    pub async fn sync_storage(&self) -> Result<(), ActorsError> {
        self.directory.persister.sync().await
    }

    /// The time limits and quotas use.
    pub fn now_ms(&self) -> i64 {
        self.directory.now_ms()
    }

    /// One event against an address's rate limit (`key` names what is
    /// counted).
    pub async fn check_rate(
        &self,
        key: RateKey,
        limit: RateLimit,
    ) -> Result<RateDecision, LimitsError> {
        self.directory
            .rate_limiter
            .check(key, limit, self.now_ms())
            .await
    }

    /// A client address's new connections and HTTP requests.
    pub async fn check_address(&self, address: IpAddr) -> Result<RateDecision, LimitsError> {
        let per_minute = self.services.limits.address_requests_per_minute;
        self.check_rate(RateKey::Address(address), RateLimit::per_minute(per_minute))
            .await
    }

    /// Takes (or refreshes) one of the user's connection slots.
    pub async fn acquire_connection(
        &self,
        user: &UserId,
        holder: &str,
    ) -> Result<bool, LimitsError> {
        let limits = &self.services.limits;
        self.directory
            .rate_limiter
            .acquire_slot(
                SlotClaim {
                    key: SlotKey(user.clone()),
                    holder: holder.to_owned(),
                    max: limits.max_connections_per_user,
                    lease_ms: limits.connection_lease_ms,
                },
                self.now_ms(),
            )
            .await
    }

    pub fn release_connection(&self, user: &UserId, holder: &str) {
        self.directory
            .rate_limiter
            .release_slot(SlotKey(user.clone()), holder);
    }

    /// Renews the lease of a connection slot taken by
    /// [`Self::acquire_connection`] every third of
    /// `limits.connection_lease_ms`, until dropped. A holder that dies
    /// without releasing its slot (a killed process) frees it when the
    /// lease ends.
    pub async fn keep_connection(&self, user: &UserId, holder: &str) {
        let every = std::time::Duration::from_millis(self.services.limits.connection_lease_ms / 3)
            .max(std::time::Duration::from_millis(1));
        let mut ticks = tokio::time::interval_at(tokio::time::Instant::now() + every, every);
        loop {
            ticks.tick().await;
            // Boxed: a WebSocket connection holds this future for its whole
            // life, and idle connections are most of a server's memory.
            if let Err(e) = Box::pin(self.acquire_connection(user, holder)).await {
                tracing::debug!(error = %e, "a connection slot's lease was not renewed");
            }
        }
    }

    /// Keeps a connection slot taken by [`Self::acquire_connection`] for as
    /// long as the returned guard lives ([`Self::keep_connection`] in a
    /// task of its own), and gives it back when the guard drops.
    pub fn hold_connection(self: &Arc<Self>, user: &UserId, holder: &str) -> HeldSlot {
        let (hub, who, name) = (self.clone(), user.clone(), holder.to_owned());
        let renew = tokio::spawn(async move { hub.keep_connection(&who, &name).await });
        HeldSlot {
            hub: self.clone(),
            user: user.clone(),
            holder: holder.to_owned(),
            renew,
        }
    }

    /// The user's usage this month (UTC): the month and its counters.
    pub async fn usage(&self, user: &UserId) -> Result<(Month, QuotaUsage), LimitsError> {
        let now_ms = self.now_ms();
        let month = Month::of(now_ms);
        let usage = self
            .directory
            .quota_keeper
            .usage(user, month, now_ms)
            .await?;
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
        self.reloader.abort();
        let _ = self
            .root
            .stop_and_wait(Some("shutdown".into()), Some(CALL_TIMEOUT))
            .await;
    }
}

/// A connection slot held by a connection or a completion in flight (see
/// [`Hub::hold_connection`]).
pub struct HeldSlot {
    hub: Arc<Hub>,
    user: UserId,
    holder: String,
    renew: tokio::task::JoinHandle<()>,
}

impl Drop for HeldSlot {
    fn drop(&mut self) {
        self.renew.abort();
        self.hub.release_connection(&self.user, &self.holder);
    }
}
