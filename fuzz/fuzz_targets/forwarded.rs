//! Fuzzes the walk of `X-Forwarded-For` / `Forwarded` behind trusted
//! proxies (`skald::edge::client_ip`), which reads header text that any
//! client can write.
//!
//! Input: the first byte picks the header, the rest is header lines split
//! on `\n`. The peer is always a trusted proxy (127.0.0.1, in the trusted
//! 127.0.0.0/8), so every input is walked.
//!
//! Properties:
//! - the walk never panics;
//! - the client it names is the peer or an address written in the header
//!   (it never makes one up);
//! - it is deterministic.
#![no_main]

use std::net::IpAddr;

use libfuzzer_sys::fuzz_target;
use skald::edge::client_ip::{ForwardedHeader, TrustedProxies};

fuzz_target!(|data: &[u8]| {
    let Some((&pick, rest)) = data.split_first() else {
        return;
    };
    let header = if pick % 2 == 0 {
        ForwardedHeader::XForwardedFor
    } else {
        ForwardedHeader::Forwarded
    };
    let name = if pick % 2 == 0 {
        "x-forwarded-for"
    } else {
        "forwarded"
    };
    let mut headers = axum::http::HeaderMap::new();
    for line in rest.split(|b| *b == b'\n').take(16) {
        // What the HTTP parser would have refused never reaches the walk.
        let Ok(value) = axum::http::HeaderValue::from_bytes(line) else {
            continue;
        };
        headers.append(name, value);
    }
    let trusted = TrustedProxies::try_from(vec!["127.0.0.0/8".to_owned(), "fd00::/8".to_owned()])
        .expect("fixed networks");
    let peer: IpAddr = [127, 0, 0, 1].into();
    let client = trusted.client(peer, header, &headers);
    assert_eq!(client, trusted.client(peer, header, &headers));
    if client != peer {
        // Every address written anywhere in the header, however it is
        // delimited: the named client must be one of them.
        let text = String::from_utf8_lossy(rest);
        let written: Vec<IpAddr> = text
            .split(|c: char| matches!(c, ',' | ';' | '=' | '"' | '\n') || c.is_whitespace())
            .filter_map(|token| {
                let bare = token.trim_start_matches('[');
                let bare = bare.split(']').next().unwrap_or(bare);
                token
                    .parse::<IpAddr>()
                    .ok()
                    .or_else(|| token.parse::<std::net::SocketAddr>().ok().map(|s| s.ip()))
                    .or_else(|| bare.parse::<IpAddr>().ok())
            })
            .map(|a| a.to_canonical())
            .collect();
        assert!(
            written.contains(&client),
            "client {client} is not in the header {text:?}"
        );
    }
});
