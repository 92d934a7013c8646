//! The client's address behind a load balancer.
//!
//! The address every per-address limit counts, the audit log records and
//! the GDPR job anonymises is the TCP peer's, unless the peer is one of the
//! operator's `trusted_proxies`: then it is read from the forwarding header
//! the operator named (`forwarded_header`), walking from its right end (the
//! hop the nearest proxy appended) to the left, past every hop that is
//! itself a trusted proxy. The first hop that is not is the client. A hop a
//! proxy could not name (`unknown`, an obfuscated `_id`, garbage) ends the
//! walk at the last trusted address: those clients share their proxy's
//! bucket rather than pick their own.
//!
//! Only the named header is read. A proxy that appends `X-Forwarded-For`
//! passes a client's own `Forwarded` header through untouched, so reading
//! "whichever is present" would let any client choose its address.
//! Everything left of the first untrusted hop was written by the client and
//! is never looked at.
//!
//! `axum-client-ip`'s rightmost extractors trust exactly one hop and do not
//! check the peer against a list, which is why this walk is our own.

use std::fmt;
use std::net::{IpAddr, SocketAddr};

use axum::extract::{ConnectInfo, FromRequestParts};
use axum::http::request::Parts;
use axum::http::{HeaderMap, HeaderName};
use ipnet::IpNet;
use serde::{Deserialize, Serialize};

use super::AppState;

/// The networks whose forwarding headers are believed. A bare address is
/// a network of one.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(try_from = "Vec<String>", into = "Vec<String>")]
pub struct TrustedProxies(Vec<IpNet>);

/// A `trusted_proxies` entry that is neither an address nor a CIDR.
#[derive(Debug, thiserror::Error)]
#[error("trusted_proxies: {0:?} is neither an IP address nor a CIDR (10.0.0.0/8)")]
pub struct BadProxyNet(String);

impl TryFrom<Vec<String>> for TrustedProxies {
    type Error = BadProxyNet;

    fn try_from(entries: Vec<String>) -> Result<TrustedProxies, BadProxyNet> {
        entries
            .into_iter()
            .map(|entry| {
                let text = entry.trim();
                text.parse::<IpNet>()
                    .or_else(|_| text.parse::<IpAddr>().map(IpNet::from))
                    .map_err(|_| BadProxyNet(entry))
            })
            .collect::<Result<_, _>>()
            .map(TrustedProxies)
    }
}

impl From<TrustedProxies> for Vec<String> {
    fn from(proxies: TrustedProxies) -> Vec<String> {
        proxies.0.iter().map(IpNet::to_string).collect()
    }
}

impl TrustedProxies {
    pub fn is_empty(&self) -> bool {
        self.0.is_empty()
    }

    /// Whether `address` is one of the trusted proxies.
    pub fn trusts(&self, address: IpAddr) -> bool {
        let address = address.to_canonical();
        self.0.iter().any(|net| net.contains(&address))
    }

    /// The client's address, for a request from `peer` with `headers`.
    pub fn client(&self, peer: IpAddr, header: ForwardedHeader, headers: &HeaderMap) -> IpAddr {
        // An IPv4 address mapped into IPv6 (a dual-stack listener's view of an
        // IPv4 client) is the IPv4 address: one client, one bucket.
        let mut client = peer.to_canonical();
        if !self.trusts(client) {
            return client;
        }
        // Header lines in reverse, each line's hops in reverse: no copy.
        let hops = headers
            .get_all(header.name())
            .iter()
            .rev()
            .flat_map(|line| line.as_bytes().rsplit(|b| *b == b','))
            .map(|hop| match header {
                ForwardedHeader::XForwardedFor => x_forwarded_for_hop(hop),
                ForwardedHeader::Forwarded => forwarded_hop(hop),
            });
        for hop in hops {
            let Some(address) = hop else { break };
            client = address.to_canonical();
            if !self.trusts(client) {
                break;
            }
        }
        client
    }
}

