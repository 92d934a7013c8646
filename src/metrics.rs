//! Prometheus metrics at `GET /metrics`.
//!
//! Events are counted where they happen with the `metrics` facade (labels
//! are bounded sets: frame types, codes, finish reasons, close codes; never
//! user ids). Gauges of what the actors hold now (open sessions, the spool,
//! the limits backend) are set when a scrape comes. One recorder per
//! process (the facade is global): several servers in one test process
//! share it, and add up.

use std::sync::atomic::Ordering;
use std::sync::OnceLock;

use metrics_exporter_prometheus::{PrometheusBuilder, PrometheusHandle};
use skald_actors::hub::Hub;

static HANDLE: OnceLock<PrometheusHandle> = OnceLock::new();

/// Installs the process's recorder once and returns its handle.
pub fn install() -> PrometheusHandle {
    HANDLE
        .get_or_init(|| {
            let recorder = PrometheusBuilder::new()
                .set_buckets(&[
                    0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0,
                    10.0, 30.0, 60.0,
                ])
                .map(|b| b.build_recorder())
                .unwrap_or_else(|_| PrometheusBuilder::new().build_recorder());
            let handle = recorder.handle();
            // Another recorder may already be installed (an embedding
            // application's): then ours only renders what it is given.
            let _ = metrics::set_global_recorder(recorder);
            handle
        })
        .clone()
}

/// The Prometheus text of every metric, after setting the gauges from what
/// the actors hold now.
pub fn render(hub: &Hub) -> String {
    let c = &hub.counters;
    let load = |a: &std::sync::atomic::AtomicU64| a.load(Ordering::Relaxed) as f64;
    metrics::gauge!("skald_sessions_open").set(load(&c.sessions.open));
    metrics::gauge!("skald_spool_records").set(load(&c.persister.spooled));
    let (backend, up) = hub.services.limits_guard.status();
    metrics::gauge!("skald_limits_backend_up", "backend" => backend).set(if up {
        1.0
    } else {
        0.0
    });
    install().render()
}
