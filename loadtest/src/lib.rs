//! Skald's load-test harness.
//!
//! This crate exists so Skald can be exercised end to end without a paid model
//! provider: it serves an OpenAI-compatible mock upstream (deterministic
//! answers, controllable pace, injectable faults, and the `mock-stamped`
//! measurement mode) that the server's integration tests start in-process and
//! that the `skald-loadtest` binary can run standalone. Beside it are the load
//! generators: [`run`] (streaming sessions and their latencies), [`idle`]
//! (memory per idle session), [`openai`] (streaming chat completions from any
//! OpenAI-compatible endpoint: the mock, LiteLLM, Skald's own) and [`relay`]
//! (the bare baseline relay every figure is compared with). It depends on the
//! protocol crate only, never on the server.

pub mod client;
pub mod idle;
pub mod mock_upstream;
pub mod openai;
pub mod openai_sse;
pub mod plot;
pub mod procfs;
pub mod relay;
pub mod report;
pub mod resume;
pub mod run;
pub mod stats;

pub use report::Report;
pub use run::{run, RunConfig};
