//! TLS served directly (`[tls]`): HTTPS and `wss://` with certificates the
//! tests make (rcgen), real TLS clients (reqwest, tokio-rustls under
//! tokio-tungstenite), HSTS, a failed handshake that costs nobody else,
//! files that do not load refusing the start, and a certificate replaced
//! on SIGHUP while a session stays open (the real binary).

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use futures::{SinkExt, StreamExt};
use rustls::pki_types::{CertificateDer, ServerName};
use serde_json::{json, Value};
use tokio::net::TcpStream;
use tokio_rustls::client::TlsStream;
use tokio_rustls::TlsConnector;
use tokio_tungstenite::tungstenite::client::IntoClientRequest;
use tokio_tungstenite::tungstenite::Message;
use tokio_tungstenite::WebSocketStream;

use crate::common::redis_server::free_port;
use crate::common::spawned::{sigterm, skald, wait_exit};
use crate::common::*;

/// A self-signed certificate for 127.0.0.1 and `localhost`, written as
/// PEM files in `dir` under `name`: (certificate path, key path, DER).
fn certificate(dir: &Path, name: &str) -> (PathBuf, PathBuf, CertificateDer<'static>) {
    let made =
        rcgen::generate_simple_self_signed(vec!["127.0.0.1".into(), "localhost".into()]).unwrap();
    let cert = dir.join(format!("{name}.crt"));
    let key = dir.join(format!("{name}.key"));
    std::fs::write(&cert, made.cert.pem()).unwrap();
    std::fs::write(&key, made.signing_key.serialize_pem()).unwrap();
    (cert, key, made.cert.der().clone())
}

