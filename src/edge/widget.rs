//! The embeddable widget and the demo: `GET /widget.js` (always), and when
//! `demo.enabled`: `GET /` (a page with the widget) and
//! `POST /v1/demo/token` (short-lived anonymous tokens, rate-limited per
//! client address).
//!
//! The widget is built by `clients/widget` (`npm run build` in `clients/`)
//! into `clients/widget/dist/widget.js` and its gzipped twin, both
//! committed and embedded here, so the binary serves the widget with
//! nothing else installed. A client test fails when they are stale.

use std::sync::OnceLock;

use axum::extract::State;
use axum::http::{header, HeaderMap, HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::{Json, Router};
use jsonwebtoken::{Algorithm, DecodingKey, Validation};
use serde::Deserialize;
use skald_actors::ports::limits::{RateKey, RateLimit};
use skald_protocol::http::DemoToken;
use skald_protocol::ErrorCode;

use super::access::{bearer, check_address_rate};
use super::client_ip::ClientIp;
use super::error::ApiError;
use super::AppState;
use crate::auth::{self, Claims, DEMO_ROLE};

const WIDGET_JS: &str = include_str!("../../clients/widget/dist/widget.js");
const WIDGET_JS_GZ: &[u8] = include_bytes!("../../clients/widget/dist/widget.js.gz");
const DEMO_PAGE: &str = include_str!("../../clients/widget/demo/index.html");

/// Browsers and CDNs may keep the widget this long, then revalidate with
/// its ETag (a new server version is picked up within ten minutes).
const WIDGET_CACHE: &str = "public, max-age=600";

/// The demo page loads only itself: its script, its styles (the widget's
/// styles live in a `<style>` of its shadow root), its WebSocket.
const DEMO_CSP: &str = "default-src 'none'; script-src 'self'; style-src 'self' 'unsafe-inline'; \
     connect-src 'self'; img-src 'self' data:; base-uri 'none'; form-action 'none'; \
     frame-ancestors 'none'";

/// Sub prefix of anonymous demo users.
const DEMO_SUB_PREFIX: &str = "demo-";

/// How long after its expiry a demo token may still be renewed into a token
/// for the same (anonymous) user, so a visitor who comes back to the tab
/// keeps their conversation.
const DEMO_RENEW_GRACE_SECS: u64 = 24 * 3600;

pub fn router(state: AppState) -> Router<AppState> {
    let router = Router::new().route("/widget.js", get(widget_js));
    if state.config.demo.enabled {
        router
            .route("/", get(demo_page))
            .route("/v1/demo/token", post(demo_token))
    } else {
        router
    }
}

/// A stable fingerprint of the embedded widget (FNV-1a) for its ETag.
fn widget_etag() -> &'static str {
    static ETAG: OnceLock<String> = OnceLock::new();
    ETAG.get_or_init(|| {
        use std::hash::Hasher;
        let mut hash = fnv::FnvHasher::default();
        hash.write(WIDGET_JS.as_bytes());
        format!("\"w-{:016x}\"", hash.finish())
    })
}

/// Whether an `If-None-Match` value matches `etag` (weak comparison, lists, `*`).
fn etag_matches(if_none_match: &str, etag: &str) -> bool {
    let bare = |tag: &str| tag.trim().trim_start_matches("W/").to_owned();
    let etag = bare(etag);
    if_none_match
        .split(',')
        .any(|tag| tag.trim() == "*" || bare(tag) == etag)
}

/// Whether `Accept-Encoding` accepts gzip (present, and not with `q=0`).
fn accepts_gzip(accept_encoding: &str) -> bool {
    accept_encoding.split(',').any(|part| {
        let mut fields = part.split(';');
        let coding = fields.next().unwrap_or("").trim();
        if !coding.eq_ignore_ascii_case("gzip") && coding != "*" {
            return false;
        }
        !fields.any(|param| {
            let param = param.trim().to_ascii_lowercase();
            param
                .strip_prefix("q=")
                .and_then(|q| q.trim().parse::<f32>().ok())
                .is_some_and(|q| q <= 0.0)
        })
    })
}

