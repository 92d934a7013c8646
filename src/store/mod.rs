//! Store adapters: implementations of `skald_actors::ports::store::Store`.
//! Each passes the same contract suite (`skald_actors::testkit::store`):
//! SQLite in its unit tests, ScyllaDB on a real CQL node in
//! `tests/it/store_scylla.rs`.

pub mod scylla;
pub mod sqlite;
