//! What every load generator shares: loopback-only targets, HS256 tokens,
//! source addresses spread over 127.0.0.0/8, and the WebSocket connect.

use std::net::{Ipv4Addr, SocketAddr};
use std::time::{SystemTime, UNIX_EPOCH};

use anyhow::Context;
use serde::Serialize;
use tokio::net::{TcpSocket, TcpStream};
use tokio_tungstenite::tungstenite::client::IntoClientRequest;
use tokio_tungstenite::tungstenite::http::header::AUTHORIZATION;
use tokio_tungstenite::tungstenite::http::{HeaderValue, Uri};
use tokio_tungstenite::tungstenite::protocol::WebSocketConfig;
use tokio_tungstenite::WebSocketStream;

/// A client WebSocket over plain TCP.
pub type Ws = WebSocketStream<TcpStream>;

/// A `ws://` (or, for the `openai` load, `http://`) URL whose host is a
/// loopback address.
#[derive(Clone, Debug)]
pub struct Target {
    pub url: String,
    pub addr: SocketAddr,
}

/// Why a URL is not a target the harness may load.
#[derive(Debug, thiserror::Error)]
pub enum TargetError {
    #[error("`{0}` is not a URL")]
    NotAUrl(String),
    #[error("`{url}`: only {scheme}:// URLs are supported")]
    Scheme { url: String, scheme: &'static str },
    #[error("`{0}` has no host")]
    NoHost(String),
    #[error("`{0}` is not an IP address (use 127.0.0.1)")]
    NotAnIp(String),
    #[error("`{0}` is not a loopback address: the harness only targets this machine")]
    NotLoopback(String),
}

impl Target {
    /// Parses `url`, refusing anything that is not `ws://` on a loopback
    /// address (`localhost` counts as 127.0.0.1): the harness never loads
    /// another machine.
    pub fn parse(url: &str) -> Result<Target, TargetError> {
        Target::parse_as(url, "ws")
    }

    /// The same for an `http://` URL (an OpenAI-compatible base URL).
    pub fn parse_http(url: &str) -> Result<Target, TargetError> {
        Target::parse_as(url, "http")
    }

    fn parse_as(url: &str, scheme: &'static str) -> Result<Target, TargetError> {
        let uri: Uri = url
            .parse()
            .map_err(|_| TargetError::NotAUrl(url.to_owned()))?;
        if uri.scheme_str() != Some(scheme) {
            return Err(TargetError::Scheme {
                url: url.to_owned(),
                scheme,
            });
        }
        let host = uri
            .host()
            .ok_or_else(|| TargetError::NoHost(url.to_owned()))?;
        let host = host.trim_start_matches('[').trim_end_matches(']');
        let ip: std::net::IpAddr = if host.eq_ignore_ascii_case("localhost") {
            Ipv4Addr::LOCALHOST.into()
        } else {
            host.parse()
                .map_err(|_| TargetError::NotAnIp(host.to_owned()))?
        };
        if !ip.is_loopback() {
            return Err(TargetError::NotLoopback(url.to_owned()));
        }
        let port = uri.port_u16().unwrap_or(80);
        Ok(Target {
            url: url.to_owned(),
            addr: SocketAddr::new(ip, port),
        })
    }
}

#[derive(Serialize)]
struct Claims<'a> {
    sub: &'a str,
    iat: u64,
    exp: u64,
}

/// An HS256 token for `user`, valid for `ttl_s` seconds.
pub fn mint_token(secret: &str, user: &str, ttl_s: u64) -> anyhow::Result<String> {
    let now = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |since| since.as_secs());
    let claims = Claims {
        sub: user,
        iat: now,
        exp: now + ttl_s,
    };
    jsonwebtoken::encode(
        &jsonwebtoken::Header::new(jsonwebtoken::Algorithm::HS256),
        &claims,
        &jsonwebtoken::EncodingKey::from_secret(secret.as_bytes()),
    )
    .context("cannot sign the token")
}

