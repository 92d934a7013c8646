//! Shared by the JWT targets: the one `Verifier` under test, and an oracle
//! that tells, independently of `Verifier::verify`, whether a token was
//! really signed with the secret and carries acceptable claims.
#![allow(dead_code)]

use std::sync::OnceLock;

use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use base64::Engine;
use jsonwebtoken::{Algorithm, EncodingKey};
use serde_json::Value;
use skald::auth::Verifier;
use skald::config::AuthConfig;

pub const SECRET: &str = "fuzz-secret-fuzz-secret-fuzz-secret-0";
pub const AUDIENCE: &str = "skald";
pub const ISSUER: &str = "iss";
/// `AuthConfig::default().leeway_secs`, checked when the verifier is built.
pub const LEEWAY_SECS: u64 = 30;

/// The verifier under test, built once per process.
pub fn verifier() -> &'static Verifier {
    static VERIFIER: OnceLock<Verifier> = OnceLock::new();
    VERIFIER.get_or_init(|| {
        let config = AuthConfig {
            audience: Some(AUDIENCE.into()),
            issuer: Some(ISSUER.into()),
            ..Default::default()
        };
        assert_eq!(config.leeway_secs, LEEWAY_SECS, "default leeway changed");
        Verifier::new(&config, Some(SECRET)).expect("verifier from an HS256 secret")
    })
}

pub fn b64(bytes: impl AsRef<[u8]>) -> String {
    URL_SAFE_NO_PAD.encode(bytes)
}

/// `base64url(HMAC-SHA256(key, message))`, the canonical HS256 signature.
pub fn hs_sign(key: &[u8], message: &[u8], alg: Algorithm) -> String {
    jsonwebtoken::crypto::sign(message, &EncodingKey::from_secret(key), alg)
        .expect("HMAC signing cannot fail")
}

/// True when `token` is `message.signature` and `signature` is exactly the
/// canonical base64url HS256 signature of `message` under the secret.
pub fn signed_with_secret(token: &str) -> bool {
    match token.rsplit_once('.') {
        Some((message, signature)) => {
            signature == hs_sign(SECRET.as_bytes(), message.as_bytes(), Algorithm::HS256)
        }
        None => false,
    }
}

/// A JWT NumericDate as jsonwebtoken reads it (u64, or a float rounded).
fn numeric(value: &Value) -> Option<u64> {
    value.as_u64().or_else(|| {
        value
            .as_f64()
            .filter(|f| f.is_finite() && *f >= 0.0 && *f < u64::MAX as f64)
            .map(|f| f.round() as u64)
    })
}

/// A string claim equal to `want`, or an array of strings containing it
/// (jsonwebtoken accepts both for `aud` and `iss`).
fn names(value: &Value, want: &str) -> bool {
    match value {
        Value::String(s) => s == want,
        Value::Array(items) => items.iter().any(|v| v.as_str() == Some(want)),
        _ => false,
    }
}

/// Everything that must hold when `verify(token)` returned `Ok` with user id
/// `user_id`. `now_before` and `now_after` bracket the call to `verify`.
/// Panics with the reason when something does not hold.
pub fn assert_acceptable(token: &str, user_id: &str, now_before: u64, now_after: u64) {
    assert!(
        signed_with_secret(token),
        "ACCEPTED A TOKEN NOT SIGNED WITH THE SECRET: {token:?}"
    );
    let mut parts = token.split('.');
    let (Some(header), Some(payload), Some(_), None) =
        (parts.next(), parts.next(), parts.next(), parts.next())
    else {
        panic!("accepted a token that is not three segments: {token:?}");
    };
    let header: Value = serde_json::from_slice(
        &URL_SAFE_NO_PAD
            .decode(header)
            .expect("accepted header is base64url"),
    )
    .expect("accepted header is JSON");
    assert_eq!(header["alg"], "HS256", "accepted alg, token {token:?}");
    assert!(
        header.get("kid").is_none_or(Value::is_null),
        "accepted a kid with the HS256 secret: {token:?}"
    );
    let claims: Value = serde_json::from_slice(
        &URL_SAFE_NO_PAD
            .decode(payload)
            .expect("accepted payload is base64url"),
    )
    .expect("accepted payload is JSON");

    let sub = claims["sub"].as_str().expect("accepted sub is a string");
    let n = sub.chars().count();
    assert!(
        (1..=256).contains(&n),
        "accepted a sub of {n} chars: {token:?}"
    );
    assert_eq!(user_id, sub, "user id is not the sub");

    let exp = numeric(&claims["exp"]).unwrap_or_else(|| panic!("accepted exp: {token:?}"));
    assert!(
        exp.saturating_add(LEEWAY_SECS) >= now_before,
        "accepted an expired token (exp {exp}, now {now_before}): {token:?}"
    );
    if let Some(nbf) = claims.get("nbf").filter(|v| !v.is_null()) {
        let nbf = numeric(nbf).unwrap_or_else(|| panic!("accepted nbf: {token:?}"));
        assert!(
            nbf <= now_after + LEEWAY_SECS,
            "accepted a token not yet valid (nbf {nbf}, now {now_after}): {token:?}"
        );
    }
    assert!(names(&claims["aud"], AUDIENCE), "accepted aud: {token:?}");
    assert!(names(&claims["iss"], ISSUER), "accepted iss: {token:?}");
}

/// An Ed25519 public key (the one of `src/auth.rs`'s tests), configured under
/// `kid` "ed1" in [`keyed_verifier`] so that `kid` tricks meet a real key.
pub const ED_PUBLIC: &str = "-----BEGIN PUBLIC KEY-----\nMCowBQYDK2VwAyEAGU3Rd1s42Cor3kdqVed+z0ys9Dgp+wZ+LLxWBxMTCws=\n-----END PUBLIC KEY-----\n";
pub const ED_KID: &str = "ed1";

/// The same configuration plus one EdDSA public key under `kid` "ed1".
pub fn keyed_verifier() -> &'static Verifier {
    static VERIFIER: OnceLock<Verifier> = OnceLock::new();
    VERIFIER.get_or_init(|| {
        let config = AuthConfig {
            audience: Some(AUDIENCE.into()),
            issuer: Some(ISSUER.into()),
            keys: vec![skald::config::PublicKeyConfig {
                kid: ED_KID.into(),
                algorithm: skald::config::PublicKeyAlgorithm::EdDSA,
                public_key_pem: ED_PUBLIC.into(),
            }],
            ..Default::default()
        };
        Verifier::new(&config, Some(SECRET)).expect("verifier with an EdDSA key")
    })
}
