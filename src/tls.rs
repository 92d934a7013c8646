//! TLS served directly (`[tls]`), for deployments without a terminating
//! proxy in front: rustls with aws-lc-rs (the crypto the rest of the tree
//! uses), TLS 1.2 and 1.3 only, HTTP/1.1 (WebSocket upgrades included)
//! over it. Plain HTTP stays the default, for use behind a proxy that
//! terminates TLS.
//!
//! The certificate chain and key are PEM files. They are read at start (a
//! file that is missing, holds no certificate, or a key that does not fit
//! the certificate stops the server with an error naming the file) and
//! again on `SIGHUP` ([`Tls::reload`]): new handshakes use the new pair,
//! connections already open keep theirs, and a pair that does not load is
//! logged and leaves the previous one in force. The resolver holds the
//! pair in an [`ArcSwap`], so a handshake reads it without a lock.

use std::path::{Path, PathBuf};
use std::sync::Arc;

use arc_swap::ArcSwap;
use rustls::crypto::CryptoProvider;
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer};
use rustls::server::{ClientHello, ResolvesServerCert};
use rustls::sign::CertifiedKey;
use rustls::ServerConfig;
use serde::{Deserialize, Serialize};
use tokio_rustls::TlsAcceptor;

/// `[tls]`: both paths, or neither (plain HTTP).
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct TlsConfig {
    /// PEM: the server's certificate first, then its intermediates.
    pub cert_path: Option<PathBuf>,
    /// PEM: the private key (PKCS#8, PKCS#1 or SEC1).
    pub key_path: Option<PathBuf>,
}

impl TlsConfig {
    pub fn enabled(&self) -> bool {
        self.cert_path.is_some() || self.key_path.is_some()
    }

    /// Both paths, or neither.
    pub fn validate(&self) -> Result<(), String> {
        match (&self.cert_path, &self.key_path) {
            (Some(_), None) => Err("tls.cert_path is set: set tls.key_path too".into()),
            (None, Some(_)) => Err("tls.key_path is set: set tls.cert_path too".into()),
            _ => Ok(()),
        }
    }
}

#[derive(Debug, thiserror::Error)]
pub enum TlsError {
    #[error("tls.cert_path {}: {source}", path.display())]
    Cert {
        path: PathBuf,
        source: rustls::pki_types::pem::Error,
    },
    #[error("tls.cert_path {}: no certificate in the file", path.display())]
    NoCert { path: PathBuf },
    #[error("tls.key_path {}: {source}", path.display())]
    Key {
        path: PathBuf,
        source: rustls::pki_types::pem::Error,
    },
    #[error(
        "tls: the key does not fit the certificate, or is of a kind rustls does not sign with: {0}"
    )]
    Pair(rustls::Error),
}

/// The TLS side of the listener: the acceptor, and the pair it serves.
pub struct Tls {
    cert_path: PathBuf,
    key_path: PathBuf,
    /// The crypto every pair is loaded with, at start and on reload.
    provider: Arc<CryptoProvider>,
    resolver: Arc<Resolver>,
    acceptor: TlsAcceptor,
}

impl Tls {
    /// The listener's TLS, or `None` when `[tls]` is not set.
    pub fn load(config: &TlsConfig) -> Result<Option<Arc<Tls>>, TlsError> {
        let (Some(cert_path), Some(key_path)) = (&config.cert_path, &config.key_path) else {
            return Ok(None);
        };
        let provider = Arc::new(rustls::crypto::aws_lc_rs::default_provider());
        let pair = certified_key(cert_path, key_path, &provider)?;
        let resolver = Arc::new(Resolver(ArcSwap::from_pointee(pair)));
        let mut server = ServerConfig::builder_with_provider(provider.clone())
            .with_protocol_versions(&[&rustls::version::TLS13, &rustls::version::TLS12])
            .map_err(TlsError::Pair)?
            .with_no_client_auth()
            .with_cert_resolver(resolver.clone());
        server.alpn_protocols = vec![b"http/1.1".to_vec()];
        Ok(Some(Arc::new(Tls {
            cert_path: cert_path.clone(),
            key_path: key_path.clone(),
            provider,
            resolver,
            acceptor: TlsAcceptor::from(Arc::new(server)),
        })))
    }

    /// Reads the files again; on success new handshakes use the new pair,
    /// on failure the previous pair stays.
    pub fn reload(&self) -> Result<(), TlsError> {
        let pair = certified_key(&self.cert_path, &self.key_path, &self.provider)?;
        self.resolver.0.store(Arc::new(pair));
        Ok(())
    }

    pub fn acceptor(&self) -> &TlsAcceptor {
        &self.acceptor
    }
}

/// Reloads on every `SIGHUP` until the process ends (logged, and counted
/// in `skald_tls_reloads_total` by result).
pub async fn reload_on_sighup(tls: Arc<Tls>) {
    use tokio::signal::unix::{signal, SignalKind};
    let mut hangups = match signal(SignalKind::hangup()) {
        Ok(hangups) => hangups,
        Err(e) => {
            tracing::warn!(error = %e, "no SIGHUP handler: the TLS certificate cannot be reloaded");
            return;
        }
    };
    while hangups.recv().await.is_some() {
        match tls.reload() {
            Ok(()) => {
                tracing::info!(cert = %tls.cert_path.display(), "TLS certificate reloaded");
                metrics::counter!("skald_tls_reloads_total", "result" => "ok").increment(1);
            }
            Err(e) => {
                tracing::error!(error = %e, "TLS certificate not reloaded; the previous one stays");
                metrics::counter!("skald_tls_reloads_total", "result" => "error").increment(1);
            }
        }
    }
}

/// The pair every handshake is given.
#[derive(Debug)]
struct Resolver(ArcSwap<CertifiedKey>);

impl ResolvesServerCert for Resolver {
    fn resolve(&self, _hello: ClientHello<'_>) -> Option<Arc<CertifiedKey>> {
        Some(self.0.load_full())
    }
}

fn certified_key(
    cert_path: &Path,
    key_path: &Path,
    provider: &CryptoProvider,
) -> Result<CertifiedKey, TlsError> {
    let cert_error = |source| TlsError::Cert {
        path: cert_path.to_owned(),
        source,
    };
    let chain = CertificateDer::pem_file_iter(cert_path)
        .map_err(cert_error)?
        .collect::<Result<Vec<_>, _>>()
        .map_err(cert_error)?;
    if chain.is_empty() {
        return Err(TlsError::NoCert {
            path: cert_path.to_owned(),
        });
    }
    let key = PrivateKeyDer::from_pem_file(key_path).map_err(|source| TlsError::Key {
        path: key_path.to_owned(),
        source,
    })?;
    CertifiedKey::from_der(chain, key, provider).map_err(TlsError::Pair)
}
