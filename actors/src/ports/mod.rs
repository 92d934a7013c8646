//! The ports: what the actors need from the outside world, as traits.
//!
//! `actors` never imports axum, fred, scylla or async-openai. It states here
//! what it needs (a model that streams tokens, a store for conversations) and
//! `src` plugs in the real adapters. Tests plug in the same real adapters, or
//! wrap them to inject faults.

pub mod bus;
pub mod limits;
pub mod model;
pub mod store;
