//! The CQL node of the tests: a real one, never a stand-in.
//!
//! `scripts/test` starts one Apache Cassandra 5.0 node for the whole run
//! (`scripts/cql-node`) and exports its address as `SKALD_TEST_CQL`
//! (`host:port`, or several, comma-separated); point it at a ScyllaDB node
//! to run the same tests there. Without it a CQL test fails, unless
//! `SKALD_ALLOW_SKIP` names `cql` (a developer without Java): then it says
//! SKIPPED and returns.
//!
//! Tests share one keyspace per run ([`Keyspace::shared`], users named
//! after the test), so a run never sees another's data, even on a node that
//! outlives the run, and the node holds few tables (each costs it memory:
//! a keyspace per test, run after run, fills a 1 GiB heap). A test that
//! acts on the whole keyspace (closes every interrupted answer, migrates)
//! has one of its own ([`Keyspace::fresh`], [`Keyspace::unmigrated`]),
//! dropped when it passes ([`Keyspace::drop`]). The keyspaces are
//! `NetworkTopologyStrategy` with one replica in `datacenter1` (the data
//! center of a single Cassandra node), read and written at `local_quorum`,
//! as in production. The shared ones (`t_run_*`) and those of failed tests
//! stay: the node of `scripts/test` is thrown away with them; on a node of
//! your own, drop them when you like.

use std::path::{Path, PathBuf};
use std::sync::Arc;

use skald::store::scylla::{
    connect_session, migrate, ScyllaConsistency, ScyllaSettings, ScyllaStore,
};
use skald_actors::ports::store::Store;

/// The variable that names the node.
pub const ENV: &str = "SKALD_TEST_CQL";
/// The name of the skip in `SKALD_ALLOW_SKIP`.
pub const SKIP: &str = "cql";
/// Replication of the test keyspaces: the topology strategy of production,
/// one replica in the single node's data center.
pub const REPLICATION: &str = "{'class': 'NetworkTopologyStrategy', 'datacenter1': 1}";

/// The node's contact points; `None` (the test returns) when there is no
/// node and the skip is allowed. Fails the test otherwise.
pub fn node(test: &str) -> Option<Vec<String>> {
    let nodes: Vec<String> = std::env::var(ENV)
        .unwrap_or_default()
        .split(',')
        .map(|n| n.trim().to_owned())
        .filter(|n| !n.is_empty())
        .collect();
    if nodes.is_empty() {
        super::skip_or_fail(
            SKIP,
            test,
            &format!(
                "no CQL node: {ENV} is unset (./scripts/test starts one; \
                 or set {ENV}=host:9042 to name a Cassandra or ScyllaDB node)"
            ),
        );
        return None;
    }
    Some(nodes)
}

/// Settings of a store on `keyspace` of the node, as in production but for
/// the replication and a request timeout for a loaded 2-core machine.
pub fn settings(nodes: &[String], keyspace: &str) -> ScyllaSettings {
    ScyllaSettings {
        nodes: nodes.to_vec(),
        keyspace: keyspace.to_owned(),
        replication: REPLICATION.into(),
        consistency: ScyllaConsistency::LocalQuorum,
        request_timeout_ms: 30_000,
        connect_timeout_ms: 10_000,
        ..ScyllaSettings::default()
    }
}

/// A keyspace of one test.
pub struct Keyspace {
    pub name: String,
    pub nodes: Vec<String>,
}

impl Keyspace {
    /// A name no other test or run uses (`t_<test>_<random>`), not created.
    pub fn unmigrated(test: &str) -> Option<Keyspace> {
        let nodes = node(test)?;
        let tag: String = test
            .chars()
            .map(|c| match c {
                'a'..='z' | '0'..='9' => c,
                'A'..='Z' => c.to_ascii_lowercase(),
                _ => '_',
            })
            .take(20)
            .collect();
        let unique = uuid::Uuid::new_v4().simple().to_string();
        Some(Keyspace {
            name: format!("t_{tag}_{}", &unique[..16]),
            nodes,
        })
    }

    /// A new keyspace with every migration applied, as `skald migrate`
    /// leaves it.
    pub async fn fresh(test: &str) -> Option<Keyspace> {
        let keyspace = Keyspace::unmigrated(test)?;
        keyspace.migrate().await;
        Some(keyspace)
    }

    /// The keyspace of this run, migrated once, shared by the tests whose
    /// data is their users' only (name them after the test).
    pub async fn shared(test: &str) -> Option<Keyspace> {
        static SHARED: tokio::sync::OnceCell<String> = tokio::sync::OnceCell::const_new();
        let nodes = node(test)?;
        let name = SHARED
            .get_or_init(|| async {
                let keyspace = Keyspace::unmigrated("run").expect("a node");
                keyspace.migrate().await;
                keyspace.name
            })
            .await;
        Some(Keyspace {
            name: name.clone(),
            nodes,
        })
    }

    async fn migrate(&self) {
        let session = connect_session(&self.settings())
            .await
            .expect("connect to the CQL node");
        migrate(&session, &self.name, REPLICATION)
            .await
            .expect("migrate a fresh keyspace");
    }

    /// Drops a keyspace of one test once it passed (a failed test's stays,
    /// to be looked at).
    pub async fn drop(self) {
        let session = connect_session(&self.settings())
            .await
            .expect("connect to the CQL node");
        session
            .query_unpaged(format!("DROP KEYSPACE IF EXISTS {}", self.name), ())
            .await
            .expect("drop the test's keyspace");
    }

    pub fn settings(&self) -> ScyllaSettings {
        settings(&self.nodes, &self.name)
    }

    /// A store on this keyspace, with its own connections (as another
    /// instance, or the same one after a restart, would have).
    pub async fn store(&self) -> ScyllaStore {
        ScyllaStore::connect(&self.settings())
            .await
            .expect("connect the store")
    }

    pub async fn shared_store(&self) -> Arc<dyn Store> {
        Arc::new(self.store().await)
    }

    /// What a spawned `skald` needs to use this keyspace: a config file
    /// (in `dir`) with the nodes, the keyspace and its replication.
    pub fn config_file(&self, dir: &Path) -> PathBuf {
        let path = dir.join("skald-cql.toml");
        let nodes: Vec<String> = self.nodes.iter().map(|n| format!("{n:?}")).collect();
        std::fs::write(
            &path,
            format!(
                "[scylla]\nnodes = [{}]\nkeyspace = {:?}\nreplication = {:?}\nrequest_timeout_ms = 30000\n",
                nodes.join(", "),
                self.name,
                REPLICATION
            ),
        )
        .unwrap();
        path
    }
}
