//! Skald's load-test harness.
//!
//! This crate exists so Skald can be exercised end to end without a paid model
//! provider: it serves an OpenAI-compatible mock upstream (deterministic
//! answers, controllable pace, injectable faults) that the server's
//! integration tests start in-process and that the `skald-loadtest` binary can
//! run standalone. The load-generating commands will live beside it.

pub mod mock_upstream;
