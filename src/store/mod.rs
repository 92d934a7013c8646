//! Store adapters: implementations of `skald_actors::ports::store::Store`.
//! Each passes the same contract suite (`skald_actors::store_contract`).

pub mod scylla;
pub mod sqlite;