/// Which forwarding header the trusted proxies write.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum ForwardedHeader {
    /// `X-Forwarded-For: client, proxy1` (Nginx's
    /// `$proxy_add_x_forwarded_for`, HAProxy's `option forwardfor`).
    #[default]
    XForwardedFor,
    /// RFC 7239 `Forwarded: for=client, for="[2001:db8::1]:443"`.
    Forwarded,
}

impl ForwardedHeader {
    fn name(self) -> HeaderName {
        match self {
            ForwardedHeader::XForwardedFor => HeaderName::from_static("x-forwarded-for"),
            ForwardedHeader::Forwarded => axum::http::header::FORWARDED,
        }
    }
}

impl fmt::Display for ForwardedHeader {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name().as_str())
    }
}

/// One `X-Forwarded-For` hop: an address, or an address with a port
/// (`192.0.2.1:4711`, `[2001:db8::1]:4711`), as some proxies write them.
fn x_forwarded_for_hop(hop: &[u8]) -> Option<IpAddr> {
    address(std::str::from_utf8(hop).ok()?.trim())
}

/// The `for=` of one RFC 7239 element (`for=192.0.2.1;proto=https`,
/// `For="[2001:db8::1]:4711"`); None for `unknown`, an obfuscated
/// identifier, or an element without `for`.
fn forwarded_hop(element: &[u8]) -> Option<IpAddr> {
    let element = std::str::from_utf8(element).ok()?;
    let value = element.split(';').find_map(|pair| {
        let (name, value) = pair.split_once('=')?;
        name.trim()
            .eq_ignore_ascii_case("for")
            .then_some(value.trim())
    })?;
    let value = value
        .strip_prefix('"')
        .and_then(|v| v.strip_suffix('"'))
        .unwrap_or(value);
    address(value)
}

fn address(text: &str) -> Option<IpAddr> {
    text.parse::<IpAddr>()
        .ok()
        .or_else(|| text.parse::<SocketAddr>().ok().map(|s| s.ip()))
        .or_else(|| {
            // `[2001:db8::1]` without a port.
            let inner = text.strip_prefix('[')?.strip_suffix(']')?;
            inner.parse::<std::net::Ipv6Addr>().ok().map(IpAddr::V6)
        })
}

/// The client's address (see the module doc): what every route counts,
/// audits and anonymises.
#[derive(Debug, Clone, Copy)]
pub struct ClientIp(pub IpAddr);

impl FromRequestParts<AppState> for ClientIp {
    type Rejection = std::convert::Infallible;

    async fn from_request_parts(
        parts: &mut Parts,
        app: &AppState,
    ) -> Result<ClientIp, Self::Rejection> {
        Ok(ClientIp(client_ip(parts, app)))
    }
}