/// `GET /widget.js`: the widget, gzipped when the client takes it, with an
/// ETag and a short cache lifetime; loadable from any site.
async fn widget_js(headers: HeaderMap) -> Response {
    let etag = widget_etag();
    let mut response = if headers
        .get(header::IF_NONE_MATCH)
        .and_then(|v| v.to_str().ok())
        .is_some_and(|v| etag_matches(v, etag))
    {
        StatusCode::NOT_MODIFIED.into_response()
    } else if headers
        .get(header::ACCEPT_ENCODING)
        .and_then(|v| v.to_str().ok())
        .is_some_and(accepts_gzip)
    {
        let mut response = WIDGET_JS_GZ.into_response();
        response
            .headers_mut()
            .insert(header::CONTENT_ENCODING, HeaderValue::from_static("gzip"));
        response
    } else {
        WIDGET_JS.into_response()
    };
    let h = response.headers_mut();
    h.insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("text/javascript; charset=utf-8"),
    );
    h.insert(
        header::CACHE_CONTROL,
        HeaderValue::from_static(WIDGET_CACHE),
    );
    if let Ok(value) = HeaderValue::from_str(etag) {
        h.insert(header::ETAG, value);
    }
    h.insert(header::VARY, HeaderValue::from_static("Accept-Encoding"));
    h.insert(
        header::X_CONTENT_TYPE_OPTIONS,
        HeaderValue::from_static("nosniff"),
    );
    // Any site may embed it, also with `crossorigin` and subresource integrity.
    h.insert(
        header::ACCESS_CONTROL_ALLOW_ORIGIN,
        HeaderValue::from_static("*"),
    );
    h.insert(
        "cross-origin-resource-policy",
        HeaderValue::from_static("cross-origin"),
    );
    response
}

/// `GET /`: the demo page, with the widget.
async fn demo_page() -> Response {
    let mut response = DEMO_PAGE.into_response();
    let h = response.headers_mut();
    h.insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("text/html; charset=utf-8"),
    );
    h.insert(header::CACHE_CONTROL, HeaderValue::from_static("no-cache"));
    h.insert(
        header::CONTENT_SECURITY_POLICY,
        HeaderValue::from_static(DEMO_CSP),
    );
    h.insert(
        header::X_CONTENT_TYPE_OPTIONS,
        HeaderValue::from_static("nosniff"),
    );
    h.insert(
        header::REFERRER_POLICY,
        HeaderValue::from_static("no-referrer"),
    );
    response
}

/// `POST /v1/demo/token`: a short-lived token for an anonymous visitor
/// (`sub` = `demo-<random>`), at most `demo.tokens_per_minute_per_address`
/// a minute per client address. A request that carries a demo token of
/// this server (`Authorization: Bearer`, expired less than a day ago)
/// gets a token for the same visitor, who so keeps their conversation;
/// otherwise a new identity, at most `demo.identities_per_day_per_address`
/// a day. Demo tokens carry the `demo` role: their sessions talk to the
/// demo's bot only, with its short answers and small monthly budget.
async fn demo_token(
    State(app): State<AppState>,
    ClientIp(client): ClientIp,
    headers: HeaderMap,
) -> Result<Response, ApiError> {
    let demo = &app.config.demo;
    check_address_rate(
        &app,
        RateKey::DemoTokens(client),
        RateLimit::per_minute(demo.tokens_per_minute_per_address),
        "demo tokens",
    )
    .await?;
    let Some(secret) = app.secret.as_ref().map(|s| s.expose()) else {
        return Err(ApiError::new(
            ErrorCode::Unavailable,
            "demo tokens need an HS256 secret (SKALD_JWT_SECRET); this server only has public keys",
        ));
    };
    let now = auth::now_secs();
    let renewed = bearer(&headers).and_then(|token| renewable_demo_sub(secret, token, now));
    let sub = match renewed {
        Some(sub) => sub,
        // A new identity has its own small budget (the demo's bot): how
        // many an address may have a day bounds what it can draw.
        None => {
            check_address_rate(
                &app,
                RateKey::DemoIdentities(client),
                RateLimit::per_day(demo.identities_per_day_per_address),
                "new demo identities",
            )
            .await?;
            new_demo_sub()
        }
    };
    let ttl = app.config.demo.token_ttl_secs;
    let claims = Claims {
        sub,
        exp: now + ttl,
        iat: Some(now),
        nbf: None,
        aud: app.config.auth.audience.clone(),
        iss: app.config.auth.issuer.clone(),
        tenant: None,
        roles: vec![DEMO_ROLE.to_owned()],
    };
    let token = auth::mint(secret, &claims).map_err(|e| {
        tracing::error!(error = %e, "could not mint a demo token");
        ApiError::new(ErrorCode::Internal, "could not mint a token")
    })?;
    let mut response = Json(DemoToken {
        token,
        expires_in: ttl,
    })
    .into_response();
    response
        .headers_mut()
        .insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
    Ok(response)
}

