//! Assembling and running a server: adapters chosen from the
//! configuration, the actor system, the router, and a clean stop.
//!
//! [`Server::run`] takes its listener and a shutdown future (as in tokio's
//! mini-redis), so tests start it on port 0 and stop it when they are done.
//! Tests may also swap the store or the model for their own adapters.

use std::future::Future;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use skald_actors::catalog::Catalog;
use skald_actors::hub::Hub;
use skald_actors::limits::guard::LimitsGuard;
use skald_actors::ports::model::ModelProvider;
use skald_actors::ports::store::Store;
use skald_actors::time::{Clock, SystemClock};
use skald_actors::{ActorsError, Services};
use skald_protocol::CloseCode;
use tokio::net::TcpListener;

use crate::auth::{self, KeyError, Verifier};
use crate::config::{Config, UpstreamConfig, DEFAULT_ATTEMPT_TIMEOUT_MS};
use crate::edge::{self, AppState};
use crate::limits::redis::{RedisLimits, RedisSettings, RedisSetupError};
use crate::limits::sqlite::{SqliteLimits, SqliteLimitsError};
use crate::model::openai::{OpenAiProvider, OpenAiSettings, OpenAiSetupError};
use crate::model::simulated::SimulatedModel;
use crate::model::upstreams::{Cooldown, Upstream, Upstreams, DEFAULT_UPSTREAM};
use crate::store::scylla::ScyllaError;
use crate::store::sqlite::{SqliteError, SqliteStore};