/// The client's address of a request (the peer's when the server was not
/// given one, as in a router served without connect info).
pub fn client_ip(parts: &Parts, app: &AppState) -> IpAddr {
    let peer = parts
        .extensions
        .get::<ConnectInfo<SocketAddr>>()
        .map_or(IpAddr::from([0, 0, 0, 0]), |c| c.0.ip());
    app.config
        .trusted_proxies
        .client(peer, app.config.forwarded_header, &parts.headers)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn proxies(list: &[&str]) -> TrustedProxies {
        TrustedProxies::try_from(list.iter().map(|s| s.to_string()).collect::<Vec<_>>()).unwrap()
    }

    fn ip(text: &str) -> IpAddr {
        text.parse().unwrap()
    }

    fn headers(name: &str, lines: &[&str]) -> HeaderMap {
        let mut headers = HeaderMap::new();
        for line in lines {
            headers.append(HeaderName::try_from(name).unwrap(), line.parse().unwrap());
        }
        headers
    }

    const XFF: ForwardedHeader = ForwardedHeader::XForwardedFor;

    #[test]
    fn an_untrusted_peer_is_the_client_whatever_it_says() {
        let trusted = proxies(&["10.0.0.0/8"]);
        let said = headers("x-forwarded-for", &["203.0.113.9"]);
        assert_eq!(
            trusted.client(ip("198.51.100.7"), XFF, &said),
            ip("198.51.100.7")
        );
        assert_eq!(
            TrustedProxies::default().client(ip("10.0.0.1"), XFF, &said),
            ip("10.0.0.1")
        );
    }

    #[test]
    fn the_walk_stops_at_the_first_untrusted_hop_from_the_right() {
        let trusted = proxies(&["10.0.0.0/8", "192.0.2.1"]);
        // The client wrote 1.1.1.1 itself; 203.0.113.9 is what the outer
        // proxy (192.0.2.1) saw; the inner one (10.0.0.2) saw 192.0.2.1.
        let said = headers("x-forwarded-for", &["1.1.1.1, 203.0.113.9", "192.0.2.1"]);
        assert_eq!(
            trusted.client(ip("10.0.0.2"), XFF, &said),
            ip("203.0.113.9")
        );
        // Every hop trusted: the leftmost one is the client.
        let said = headers("x-forwarded-for", &["10.1.1.1,10.0.0.3"]);
        assert_eq!(trusted.client(ip("10.0.0.2"), XFF, &said), ip("10.1.1.1"));
        // No header: the proxy itself.
        assert_eq!(
            trusted.client(ip("10.0.0.2"), XFF, &HeaderMap::new()),
            ip("10.0.0.2")
        );
    }

    #[test]
    fn a_hop_that_cannot_be_read_ends_the_walk_at_the_proxy() {
        let trusted = proxies(&["10.0.0.0/8"]);
        let said = headers("x-forwarded-for", &["203.0.113.9, garbage"]);
        assert_eq!(trusted.client(ip("10.0.0.2"), XFF, &said), ip("10.0.0.2"));
        let said = headers("forwarded", &["for=203.0.113.9, for=unknown"]);
        assert_eq!(
            trusted.client(ip("10.0.0.2"), ForwardedHeader::Forwarded, &said),
            ip("10.0.0.2")
        );
    }

    #[test]
    fn ports_brackets_quotes_and_mapped_addresses() {
        let trusted = proxies(&["10.0.0.0/8", "::1"]);
        let said = headers("x-forwarded-for", &["203.0.113.9:4711"]);
        assert_eq!(trusted.client(ip("::1"), XFF, &said), ip("203.0.113.9"));
        let said = headers("x-forwarded-for", &["[2001:db8::7]:80"]);
        assert_eq!(
            trusted.client(ip("10.0.0.1"), XFF, &said),
            ip("2001:db8::7")
        );
        let said = headers(
            "forwarded",
            &[r#"for=1.1.1.1;proto=http, For="[2001:db8::7]:4711";by=10.0.0.1"#],
        );
        assert_eq!(
            trusted.client(ip("10.0.0.1"), ForwardedHeader::Forwarded, &said),
            ip("2001:db8::7")
        );
        // A dual-stack listener sees an IPv4 proxy as ::ffff:10.0.0.1.
        let said = headers("x-forwarded-for", &["::ffff:203.0.113.9"]);
        assert_eq!(
            trusted.client(ip("::ffff:10.0.0.1"), XFF, &said),
            ip("203.0.113.9")
        );
    }

    #[test]
    fn only_the_named_header_is_read() {
        let trusted = proxies(&["10.0.0.0/8"]);
        let mut said = headers("x-forwarded-for", &["203.0.113.9"]);
        said.append(
            axum::http::header::FORWARDED,
            "for=1.1.1.1".parse().unwrap(),
        );
        assert_eq!(
            trusted.client(ip("10.0.0.2"), XFF, &said),
            ip("203.0.113.9")
        );
        assert_eq!(
            trusted.client(ip("10.0.0.2"), ForwardedHeader::Forwarded, &said),
            ip("1.1.1.1")
        );
    }

    #[test]
    fn entries_are_addresses_or_networks() {
        assert!(proxies(&["10.0.0.1", "fd00::/8", " 192.168.0.0/16 "]).trusts(ip("192.168.4.4")));
        let err = TrustedProxies::try_from(vec!["10.0.0.0/33".to_owned()]).unwrap_err();
        assert!(err.to_string().contains("10.0.0.0/33"), "{err}");
    }
}
