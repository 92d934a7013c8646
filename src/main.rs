//! The `skald` binary: `skald` (or `skald serve`) runs the server,
//! `skald token --sub NAME` prints a token signed with the server's HS256
//! secret (the development secret when none is configured).

use anyhow::Context;
use clap::{Parser, Subcommand};
use skald::auth::{self, Claims};
use skald::config::{Config, LogFormat};
use skald::server::Server;

#[derive(Parser)]
#[command(
    name = "skald",
    version,
    about = "Real-time streaming server for LLM chat"
)]
struct Cli {
    #[command(subcommand)]
    command: Option<Command>,
}

#[derive(Subcommand)]
enum Command {
    /// Run the server (the default).
    Serve,
    /// Exit 0 if the server on SKALD_LISTEN answers /healthz (the container's
    /// health check; no curl in the image).
    Healthcheck,
    /// Apply the ScyllaDB migrations (migrations/*.cql) that are not applied yet.
    Migrate,
    /// Copy the embedded store into DEST (a new or empty directory), online,
    /// while the server serves.
    Backup {
        /// Where the backup goes.
        dest: std::path::PathBuf,
    },
    /// Put the backup in SRC into the data dir, which must be empty of
    /// databases (the server stopped).
    Restore {
        /// A directory made by `skald backup`.
        src: std::path::PathBuf,
    },
    /// Print a JWT for a user, signed with the server's HS256 secret.
    Token {
        /// The user id (`sub` claim).
        #[arg(long)]
        sub: String,
        /// Lifetime in seconds (default: auth.token_ttl_secs).
        #[arg(long)]
        ttl_secs: Option<u64>,
        #[arg(long)]
        tenant: Option<String>,
        /// A role to grant (repeatable), e.g. --role admin.
        #[arg(long = "role")]
        roles: Vec<String>,
    },
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let cli = Cli::parse();
    let config = Config::load()?;
    init_tracing(config.log.format);
    match cli.command.unwrap_or(Command::Serve) {
        Command::Serve => serve(config).await,
        Command::Healthcheck => {
            let mut address = config.listen;
            if address.ip().is_unspecified() {
                address.set_ip(std::net::Ipv4Addr::LOCALHOST.into());
            }
            // A liveness probe of this machine's own server: with TLS,
            // its certificate names the public host, not this address.
            let scheme = if config.tls.enabled() {
                "https"
            } else {
                "http"
            };
            let response = reqwest::Client::builder()
                .timeout(std::time::Duration::from_secs(3))
                .tls_danger_accept_invalid_certs(config.tls.enabled())
                .build()?
                .get(format!("{scheme}://{address}/healthz"))
                .send()
                .await?;
            anyhow::ensure!(
                response.status().is_success(),
                "healthz answered {}",
                response.status()
            );
            Ok(())
        }
        Command::Backup { dest } => {
            anyhow::ensure!(
                !config.scylla.enabled(),
                "the store is ScyllaDB: back it up with the cluster's snapshots (docs/scylla.md)"
            );
            let summary = skald::backup::backup(&config.data_dir, &dest, &mut progress_bar())?;
            println!(
                "backed up {} ({:.1} MB) into {} in {:.1} s: {:.1} MB/s",
                names(&summary),
                summary.bytes() as f64 / 1e6,
                dest.display(),
                summary.elapsed.as_secs_f64(),
                summary.megabytes_per_second()
            );
            Ok(())
        }
        Command::Restore { src } => {
            let summary = skald::backup::restore(&src, &config.data_dir, &mut progress_bar())?;
            println!(
                "restored {} ({:.1} MB) into {}",
                names(&summary),
                summary.bytes() as f64 / 1e6,
                config.data_dir.display()
            );
            Ok(())
        }
        Command::Migrate => {
            let scylla = &config.scylla;
            anyhow::ensure!(
                scylla.enabled(),
                "no ScyllaDB configured: set SKALD_SCYLLA_NODES (the embedded store migrates itself)"
            );
            let session = skald::store::scylla::connect_session(scylla).await?;
            let applied =
                skald::store::scylla::migrate(&session, &scylla.keyspace, &scylla.replication)
                    .await?;
            if applied.is_empty() {
                println!("schema up to date");
            } else {
                println!("applied migrations {applied:?}");
            }
            Ok(())
        }
        Command::Token {
            sub,
            ttl_secs,
            tenant,
            roles,
        } => {
            let (secret, _) = auth::resolve_secret(&config.auth, &config.data_dir)?.context(
                "no HS256 secret is configured (only public keys): tokens come from your identity provider",
            )?;
            let now = auth::now_secs();
            let claims = Claims {
                sub,
                exp: now + ttl_secs.unwrap_or(config.auth.token_ttl_secs),
                iat: Some(now),
                nbf: None,
                aud: config.auth.audience.clone(),
                iss: config.auth.issuer.clone(),
                tenant,
                roles,
            };
            println!("{}", auth::mint(secret.expose(), &claims)?);
            Ok(())
        }
    }
}

