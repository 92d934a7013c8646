//! The ScyllaDB store: `Store` over the `scylla` driver and the schema of
//! `migrations/`, for deployments where several instances share one
//! cluster.
//!
//! The data model and its reasons are in docs/scylla.md; in short:
//! conversations partitioned by user (newest first), messages by
//! conversation (oldest first), idempotency keys and their exchanges by
//! user, audit records by user and month (plus a month index for erase and
//! export), all clustered by time-ordered ids; and the answers still open,
//! in a few bucketed partitions, so that any instance can find and close
//! the answers of one that died without scanning a table.
//!
//! The adapter is thin, and the driver checks it: every statement is in
//! [`statements`] with named bind markers, prepared once at connect (the
//! node refuses what does not fit the schema), marked idempotent or not;
//! every row is a struct of [`rows`] that the driver's derives bind and
//! decode by name, refusing a missing, extra or mistyped column at the
//! request. `store.rs` only sequences them, and the tests run every one of
//! them against a real node (Apache Cassandra 5.0 in CI; ScyllaDB where
//! one is at hand).
//!
//! `begin_exchange` claims the key with a lightweight transaction whose row
//! holds the whole exchange, then writes the conversation, both messages
//! and the open answer in one logged batch. If the process stops between
//! the two, whoever finds the key next (`exchange`, or `begin_exchange` on
//! a resend) sees the user's message missing and writes the batch from the
//! key's row: an `ack`, which is only ever sent after these writes, always
//! points at a stored message, and a retried `begin_exchange` with the same
//! exchange recognises its own claim and completes it. The result of a
//! lightweight transaction is read by its `[applied]` column, by name:
//! Cassandra returns only that column when it applied, ScyllaDB every one.
//!
//! Full client addresses of audit records are written with a TTL
//! (`scylla.address_ttl_secs` after the record's time); the database drops
//! them by itself, so [`Store::anonymise_addresses`] has nothing to do here
//! and returns 0.
//!
//! [`Store::anonymise_addresses`]: skald_actors::ports::store::Store::anonymise_addresses

pub mod migrate;
pub mod rows;
mod scan;
pub mod statements;
mod store;

use std::sync::Arc;
use std::time::Duration;

use ::scylla::client::execution_profile::ExecutionProfile;
use ::scylla::client::session::Session;
use ::scylla::client::session_builder::SessionBuilder;
use ::scylla::errors::{
    ExecutionError, NewSessionError, PagerExecutionError, PrepareError, UseKeyspaceError,
};
use ::scylla::policies::load_balancing::DefaultPolicy;
use ::scylla::policies::retry::DefaultRetryPolicy;
use ::scylla::policies::timestamp_generator::MonotonicTimestampGenerator;
use ::scylla::statement::{Consistency, SerialConsistency};
use serde::{Deserialize, Serialize};
use skald_actors::ports::store::StoreError;

use crate::config::Secret;
pub use migrate::{migrate, Migration, MIGRATIONS};
pub use store::ScyllaStore;

/// Configuration of the ScyllaDB store (the `[scylla]` section).
#[derive(Clone, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct ScyllaSettings {
    /// Contact points, `host:port` (`SKALD_SCYLLA_NODES`, comma-separated);
    /// empty: the embedded store is used instead.
    pub nodes: Vec<String>,
    /// `SKALD_SCYLLA_KEYSPACE`.
    pub keyspace: String,
    /// Replication of the keyspace when `skald migrate` creates it, a CQL
    /// map literal. Ignored once the keyspace exists (change it with
    /// `ALTER KEYSPACE`).
    pub replication: String,
    /// Consistency of every read and write; lightweight transactions use
    /// the matching serial consistency (`LOCAL_SERIAL` for `local_*`).
    pub consistency: ScyllaConsistency,
    /// The datacenter this instance prefers (its own); unset: any.
    pub local_datacenter: Option<String>,
    /// Bound on each request, retries included.
    pub request_timeout_ms: u64,
    /// Bound on opening a connection to a node.
    pub connect_timeout_ms: u64,
    /// Password authentication, when the cluster requires it.
    pub username: Option<String>,
    pub password: Option<Secret>,
    /// Run the migrations at start (off: run `skald migrate` first).
    pub migrate_on_start: bool,
    /// How long an audit record keeps the client's full address: it is
    /// written with a TTL that ends this long after the record's time.
    pub address_ttl_secs: u32,
}

