//! Limits backends implemented with real libraries.

pub mod redis;