async fn serve(config: Config) -> anyhow::Result<()> {
    if let Some((_, true)) = auth::resolve_secret(&config.auth, &config.data_dir)? {
        tracing::warn!(
            path = %config.data_dir.join(auth::DEV_SECRET_FILE).display(),
            "no SKALD_JWT_SECRET: using a development secret; get a token with `skald token --sub alice`"
        );
    }
    let listener = skald::server::listen(config.listen, config.listen_backlog)
        .with_context(|| format!("cannot listen on {}", config.listen))?;
    let address = listener.local_addr()?;
    let scheme = if config.tls.enabled() { "wss" } else { "ws" };
    tracing::info!(%address, "Skald listening: WebSocket at {scheme}://{address}/v1/ws");
    Server::new(config).run(listener, shutdown_signal()).await?;
    tracing::info!("stopped");
    Ok(())
}

async fn shutdown_signal() {
    let ctrl_c = async {
        let _ = tokio::signal::ctrl_c().await;
    };
    #[cfg(unix)]
    let terminate = async {
        match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
            Ok(mut signal) => {
                signal.recv().await;
            }
            Err(_) => std::future::pending::<()>().await,
        }
    };
    #[cfg(not(unix))]
    let terminate = std::future::pending::<()>();
    tokio::select! {
        _ = ctrl_c => {}
        _ = terminate => {}
    }
    tracing::info!("shutting down: draining live streams (a second signal stops at once)");
    tokio::spawn(async {
        second_signal().await;
        tracing::warn!("second signal: stopping now");
        std::process::exit(130);
    });
}

async fn second_signal() {
    #[cfg(unix)]
    {
        use tokio::signal::unix::{signal, SignalKind};
        if let (Ok(mut term), Ok(mut int)) = (
            signal(SignalKind::terminate()),
            signal(SignalKind::interrupt()),
        ) {
            tokio::select! {
                _ = term.recv() => {}
                _ = int.recv() => {}
            }
            return;
        }
    }
    let _ = tokio::signal::ctrl_c().await;
}

/// The log filter when `SKALD_LOG` is unset.
const DEFAULT_LOG_FILTER: &str = "info,ractor=warn";

fn init_tracing(format: LogFormat) {
    // ractor opens an INFO span for every actor it runs (one per session
    // and per stream): about 300 bytes each, held for the actor's life, that
    // say nothing the connection's span does not. Its warnings still show.
    let filter = tracing_subscriber::EnvFilter::try_from_env("SKALD_LOG")
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new(DEFAULT_LOG_FILTER));
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_ansi(std::io::IsTerminal::is_terminal(&std::io::stdout()));
    match format {
        LogFormat::Text => builder.init(),
        LogFormat::Json => builder.json().init(),
    }
}

/// A progress bar on stderr for `backup` and `restore` (hidden when stderr
/// is not a terminal, as under cron).
fn progress_bar() -> impl FnMut(skald::backup::Step<'_>) {
    let bar = indicatif::ProgressBar::new(0);
    bar.set_style(
        indicatif::ProgressStyle::with_template("{msg:>10} [{bar:40}] {percent:>3}%")
            .unwrap_or_else(|_| indicatif::ProgressStyle::default_bar())
            .progress_chars("=> "),
    );
    move |step| {
        if bar.message() != step.file {
            bar.set_message(step.file.to_owned());
        }
        bar.set_length(step.total);
        bar.set_position(step.done);
    }
}

fn names(summary: &skald::backup::Summary) -> String {
    let names: Vec<&str> = summary.files.iter().map(|f| f.name.as_str()).collect();
    names.join(" and ")
}