impl Default for ScyllaSettings {
    fn default() -> Self {
        ScyllaSettings {
            nodes: Vec::new(),
            keyspace: "skald".into(),
            replication: "{'class': 'NetworkTopologyStrategy', 'replication_factor': 3}".into(),
            consistency: ScyllaConsistency::LocalQuorum,
            local_datacenter: None,
            request_timeout_ms: 5_000,
            connect_timeout_ms: 5_000,
            username: None,
            password: None,
            migrate_on_start: false,
            address_ttl_secs: DEFAULT_ADDRESS_TTL_SECS,
        }
    }
}

/// 30 days, the retention of full client addresses everywhere (the
/// embedded store anonymises them after the same time).
pub const DEFAULT_ADDRESS_TTL_SECS: u32 =
    skald_actors::addresses::FULL_ADDRESS_DAYS as u32 * 86_400;

impl std::fmt::Debug for ScyllaSettings {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ScyllaSettings")
            .field("nodes", &self.nodes)
            .field("keyspace", &self.keyspace)
            .field("replication", &self.replication)
            .field("consistency", &self.consistency)
            .field("local_datacenter", &self.local_datacenter)
            .field("request_timeout_ms", &self.request_timeout_ms)
            .field("connect_timeout_ms", &self.connect_timeout_ms)
            .field("username", &self.username)
            .field("password", &self.password)
            .field("migrate_on_start", &self.migrate_on_start)
            .field("address_ttl_secs", &self.address_ttl_secs)
            .finish()
    }
}

impl ScyllaSettings {
    /// Whether ScyllaDB is configured at all.
    pub fn enabled(&self) -> bool {
        !self.nodes.is_empty()
    }

    pub fn request_timeout(&self) -> Duration {
        Duration::from_millis(self.request_timeout_ms)
    }

    pub fn connect_timeout(&self) -> Duration {
        Duration::from_millis(self.connect_timeout_ms)
    }

    /// Checks what can be checked without a cluster (for config validation).
    pub fn validate(&self) -> Result<(), String> {
        if self.nodes.iter().any(|n| n.trim().is_empty()) {
            return Err("scylla.nodes must not contain an empty address".into());
        }
        migrate::check_keyspace(&self.keyspace).map_err(|e| format!("scylla.keyspace: {e}"))?;
        migrate::check_replication(&self.replication)
            .map_err(|e| format!("scylla.replication: {e}"))?;
        if self.request_timeout_ms == 0 || self.connect_timeout_ms == 0 {
            return Err(
                "scylla.request_timeout_ms and connect_timeout_ms must be at least 1".into(),
            );
        }
        if self.address_ttl_secs == 0 {
            return Err("scylla.address_ttl_secs must be at least 1".into());
        }
        if self.password.is_some() && self.username.is_none() {
            return Err("scylla.password is set without scylla.username".into());
        }
        Ok(())
    }
}

/// The consistency levels that make sense for this store.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum ScyllaConsistency {
    One,
    LocalOne,
    Quorum,
    LocalQuorum,
    EachQuorum,
    All,
}

impl ScyllaConsistency {
    pub fn consistency(self) -> Consistency {
        match self {
            ScyllaConsistency::One => Consistency::One,
            ScyllaConsistency::LocalOne => Consistency::LocalOne,
            ScyllaConsistency::Quorum => Consistency::Quorum,
            ScyllaConsistency::LocalQuorum => Consistency::LocalQuorum,
            ScyllaConsistency::EachQuorum => Consistency::EachQuorum,
            ScyllaConsistency::All => Consistency::All,
        }
    }

    /// The serial consistency of lightweight transactions: Paxos within the
    /// local datacenter for `local_*` levels, across the cluster otherwise.
    pub fn serial(self) -> SerialConsistency {
        match self {
            ScyllaConsistency::LocalOne | ScyllaConsistency::LocalQuorum => {
                SerialConsistency::LocalSerial
            }
            _ => SerialConsistency::Serial,
        }
    }
}

