//! Skald's integration tests: one test binary (so scylla, fred, rusqlite
//! and the server link once), a module per area, sharing [`common`].
//!
//! Every test runs real parts: the server on a free loopback port, real
//! WebSocket and HTTP clients, real `redis-server` processes. A test that
//! cannot run here fails; the only skips are the ones allowed by name in
//! `SKALD_ALLOW_SKIP` (see [`common::skip_allowed`]), which CI never sets.

mod common;

mod admin;
mod admin_reports;
mod backup;
mod binary;
mod binary_cql;
mod completions;
mod demo;
mod docs;
mod durability;
mod edge_connections;
mod edge_protocol;
mod failover;
mod feedback;
mod flood;
mod history;
mod history_cql;
mod hostile;
mod instances;
mod limits;
mod limits_redis;
mod loadtest_harness;
mod openai_provider;
mod ops;
mod reasoning;
mod store_scylla;
mod tls;
mod ws_auth;
mod ws_concurrency;
mod ws_streaming;
mod ws_upstream;
