//! Store adapters: implementations of `skald_actors::ports::store::Store`.
//!
//! For now only the in-memory store; the embedded (SQLite) and ScyllaDB
//! stores come with the persistence work and must pass the same contract
//! tests (`tests/store_contract.rs`).

pub mod memory;