/// Errors of the ScyllaDB store. The driver's errors are large; they are
/// boxed so that every `Result` here stays small.
#[derive(Debug, thiserror::Error)]
pub enum ScyllaError {
    #[error("ScyllaDB settings: {0}")]
    Settings(String),
    #[error("could not connect to ScyllaDB: {0}")]
    Connect(Box<NewSessionError>),
    #[error("ScyllaDB schema: {0}")]
    Schema(String),
    #[error("could not prepare the statement {name}: {source}")]
    Prepare {
        name: &'static str,
        source: Box<PrepareError>,
    },
    #[error("ScyllaDB request failed: {0}")]
    Execution(Box<ExecutionError>),
    #[error("ScyllaDB paged request failed: {0}")]
    Pager(Box<PagerExecutionError>),
    #[error("could not use the keyspace: {0}")]
    UseKeyspace(Box<UseKeyspaceError>),
    #[error("unexpected ScyllaDB result: {0}")]
    Result(String),
    #[error("migration: {0}")]
    Migration(String),
}

impl ScyllaError {
    fn result(e: impl std::fmt::Display) -> ScyllaError {
        ScyllaError::Result(e.to_string())
    }

    fn prepare(name: &'static str, source: PrepareError) -> ScyllaError {
        ScyllaError::Prepare {
            name,
            source: Box::new(source),
        }
    }
}

macro_rules! boxed_from {
    ($($variant:ident($error:ty)),* $(,)?) => {
        $(impl From<$error> for ScyllaError {
            fn from(e: $error) -> ScyllaError {
                ScyllaError::$variant(Box::new(e))
            }
        })*
    };
}

boxed_from!(
    Connect(NewSessionError),
    Execution(ExecutionError),
    Pager(PagerExecutionError),
    UseKeyspace(UseKeyspaceError),
);

impl From<ScyllaError> for StoreError {
    fn from(e: ScyllaError) -> StoreError {
        // The driver's messages name nodes and statements, never the
        // password (which only the settings hold, redacted in Debug).
        StoreError::unavailable(e.to_string())
    }
}

/// A session on the cluster, not yet in the keyspace: for `skald migrate`
/// (then [`migrate`]) and for [`ScyllaStore::connect`].
pub async fn connect_session(settings: &ScyllaSettings) -> Result<Session, ScyllaError> {
    settings.validate().map_err(ScyllaError::Settings)?;
    if !settings.enabled() {
        return Err(ScyllaError::Settings("scylla.nodes is empty".into()));
    }
    let mut balancing = DefaultPolicy::builder().token_aware(true);
    if let Some(dc) = &settings.local_datacenter {
        balancing = balancing
            .prefer_datacenter(dc.clone())
            .permit_dc_failover(false);
    }
    let profile = ExecutionProfile::builder()
        .consistency(settings.consistency.consistency())
        .serial_consistency(Some(settings.consistency.serial()))
        .request_timeout(Some(settings.request_timeout()))
        // Retries only statements marked idempotent (and never serial ones).
        .retry_policy(Arc::new(DefaultRetryPolicy::new()))
        .load_balancing_policy(balancing.build())
        .build();
    let mut builder = SessionBuilder::new()
        .known_nodes(&settings.nodes)
        .connection_timeout(settings.connect_timeout())
        .default_execution_profile_handle(profile.into_handle())
        // Write times from this process only grow: a write issued after a
        // delete (an audit record after an erase) is never shadowed by it.
        .timestamp_generator(Arc::new(MonotonicTimestampGenerator::new()));
    if let Some(username) = &settings.username {
        let password = settings.password.as_ref().map(Secret::expose);
        builder = builder.user(username, password.unwrap_or_default());
    }
    Ok(builder.build().await?)
}