/// A TLS client trusting `roots` only.
fn connector(roots: &[&CertificateDer<'static>]) -> TlsConnector {
    let mut store = rustls::RootCertStore::empty();
    for root in roots {
        store.add((*root).clone()).unwrap();
    }
    let provider = Arc::new(rustls::crypto::aws_lc_rs::default_provider());
    let config = rustls::ClientConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .unwrap()
        .with_root_certificates(store)
        .with_no_client_auth();
    TlsConnector::from(Arc::new(config))
}

/// A TLS connection to `port`: the stream and the certificate it was shown.
async fn tls_connect(
    port: u16,
    roots: &[&CertificateDer<'static>],
) -> std::io::Result<(TlsStream<TcpStream>, CertificateDer<'static>)> {
    let tcp = TcpStream::connect(("127.0.0.1", port)).await?;
    let name = ServerName::IpAddress(std::net::Ipv4Addr::LOCALHOST.into());
    let stream = connector(roots).connect(name, tcp).await?;
    let shown = stream.get_ref().1.peer_certificates().unwrap()[0].clone();
    Ok((stream, shown))
}

type Wss = WebSocketStream<TlsStream<TcpStream>>;

/// A `wss://` session of `user` on `port`, once `ready`.
async fn wss(port: u16, roots: &[&CertificateDer<'static>], user: &str) -> Wss {
    let (tls, _) = tls_connect(port, roots).await.unwrap();
    let mut request = format!("wss://127.0.0.1:{port}/v1/ws")
        .into_client_request()
        .unwrap();
    request.headers_mut().insert(
        "authorization",
        format!("Bearer {}", token(user)).parse().unwrap(),
    );
    let (mut ws, _) = tokio_tungstenite::client_async(request, tls).await.unwrap();
    assert_eq!(next_frame(&mut ws).await["type"], "ready");
    ws
}

async fn next_frame(ws: &mut Wss) -> Value {
    loop {
        let message = tokio::time::timeout(WAIT, ws.next())
            .await
            .expect("a frame in time")
            .expect("the connection is open")
            .unwrap();
        if let Message::Text(text) = message {
            return serde_json::from_str(&text).unwrap();
        }
    }
}

/// Sends `text` and reads to its `done`: the answer's text.
async fn exchange(ws: &mut Wss, id: &str, text: &str) -> String {
    let frame = json!({"type": "send", "id": id, "text": text});
    ws.send(Message::text(frame.to_string())).await.unwrap();
    let mut answer = String::new();
    loop {
        let frame = next_frame(ws).await;
        match frame["type"].as_str().unwrap() {
            "delta" => answer += frame["text"].as_str().unwrap(),
            "done" => {
                assert_eq!(frame["finish_reason"], "stop", "{frame}");
                return answer;
            }
            "error" => panic!("{frame}"),
            _ => {}
        }
    }
}

/// An HTTPS client trusting `root` only, of one TLS version.
fn https(root: &CertificateDer<'static>, version: reqwest::tls::Version) -> reqwest::Client {
    reqwest::Client::builder()
        .tls_certs_only([reqwest::Certificate::from_der(root).unwrap()])
        .min_tls_version(version)
        .max_tls_version(version)
        .build()
        .unwrap()
}

#[tokio::test]
async fn https_and_wss_with_tls_1_2_and_1_3_hsts_and_plain_http_refused() {
    let dir = TempDir::new("tls");
    let (cert, key, der) = certificate(&dir.0, "server");
    let server = TestServer::with_config(|c| {
        c.tls.cert_path = Some(cert);
        c.tls.key_path = Some(key);
    })
    .await;
    let port = server.addr.port();
    let url = format!("https://127.0.0.1:{port}/healthz");
    for version in [
        reqwest::tls::Version::TLS_1_2,
        reqwest::tls::Version::TLS_1_3,
    ] {
        let response = https(&der, version).get(&url).send().await.unwrap();
        assert_eq!(response.status(), 200, "{version:?}");
        assert_eq!(
            response.headers()["strict-transport-security"],
            "max-age=31536000",
            "{version:?}"
        );
    }
    // Plain HTTP on the TLS port gets no answer, and costs nobody else.
    let plain = reqwest::get(format!("http://127.0.0.1:{port}/healthz")).await;
    assert!(plain.is_err(), "{plain:?}");
    // A client that does not trust the certificate fails its handshake.
    let stranger = certificate(&dir.0, "stranger").2;
    assert!(tls_connect(port, &[&stranger]).await.is_err());
    // WebSocket over TLS, the whole exchange.
    let mut ws = wss(port, &[&der], "alice").await;
    let answer = exchange(&mut ws, "t-1", "hello").await;
    let tokens = test_config().model.simulated_answer_tokens;
    assert_eq!(answer, simulated_answer("hello", tokens));
    server.stop().await;
}

#[tokio::test]
async fn tls_files_that_do_not_load_refuse_the_start_naming_them() {
    let dir = TempDir::new("tls-bad");
    let (cert, key, _) = certificate(&dir.0, "a");
    let (_, other_key, _) = certificate(&dir.0, "b");
    let empty = dir.0.join("empty.pem");
    std::fs::write(&empty, "").unwrap();
    let missing = dir.0.join("missing.pem");
    for (cert, key, says) in [
        (&missing, &key, "tls.cert_path"),
        (&empty, &key, "no certificate in the file"),
        (&cert, &empty, "tls.key_path"),
        (&cert, &other_key, "does not fit the certificate"),
    ] {
        let mut config = test_config();
        config.data_dir = dir.0.join("data");
        config.tls.cert_path = Some(cert.clone());
        config.tls.key_path = Some(key.clone());
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let refused = skald::server::Server::new(config)
            .run(listener, std::future::pending())
            .await
            .expect_err("the server must not start");
        let message = refused.to_string();
        assert!(message.contains(says), "{message:?} should say {says}");
    }
    // One path without the other is a configuration error.
    let mut config = test_config();
    config.tls.cert_path = Some(cert);
    let invalid = config.validate().unwrap_err().to_string();
    assert!(invalid.contains("tls.key_path"), "{invalid}");
}

/// The real binary: SIGHUP replaces the certificate for new connections,
/// a session opened before goes on, and a pair that does not load leaves
/// the last good one in force.
#[tokio::test]
async fn sighup_replaces_the_certificate_and_open_sessions_go_on() {
    let dir = TempDir::new("tls-reload");
    let (first_cert, first_key, first) = certificate(&dir.0, "first");
    let (next_cert, next_key, next) = certificate(&dir.0, "next");
    let cert = dir.0.join("server.crt");
    let key = dir.0.join("server.key");
    std::fs::copy(&first_cert, &cert).unwrap();
    std::fs::copy(&first_key, &key).unwrap();
    let port = free_port();
    let mut child = skald(&dir.0.join("data"))
        .env("SKALD_LISTEN", format!("127.0.0.1:{port}"))
        .env("SKALD_JWT_SECRET", SECRET)
        .env("SKALD_TLS_CERT_PATH", &cert)
        .env("SKALD_TLS_KEY_PATH", &key)
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::null())
        .spawn()
        .unwrap();
    let both = [&first, &next];
    let shown = async || {
        eventually(
            "the server never served TLS",
            Duration::from_millis(50),
            async || tls_connect(port, &both).await.ok().map(|(_, shown)| shown),
        )
        .await
    };
    assert_eq!(shown().await, first);
    let mut session = wss(port, &both, "alice").await;
    assert_eq!(
        exchange(&mut session, "r-1", "before").await,
        simulated_answer("before", 7)
    );

    let hangup = || {
        let status = std::process::Command::new("kill")
            .args(["-HUP", &child.id().to_string()])
            .status()
            .unwrap();
        assert!(status.success());
    };
    std::fs::copy(&next_cert, &cert).unwrap();
    std::fs::copy(&next_key, &key).unwrap();
    hangup();
    eventually(
        "the new certificate was never served",
        Duration::from_millis(50),
        async || (shown().await == next).then_some(()),
    )
    .await;
    // The session opened under the first certificate goes on.
    assert_eq!(
        exchange(&mut session, "r-2", "after").await,
        simulated_answer("after", 7)
    );

    // A broken pair: logged, and the last good one stays.
    std::fs::write(&cert, "not a certificate").unwrap();
    hangup();
    tokio::time::sleep(Duration::from_millis(300)).await;
    assert_eq!(shown().await, next);
    assert!(
        child.try_wait().unwrap().is_none(),
        "SIGHUP must not end the server"
    );
    sigterm(&child);
    assert!(wait_exit(&mut child, WAIT).success());
}
