//! Limits backends implemented with real libraries: Redis, shared by every
//! instance, and the embedded one (quota counters in SQLite in the data
//! dir) for a single instance.

pub mod redis;
pub mod sqlite;