#[derive(Debug, thiserror::Error)]
pub enum ServeError {
    #[error(transparent)]
    Key(#[from] KeyError),
    #[error(transparent)]
    Actors(#[from] ActorsError),
    #[error("model provider: {0}")]
    Model(#[from] OpenAiSetupError),
    #[error(transparent)]
    Store(#[from] SqliteError),
    #[error("scylla: {0}")]
    Scylla(#[from] ScyllaError),
    #[error("redis: {0}")]
    Redis(#[from] RedisSetupError),
    #[error(transparent)]
    Quotas(#[from] SqliteLimitsError),
    #[error("server I/O: {0}")]
    Io(#[from] std::io::Error),
    #[error(transparent)]
    Tls(#[from] crate::tls::TlsError),
    #[error("key file {path}: {source}")]
    KeyFile {
        path: String,
        source: std::io::Error,
    },
}

/// Time given to writers to send their close frames at shutdown.
const CLOSE_GRACE: Duration = Duration::from_millis(500);

/// Binds the server's listening socket with room for `backlog` connections
/// waiting to be accepted (`tokio::net::TcpListener::bind` uses 128).
pub fn listen(address: SocketAddr, backlog: u32) -> std::io::Result<tokio::net::TcpListener> {
    let socket = match address {
        SocketAddr::V4(_) => tokio::net::TcpSocket::new_v4()?,
        SocketAddr::V6(_) => tokio::net::TcpSocket::new_v6()?,
    };
    socket.set_reuseaddr(true)?;
    socket.bind(address)?;
    socket.listen(backlog)
}

pub struct Server {
    config: Config,
    store: Option<Arc<dyn Store>>,
    model: Option<Arc<dyn ModelProvider>>,
    limits: Option<Arc<LimitsGuard>>,
    clock: Option<Arc<dyn Clock>>,
}

impl Server {
    pub fn new(config: Config) -> Server {
        Server {
            config,
            store: None,
            model: None,
            limits: None,
            clock: None,
        }
    }

    /// Uses this store instead of the configured one.
    pub fn with_store(mut self, store: Arc<dyn Store>) -> Server {
        self.store = Some(store);
        self
    }

    /// Uses this model instead of the configured one.
    pub fn with_model(mut self, model: Arc<dyn ModelProvider>) -> Server {
        self.model = Some(model);
        self
    }

    /// Uses this clock for limits and quotas (tests move the month).
    pub fn with_clock(mut self, clock: Arc<dyn Clock>) -> Server {
        self.clock = Some(clock);
        self
    }

    /// Serves on `listener` until `shutdown` resolves, then closes every
    /// connection with 1001 and stops the actors.
    pub async fn run(
        self,
        listener: TcpListener,
        shutdown: impl Future<Output = ()> + Send + 'static,
    ) -> Result<(), ServeError> {
        let config = self.config;
        crate::metrics::install();
        let tls = crate::tls::Tls::load(&config.tls)?;
        if let Some(tls) = &tls {
            tokio::spawn(crate::tls::reload_on_sighup(tls.clone()));
        }
        let secret = auth::resolve_secret(&config.auth, &config.data_dir)?;
        let verifier = Verifier::new(&config.auth, secret.as_ref().map(|(s, _)| s.expose()))?
            .pin_demo_role(config.demo.bot.clone());
        let model = match self.model {
            Some(model) => model,
            None => default_model(&config)?,
        };
        let store: Arc<dyn Store> = match self.store {
            Some(store) => store,
            None if config.scylla.enabled() => {
                crate::store::scylla::connect_store(&config.scylla).await?
            }
            None => Arc::new(SqliteStore::open_in(&config.data_dir)?),
        };
        tracing::info!(model = model.name(), "model provider ready");
        let limits_guard = match self.limits {
            Some(guard) => guard,
            None => Arc::new(limits_guard(&config).await?),
        };
        let bus = stream_bus(&config).await?;
        let hub = Hub::start(Services {
            store,
            model,
            catalog: Catalog::new(config.bots_in_force(), config.limits.clone()),
            sessions: config.sessions.clone(),
            limits: config.limits.clone(),
            limits_guard,
            clock: self.clock.unwrap_or_else(|| Arc::new(SystemClock)),
            spool_path: config.data_dir.join("spool").join("answers.jsonl"),
            bus,
        })
        .await?;
        let state = AppState {
            hub: hub.clone(),
            verifier: Arc::new(verifier),
            config: Arc::new(config),
            secret: secret.map(|(s, _)| s),
        };
        let drain_timeout = Duration::from_millis(state.config.drain_timeout_ms);
        let limits = edge::accept::EdgeLimits::new(&state.config, edge::accept::open_files_limit());
        tracing::info!(
            max_open = limits.max_open,
            max_pending = limits.pending.total,
            "connection limits"
        );
        let connections = edge::accept::Edge::new(limits);
        let metrics_server = match state.config.metrics.listen {
            Some(address) => {
                let listener = tokio::net::TcpListener::bind(address).await?;
                tracing::info!("metrics on http://{}/metrics", listener.local_addr()?);
                let app = edge::metrics_router(state.clone());
                Some(tokio::spawn(edge::accept::serve(
                    listener,
                    app,
                    connections.clone(),
                    None,
                    CLOSE_GRACE,
                    std::future::pending(),
                )))
            }
            None => None,
        };
        let app = edge::router(state);
        // The listener stays open while draining, so that `/readyz` can say
        // 503 and the history API keeps working; it closes once the
        // streams are done.
        let (stop_http, http_stopped) = tokio::sync::oneshot::channel::<()>();
        let drain = tokio::spawn(drain(hub.clone(), drain_timeout, shutdown, stop_http));
        edge::accept::serve(listener, app, connections, tls, CLOSE_GRACE, async {
            let _ = http_stopped.await;
        })
        .await;
        drain.abort();
        if let Some(metrics_server) = metrics_server {
            metrics_server.abort();
        }
        // Upgraded connections outlive the HTTP server: close them.
        hub.close_all(CloseCode::GoingAway, "server shutting down");
        tokio::time::sleep(CLOSE_GRACE).await;
        if let Err(e) = hub.sync_storage().await {
            tracing::error!(error = %e, "could not flush the persister at shutdown");
        }
        hub.shutdown().await;
        Ok(())
    }
}

/// Waits for the shutdown signal, then drains: new messages are refused and
/// `/readyz` answers 503, live streams get `drain_timeout` to finish, the
/// rest are ended with `unavailable`; then the HTTP server is stopped.
async fn drain(
    hub: Arc<Hub>,
    drain_timeout: Duration,
    shutdown: impl Future<Output = ()>,
    stop_http: tokio::sync::oneshot::Sender<()>,
) {
    shutdown.await;
    hub.start_draining();
    let live = hub.live_streams().await;
    tracing::info!(
        live_streams = live,
        timeout_ms = drain_timeout.as_millis() as u64,
        "draining"
    );
    let deadline = tokio::time::Instant::now() + drain_timeout;
    while hub.live_streams().await > 0 && tokio::time::Instant::now() < deadline {
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let left = hub.live_streams().await;
    if left > 0 {
        tracing::warn!(
            streams = left,
            "drain timeout: ending the remaining streams"
        );
        hub.abort_streams("the server is shutting down");
        let deadline = tokio::time::Instant::now() + Duration::from_secs(5);
        while hub.live_streams().await > 0 && tokio::time::Instant::now() < deadline {
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }
    let _ = stop_http.send(());
}

fn redis_settings(config: &Config, url: &crate::config::Secret) -> RedisSettings {
    RedisSettings {
        url: url.expose().to_owned(),
        command_timeout: Duration::from_millis(config.redis.command_timeout_ms),
        key_prefix: config.redis.key_prefix.clone(),
    }
}

/// With Redis, the stream bus every instance shares: streams published,
/// followed and cancelled across instances. Without Redis, or with
/// `redis.share_streams` off, none: streams stay where they run.
async fn stream_bus(
    config: &Config,
) -> Result<Option<Arc<dyn skald_actors::ports::bus::StreamBus>>, ServeError> {
    let Some(url) = config
        .redis
        .url
        .as_ref()
        .filter(|_| config.redis.share_streams)
    else {
        return Ok(None);
    };
    let bus = crate::bus::redis::RedisBus::connect(crate::bus::redis::BusSettings {
        redis: redis_settings(config, url),
        stream_lease: config.sessions.stream_lease(),
        resume_window: config.sessions.resume_window(),
    })
    .await?;
    Ok(Some(Arc::new(bus)))
}

/// Redis with the configured failure policy, or the embedded limits (quota
/// counters in the data dir).
async fn limits_guard(config: &Config) -> Result<LimitsGuard, ServeError> {
    let Some(url) = &config.redis.url else {
        let embedded = SqliteLimits::open_in(&config.data_dir)?;
        return Ok(LimitsGuard::local(Arc::new(embedded)));
    };
    let redis = RedisLimits::connect(redis_settings(config, url)).await?;
    tracing::info!(policy = ?config.redis.failure_policy, "limits and quotas in Redis");
    Ok(LimitsGuard::shared(
        Arc::new(redis),
        config.redis.failure_policy,
    ))
}

/// The file, in the data dir, that holds the `safety_identifier` hash key
/// when none is configured.
pub const USER_HASH_KEY_FILE: &str = "user-hash-key";

/// The model provider: the configured upstreams (the `default` one of
/// `[model]` and the named ones), tried in each bot's order; without any,
/// the simulated model.
fn default_model(config: &Config) -> Result<Arc<dyn ModelProvider>, ServeError> {
    let m = &config.model;
    let names = config.upstream_names();
    if names.is_empty() {
        return Ok(Arc::new(SimulatedModel {
            tokens_per_second: m.simulated_tokens_per_second,
            answer_tokens: m.simulated_answer_tokens,
        }));
    }
    let user_hash_key = match &m.user_hash_key {
        Some(key) => key.clone(),
        None => {
            let path = config.data_dir.join(USER_HASH_KEY_FILE);
            crate::auth::key_file(&path).map_err(|source| ServeError::KeyFile {
                path: path.display().to_string(),
                source,
            })?
        }
    };
    let mut upstreams = Vec::with_capacity(names.len());
    if let Some(url) = &m.upstream_url {
        upstreams.push(upstream(
            DEFAULT_UPSTREAM,
            UpstreamConfig {
                url: url.clone(),
                api_key: m.upstream_api_key.clone(),
                model: m.upstream_model.clone(),
                connect_timeout_ms: m.connect_timeout_ms,
                first_token_timeout_ms: DEFAULT_ATTEMPT_TIMEOUT_MS,
            },
            &user_hash_key,
        )?);
    }
    for (name, u) in &config.upstreams {
        upstreams.push(upstream(name, u.clone(), &user_hash_key)?);
    }
    Ok(Arc::new(Upstreams::new(
        upstreams,
        Cooldown {
            after_failures: m.cooldown_after_failures,
            duration: Duration::from_millis(m.cooldown_ms),
        },
    )))
}

fn upstream(
    name: &str,
    u: UpstreamConfig,
    user_hash_key: &crate::config::Secret,
) -> Result<Upstream, ServeError> {
    let provider = OpenAiProvider::new(OpenAiSettings {
        base_url: u.url.to_string(),
        api_key: u.api_key.as_ref().map(|k| k.expose().to_owned()),
        default_model: u.model,
        connect_timeout: Duration::from_millis(u.connect_timeout_ms),
        user_hash_key: user_hash_key.clone(),
    })?;
    Ok(Upstream {
        name: name.to_owned(),
        provider: Arc::new(provider),
        first_token_timeout: Duration::from_millis(u.first_token_timeout_ms),
    })
}

#[cfg(test)]
mod tests {
    /// The kernel reports a listening socket's backlog as its send queue
    /// (`ss -lnt`); it must be what was asked, up to `net.core.somaxconn`.
    #[tokio::test]
    async fn listen_asks_the_kernel_for_the_whole_backlog() {
        let listener = super::listen("127.0.0.1:0".parse().unwrap(), 1000).unwrap();
        let port = listener.local_addr().unwrap().port();
        let filter = format!("sport = :{port}");
        // `ss` (iproute2) is on every machine this project runs on; a
        // machine without it fails this test rather than skip it.
        let out = std::process::Command::new("ss")
            .args(["-ltnH", &filter])
            .output()
            .expect("`ss` (iproute2) reads the socket's backlog from the kernel");
        let text = String::from_utf8_lossy(&out.stdout);
        let backlog: u32 = text
            .split_whitespace()
            .nth(2)
            .and_then(|q| q.parse().ok())
            .unwrap_or_else(|| panic!("unexpected ss output: {text:?}"));
        let somaxconn: u32 = std::fs::read_to_string("/proc/sys/net/core/somaxconn")
            .ok()
            .and_then(|s| s.trim().parse().ok())
            .unwrap_or(u32::MAX);
        assert_eq!(backlog, 1000.min(somaxconn));
    }
}