/// The store of a configuration that names ScyllaDB nodes: connected,
/// checked against the schema (or migrated, with `migrate_on_start`), every
/// statement prepared.
pub async fn connect_store(
    settings: &ScyllaSettings,
) -> Result<std::sync::Arc<dyn skald_actors::ports::store::Store>, ScyllaError> {
    Ok(std::sync::Arc::new(ScyllaStore::connect(settings).await?))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn settings_default_to_local_quorum_and_three_replicas() {
        let s = ScyllaSettings::default();
        assert!(!s.enabled());
        assert_eq!(s.keyspace, "skald");
        assert_eq!(
            s.replication,
            "{'class': 'NetworkTopologyStrategy', 'replication_factor': 3}"
        );
        assert_eq!(s.consistency, ScyllaConsistency::LocalQuorum);
        assert_eq!(s.consistency.consistency(), Consistency::LocalQuorum);
        assert_eq!(s.consistency.serial(), SerialConsistency::LocalSerial);
        assert_eq!(s.request_timeout(), Duration::from_secs(5));
        assert_eq!(s.connect_timeout(), Duration::from_secs(5));
        assert!(!s.migrate_on_start);
        assert_eq!(s.address_ttl_secs, 2_592_000, "30 days");
        assert_eq!(s.validate(), Ok(()));
    }

    #[test]
    fn settings_read_as_the_config_file_writes_them() {
        let s: ScyllaSettings = serde_json::from_value(serde_json::json!({
            "nodes": ["10.0.0.1:9042", "10.0.0.2:9042"],
            "keyspace": "chat",
            "replication": "{'class': 'NetworkTopologyStrategy', 'eu-west': 3}",
            "consistency": "each_quorum",
            "local_datacenter": "eu-west",
            "request_timeout_ms": 2000,
            "username": "skald",
            "password": "hunter2",
            "migrate_on_start": true
        }))
        .unwrap();
        assert!(s.enabled());
        assert_eq!(s.nodes, ["10.0.0.1:9042", "10.0.0.2:9042"]);
        assert_eq!(s.consistency.consistency(), Consistency::EachQuorum);
        assert_eq!(s.consistency.serial(), SerialConsistency::Serial);
        assert_eq!(s.request_timeout(), Duration::from_secs(2));
        assert_eq!(s.connect_timeout_ms, 5_000, "unset keys keep their default");
        assert_eq!(s.validate(), Ok(()));
        let unknown = serde_json::from_value::<ScyllaSettings>(serde_json::json!({"node": []}));
        assert!(unknown.is_err(), "unknown keys are errors");
        for (name, level) in [
            ("one", Consistency::One),
            ("local_one", Consistency::LocalOne),
            ("quorum", Consistency::Quorum),
            ("local_quorum", Consistency::LocalQuorum),
            ("each_quorum", Consistency::EachQuorum),
            ("all", Consistency::All),
        ] {
            let c: ScyllaConsistency = serde_json::from_value(serde_json::json!(name)).unwrap();
            assert_eq!(c.consistency(), level);
            assert_eq!(serde_json::to_value(c).unwrap(), serde_json::json!(name));
        }
    }

    #[test]
    fn the_password_never_shows() {
        let s = ScyllaSettings {
            username: Some("skald".into()),
            password: Some("hunter2".into()),
            ..ScyllaSettings::default()
        };
        let debug = format!("{s:?}");
        assert!(!debug.contains("hunter2"), "{debug}");
        assert!(
            debug.contains("<redacted>") && debug.contains("skald"),
            "{debug}"
        );
    }

    #[test]
    fn settings_that_cannot_work_are_refused_before_connecting() {
        let bad = |f: fn(&mut ScyllaSettings)| {
            let mut s = ScyllaSettings {
                nodes: vec!["127.0.0.1:9042".into()],
                ..ScyllaSettings::default()
            };
            f(&mut s);
            s.validate().unwrap_err()
        };
        assert!(bad(|s| s.keyspace = "my-keyspace".into()).contains("scylla.keyspace"));
        assert!(bad(|s| s.replication = "3".into()).contains("scylla.replication"));
        assert!(bad(|s| s.request_timeout_ms = 0).contains("request_timeout_ms"));
        assert!(bad(|s| s.nodes.push(" ".into())).contains("empty address"));
        assert!(bad(|s| s.password = Some("x".into())).contains("username"));
        assert!(bad(|s| s.address_ttl_secs = 0).contains("address_ttl_secs"));
    }

    #[test]
    fn errors_become_unavailable_without_secrets() {
        let e = ScyllaError::Schema("the schema is at version 0".into());
        let store: StoreError = e.into();
        assert_eq!(
            store.to_string(),
            "store unavailable: ScyllaDB schema: the schema is at version 0"
        );
    }

    #[tokio::test]
    async fn connecting_without_nodes_fails_at_once() {
        let err = connect_session(&ScyllaSettings::default())
            .await
            .expect_err("no nodes");
        assert!(err.to_string().contains("scylla.nodes is empty"), "{err}");
    }
}