/// Source address number `index` in 127.0.0.0/8: 127.a.b.c with c in 1..=250
/// and b in 1..=250, so up to 62 500 distinct sources (each with its own
/// ephemeral ports) before wrapping.
pub fn source_ip(index: u64) -> Ipv4Addr {
    let n = index % (250 * 250 * 250);
    let c = (n % 250) as u8 + 1;
    let b = ((n / 250) % 250) as u8 + 1;
    let a = (n / 62_500) as u8;
    Ipv4Addr::new(127, a, b, c)
}

/// Small client buffers: an idle harness process holds thousands of sockets.
pub fn client_ws_config() -> WebSocketConfig {
    WebSocketConfig::default()
        .read_buffer_size(4096)
        .write_buffer_size(0)
}

/// Opens a WebSocket to `target` with `Authorization: Bearer token`, from
/// source address `source` (None: the kernel's choice).
pub async fn connect(target: &Target, token: &str, source: Option<Ipv4Addr>) -> anyhow::Result<Ws> {
    let socket = if target.addr.is_ipv4() {
        TcpSocket::new_v4()?
    } else {
        TcpSocket::new_v6()?
    };
    if let (Some(ip), true) = (source, target.addr.is_ipv4()) {
        socket
            .bind(SocketAddr::new(ip.into(), 0))
            .with_context(|| format!("cannot bind {ip}"))?;
    }
    let stream = socket.connect(target.addr).await.context("TCP connect")?;
    stream.set_nodelay(true)?;
    let mut request = target.url.as_str().into_client_request()?;
    request.headers_mut().insert(
        AUTHORIZATION,
        HeaderValue::from_str(&format!("Bearer {token}"))?,
    );
    let (ws, _) =
        tokio_tungstenite::client_async_with_config(request, stream, Some(client_ws_config()))
            .await
            .context("WebSocket upgrade")?;
    Ok(ws)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_loopback_ws_urls() {
        assert!(Target::parse("ws://127.0.0.1:8080/v1/ws").is_ok());
        assert!(Target::parse("ws://127.9.9.9:1/v1/ws").is_ok());
        assert!(Target::parse("ws://localhost:8080/v1/ws").is_ok());
        assert!(Target::parse("ws://[::1]:8080/v1/ws").is_ok());
        assert!(Target::parse("ws://10.0.0.1:8080/v1/ws").is_err());
        assert!(Target::parse("ws://example.com/v1/ws").is_err());
        assert!(Target::parse("wss://127.0.0.1/v1/ws").is_err());
        assert!(Target::parse("http://127.0.0.1/v1/ws").is_err());
        assert!(Target::parse_http("http://127.0.0.1:9090/v1").is_ok());
        assert!(Target::parse_http("http://localhost/v1").is_ok());
        assert!(matches!(
            Target::parse_http("http://192.0.2.1/v1"),
            Err(TargetError::NotLoopback(_))
        ));
        assert!(matches!(
            Target::parse_http("https://127.0.0.1/v1"),
            Err(TargetError::Scheme { .. })
        ));
        assert!(matches!(
            Target::parse_http("http://api.example.com/v1"),
            Err(TargetError::NotAnIp(_))
        ));
    }

    #[test]
    fn sources_are_distinct_loopback_addresses() {
        let ips: std::collections::HashSet<_> = (0..62_500).map(source_ip).collect();
        assert_eq!(ips.len(), 62_500);
        assert!(ips.iter().all(|ip| ip.is_loopback() && ip.octets()[3] != 0));
        assert_eq!(source_ip(0), Ipv4Addr::new(127, 0, 1, 1));
    }

    #[test]
    fn tokens_are_hs256_with_sub_and_exp() {
        let token = mint_token("secret", "u-1", 60).unwrap();
        let mut validation = jsonwebtoken::Validation::new(jsonwebtoken::Algorithm::HS256);
        validation.required_spec_claims = ["exp", "sub"].into_iter().map(String::from).collect();
        let data = jsonwebtoken::decode::<serde_json::Value>(
            &token,
            &jsonwebtoken::DecodingKey::from_secret(b"secret"),
            &validation,
        )
        .unwrap();
        assert_eq!(data.claims["sub"], "u-1");
    }
}
