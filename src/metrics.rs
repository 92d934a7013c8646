//! Prometheus metrics at `GET /metrics`.
//!
//! Events are counted where they happen with the `metrics` facade (labels
//! are bounded sets: frame types, codes, finish reasons, close codes; never
//! user ids). Counters the actors already keep as atomics (sessions, streams,
//! restarts, the Persister, the limits guard) are copied into the registry
//! when a scrape comes, so the hot paths pay nothing for them. One recorder
//! per process (the facade is global): several servers in one test process
//! share it.

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

/// The Prometheus text of every metric, after copying the actors' counters.
pub fn render(hub: &Hub) -> String {
    let c = &hub.counters;
    let load = |a: &std::sync::atomic::AtomicU64| a.load(Ordering::Relaxed);
    metrics::gauge!("skald_sessions_open").set(load(&c.sessions.open) as f64);
    metrics::counter!("skald_sessions_started_total").absolute(load(&c.sessions.started));
    metrics::counter!("skald_session_panics_total").absolute(load(&c.sessions.failed));
    metrics::counter!("skald_streams_started_total").absolute(load(&c.streams.started));
    metrics::counter!("skald_stream_panics_total").absolute(load(&c.streams.failed));
    metrics::counter!("skald_actor_restarts_total").absolute(load(&c.restarts));
    let p = &c.persister;
    metrics::counter!("skald_answers_stored_total").absolute(load(&p.answers_stored));
    metrics::counter!("skald_store_batches_total").absolute(load(&p.batches));
    metrics::counter!("skald_persister_errors_total").absolute(load(&p.store_errors));
    metrics::gauge!("skald_spool_records").set(load(&p.spooled) as f64);
    let guard = &hub.services.limits_guard;
    let (backend, up) = guard.status();
    metrics::gauge!("skald_limits_backend_up", "backend" => backend).set(if up {
        1.0
    } else {
        0.0
    });
    let g = &guard.counters;
    metrics::counter!("skald_limits_outages_total").absolute(load(&g.outages));
    metrics::counter!("skald_limits_fallback_decisions_total")
        .absolute(load(&g.fallback_decisions));
    metrics::counter!("skald_limits_reconciled_total").absolute(load(&g.reconciled));
    install().render()
}
