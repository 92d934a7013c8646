//! Stream bus adapters: implementations of
//! `skald_actors::ports::bus::StreamBus` (Redis).

pub mod redis;