fn new_demo_sub() -> String {
    let bytes: [u8; 12] = rand::random();
    let hex: String = bytes.iter().map(|b| format!("{b:02x}")).collect();
    format!("{DEMO_SUB_PREFIX}{hex}")
}

/// The `sub` of a demo token signed with `secret` that expired less than
/// [`DEMO_RENEW_GRACE_SECS`] ago (or not yet), if `token` is one.
fn renewable_demo_sub(secret: &str, token: &str, now: u64) -> Option<String> {
    #[derive(Deserialize)]
    struct Renewable {
        sub: String,
        exp: u64,
    }
    let mut validation = Validation::new(Algorithm::HS256);
    validation.validate_exp = false;
    validation.validate_aud = false;
    validation.set_required_spec_claims(&["sub", "exp"]);
    let data = jsonwebtoken::decode::<Renewable>(
        token,
        &DecodingKey::from_secret(secret.as_bytes()),
        &validation,
    )
    .ok()?;
    let claims = data.claims;
    let hex = claims.sub.strip_prefix(DEMO_SUB_PREFIX)?;
    let well_formed = hex.len() == 24 && hex.bytes().all(|b| b.is_ascii_hexdigit());
    (well_formed && claims.exp.saturating_add(DEMO_RENEW_GRACE_SECS) > now).then_some(claims.sub)
}

#[cfg(test)]
mod tests {
    use super::*;

    const SECRET: &str = "widget-test-secret-widget-test-secret";

    fn demo_token(secret: &str, sub: &str, exp: u64) -> String {
        let claims = Claims {
            sub: sub.into(),
            exp,
            iat: None,
            nbf: None,
            aud: None,
            iss: None,
            tenant: None,
            roles: Vec::new(),
        };
        auth::mint(secret, &claims).unwrap()
    }

    #[test]
    fn etags_compare_weakly_and_in_lists() {
        let etag = widget_etag();
        assert!(etag.starts_with("\"w-") && etag.ends_with('"'));
        assert!(etag_matches(etag, etag));
        assert!(etag_matches(&format!("W/{etag}"), etag));
        assert!(etag_matches(&format!("\"other\", {etag}"), etag));
        assert!(etag_matches("*", etag));
        assert!(!etag_matches("\"other\"", etag));
    }

    #[test]
    fn gzip_is_taken_unless_refused() {
        assert!(accepts_gzip("gzip, deflate, br"));
        assert!(accepts_gzip("br;q=1.0, GZIP;q=0.5"));
        assert!(accepts_gzip("*"));
        assert!(!accepts_gzip("gzip;q=0"));
        assert!(!accepts_gzip("br, deflate"));
        assert!(!accepts_gzip(""));
    }

    #[test]
    fn the_embedded_widget_is_built() {
        assert!(WIDGET_JS.contains("SkaldWidget"));
        assert_eq!(&WIDGET_JS_GZ[..2], &[0x1f, 0x8b], "gzip magic");
        assert!(DEMO_PAGE.contains("/widget.js") && DEMO_PAGE.contains("/v1/demo/token"));
    }

    #[test]
    fn demo_subs_are_random_and_renewable_only_when_ours() {
        let now = auth::now_secs();
        let sub = new_demo_sub();
        assert_ne!(sub, new_demo_sub());
        let token = demo_token(SECRET, &sub, now + 60);
        assert_eq!(renewable_demo_sub(SECRET, &token, now), Some(sub.clone()));
        // Expired an hour ago: still renewable; two days ago: not.
        let late = demo_token(SECRET, &sub, now - 3600);
        assert_eq!(renewable_demo_sub(SECRET, &late, now), Some(sub.clone()));
        let stale = demo_token(SECRET, &sub, now - 2 * 86400);
        assert_eq!(renewable_demo_sub(SECRET, &stale, now), None);
        // Another secret, or a real user's token: never.
        let forged = demo_token("another-secret-another-secret-xx", &sub, now + 60);
        assert_eq!(renewable_demo_sub(SECRET, &forged, now), None);
        let user = demo_token(SECRET, "alice", now + 60);
        assert_eq!(renewable_demo_sub(SECRET, &user, now), None);
        let crafted = demo_token(SECRET, "demo-alice", now + 60);
        assert_eq!(renewable_demo_sub(SECRET, &crafted, now), None);
        assert_eq!(renewable_demo_sub(SECRET, "garbage", now), None);
    }
}
