//! Model provider adapters: implementations of
//! `skald_actors::ports::model::ModelProvider`.

pub mod openai;
pub mod simulated;
pub mod think;
pub mod upstreams;
