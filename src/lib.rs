//! The Skald server: configuration, the HTTP and WebSocket edge, and the
//! adapters (JWT, stores, model providers) that plug into the actors of
//! `skald-actors`. The binary (`main.rs`) only parses the command line and
//! calls [`server::Server::run`].

pub mod auth;
pub mod backup;
pub mod bus;
pub mod config;
pub mod config_reference;
pub mod edge;
pub mod limits;
pub mod metrics;
pub mod model;
pub mod server;
pub mod store;
pub mod tls;
