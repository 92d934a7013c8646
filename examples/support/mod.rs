//! What the store benchmarks among the examples share: the `--cql
//! host:port` argument, and the settings of a fresh keyspace on that node.

use skald::store::scylla::ScyllaSettings;

/// Takes `--cql host:port` out of `args` (wherever it stands, so that the
/// positional arguments stay in order): the node, if it was given.
pub fn take_cql_node(args: &mut Vec<String>) -> anyhow::Result<Option<String>> {
    let Some(i) = args.iter().position(|a| a == "--cql") else {
        return Ok(None);
    };
    let node = args.get(i + 1).cloned();
    args.drain(i..(i + 2).min(args.len()));
    Ok(Some(
        node.ok_or_else(|| anyhow::anyhow!("--cql needs host:port"))?,
    ))
}

/// A fresh keyspace on `node`, migrated at start as
/// `scylla.migrate_on_start` does.
pub fn fresh_keyspace(node: &str) -> ScyllaSettings {
    ScyllaSettings {
        nodes: vec![node.to_owned()],
        keyspace: format!("bench_{}", uuid::Uuid::new_v4().simple()),
        replication: "{'class': 'NetworkTopologyStrategy', 'replication_factor': 1}".into(),
        migrate_on_start: true,
        request_timeout_ms: 30_000,
        ..ScyllaSettings::default()
    }
}
