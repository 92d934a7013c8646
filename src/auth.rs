//! JWT verification (and minting, for development tokens).
//!
//! RFC 8725 in practice: the algorithm comes from the key's configuration,
//! never from the token. A token with a `kid` is checked against that public
//! key only, with its configured algorithm; a token without a `kid` against
//! the HS256 secret only. So `alg: none`, an HS256 token signed with an RSA
//! public key, an unknown `kid`, an expired token or one not yet valid, a
//! wrong `aud` or `iss`, and a token without `sub` or `exp` are all refused.
//! So is a token whose header has `crit` (RFC 7515 4.1.11: it names
//! extensions the recipient must understand, and Skald understands none),
//! and, when `auth.max_token_lifetime_secs` is set, one that lives longer
//! (`exp - iat`, or `exp - now` without `iat`).

use std::collections::HashMap;
use std::path::Path;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use base64::Engine;
use jsonwebtoken::{Algorithm, DecodingKey, EncodingKey, Header, Validation};
use serde::{Deserialize, Serialize};
use skald_actors::session::AuthedUser;

use crate::config::{AuthConfig, PublicKeyAlgorithm, Secret};

/// Why a token was refused. The message is safe to send to the client.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum AuthError {
    #[error("no token")]
    Missing,
    #[error("token refused: {0}")]
    Refused(String),
}

/// The claims Skald reads. Others are ignored.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Claims {
    pub sub: String,
    pub exp: u64,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub iat: Option<u64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub nbf: Option<u64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub aud: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub iss: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub tenant: Option<String>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub roles: Vec<String>,
}

/// Verifies tokens against the configured keys.
pub struct Verifier {
    secret: Option<DecodingKey>,
    keys: HashMap<String, (Algorithm, DecodingKey)>,
    audience: Option<String>,
    issuer: Option<String>,
    leeway_secs: u64,
    max_lifetime_secs: Option<u64>,
    /// The bot a token with the [`DEMO_ROLE`] is pinned to.
    demo_bot: Option<String>,
}

/// The role of a demo identity (minted by `GET /demo/token`): it talks to
/// the demo's bot only, whatever it asks for, on every edge.
pub const DEMO_ROLE: &str = "demo";

#[derive(Debug, thiserror::Error)]
pub enum KeyError {
    #[error("auth.keys[kid={kid}]: {message}")]
    BadKey { kid: String, message: String },
    #[error("no JWT key: set SKALD_JWT_SECRET or auth.keys")]
    NoKey,
    #[error("development secret in {path}: {source}")]
    DevSecret {
        path: String,
        source: std::io::Error,
    },
}

impl Verifier {
    /// `secret` is the HS256 secret in force (configured or development).
    pub fn new(config: &AuthConfig, secret: Option<&str>) -> Result<Verifier, KeyError> {
        let mut keys = HashMap::new();
        for key in &config.keys {
            let pem = key.public_key_pem.as_bytes();
            let parsed = match key.algorithm {
                PublicKeyAlgorithm::RS256 => {
                    DecodingKey::from_rsa_pem(pem).map(|k| (Algorithm::RS256, k))
                }
                PublicKeyAlgorithm::ES256 => {
                    DecodingKey::from_ec_pem(pem).map(|k| (Algorithm::ES256, k))
                }
                PublicKeyAlgorithm::EdDSA => {
                    DecodingKey::from_ed_pem(pem).map(|k| (Algorithm::EdDSA, k))
                }
            };
            let parsed = parsed.map_err(|e| KeyError::BadKey {
                kid: key.kid.clone(),
                message: e.to_string(),
            })?;
            keys.insert(key.kid.clone(), parsed);
        }
        let secret = secret.map(|s| DecodingKey::from_secret(s.as_bytes()));
        if secret.is_none() && keys.is_empty() {
            return Err(KeyError::NoKey);
        }
        Ok(Verifier {
            secret,
            keys,
            audience: config.audience.clone(),
            issuer: config.issuer.clone(),
            leeway_secs: config.leeway_secs,
            max_lifetime_secs: config.max_token_lifetime_secs,
            demo_bot: None,
        })
    }

    /// Pins tokens with the [`DEMO_ROLE`] to `bot` (`demo.bot`).
    pub fn pin_demo_role(mut self, bot: impl Into<String>) -> Verifier {
        self.demo_bot = Some(bot.into());
        self
    }

    /// The caller of one HTTP request.
    pub fn verify(&self, token: &str) -> Result<AuthedUser, AuthError> {
        self.verify_session(token).map(|verified| verified.user)
    }

    /// The user of a session, and until when the token lets it live.
    pub fn verify_session(&self, token: &str) -> Result<Verified, AuthError> {
        let refused = |m: &str| AuthError::Refused(m.to_owned());
        let header = jsonwebtoken::decode_header(token)
            .map_err(|_| refused("malformed token or algorithm not allowed"))?;
        if has_crit(token) {
            return Err(refused(
                "the header's crit names extensions this server does not understand",
            ));
        }
        let (algorithm, key) = match &header.kid {
            Some(kid) => {
                let (alg, key) = self.keys.get(kid).ok_or_else(|| refused("unknown kid"))?;
                (*alg, key)
            }
            None => (
                Algorithm::HS256,
                self.secret
                    .as_ref()
                    .ok_or_else(|| refused("a kid is required"))?,
            ),
        };
        if header.alg != algorithm {
            return Err(refused("algorithm not allowed for this key"));
        }
        let mut validation = Validation::new(algorithm);
        validation.leeway = self.leeway_secs;
        validation.validate_nbf = true;
        let mut required = vec!["exp", "sub"];
        match &self.audience {
            Some(aud) => {
                validation.set_audience(&[aud]);
                required.push("aud");
            }
            None => validation.validate_aud = false,
        }
        if let Some(iss) = &self.issuer {
            validation.set_issuer(&[iss]);
            required.push("iss");
        }
        validation.set_required_spec_claims(&required);
        let data =
            jsonwebtoken::decode::<VerifiedClaims>(token, key, &validation).map_err(|e| {
                use jsonwebtoken::errors::ErrorKind;
                let why = match e.kind() {
                    ErrorKind::ExpiredSignature => "token expired",
                    ErrorKind::ImmatureSignature => "token not yet valid (nbf)",
                    ErrorKind::InvalidAudience => "wrong audience",
                    ErrorKind::InvalidIssuer => "wrong issuer",
                    ErrorKind::InvalidSignature => "bad signature",
                    ErrorKind::MissingRequiredClaim(claim) => {
                        return AuthError::Refused(match claim.as_str() {
                            "aud" | "iss" => format!(
                                "missing claim `{claim}` (this server requires it: {})",
                                self.expected(claim)
                            ),
                            _ => format!("missing claim `{claim}` (sub and exp are required)"),
                        });
                    }
                    ErrorKind::InvalidAlgorithm => "algorithm not allowed",
                    _ => "invalid token",
                };
                refused(why)
            })?;
        let claims = data.claims;
        if let Some(max) = self.max_lifetime_secs {
            let from = claims.iat.unwrap_or_else(now_secs);
            if claims.exp.saturating_sub(from) > max {
                return Err(AuthError::Refused(format!(
                    "token lives longer than this server allows ({max} s from iat)"
                )));
            }
        }
        if claims.sub.is_empty() || claims.sub.chars().count() > 256 {
            return Err(refused("sub must be 1 to 256 characters"));
        }
        let bot = match &self.demo_bot {
            Some(demo) if claims.roles.iter().any(|r| r == DEMO_ROLE) => Some(demo.clone()),
            _ => None,
        };
        Ok(Verified {
            user: AuthedUser {
                id: claims.sub.into(),
                tenant: claims.tenant,
                roles: claims.roles,
                bot,
            },
            valid_until: UNIX_EPOCH
                + Duration::from_secs(
                    claims
                        .exp
                        .saturating_add(self.leeway_secs)
                        .min(LAST_SECOND_OF_9999),
                ),
        })
    }
}

/// A verified token.
#[derive(Debug, Clone)]
pub struct Verified {
    pub user: AuthedUser,
    /// `exp` plus the leeway: a session on this token ends then (PROTOCOL.md).
    pub valid_until: SystemTime,
}

/// 9999-12-31T23:59:59Z: later `exp`s are taken as this (a `SystemTime`
/// cannot hold every `u64` of seconds).
const LAST_SECOND_OF_9999: u64 = 253_402_300_799;

impl Verifier {
    /// What this server expects of `aud` or `iss`, for a refusal's message.
    fn expected(&self, claim: &str) -> String {
        let value = if claim == "aud" {
            &self.audience
        } else {
            &self.issuer
        };
        format!("\"{}\"", value.as_deref().unwrap_or_default())
    }
}

/// Whether the token's header (its first segment, already decoded once by
/// jsonwebtoken, whose `Header` has no `crit`) carries `crit`.
fn has_crit(token: &str) -> bool {
    #[derive(Deserialize)]
    struct Crit {
        crit: Option<serde::de::IgnoredAny>,
    }
    let Some(segment) = token.split('.').next() else {
        return false;
    };
    base64::engine::general_purpose::URL_SAFE_NO_PAD
        .decode(segment)
        .ok()
        .and_then(|json| serde_json::from_slice::<Crit>(&json).ok())
        .is_some_and(|header| header.crit.is_some())
}

/// What `verify` deserializes: `aud` may be a string or an array, checked by
/// jsonwebtoken itself.
#[derive(Deserialize)]
struct VerifiedClaims {
    sub: String,
    /// Required and checked by jsonwebtoken (a default here keeps its
    /// "missing claim" refusal rather than a deserialization error).
    #[serde(default)]
    exp: u64,
    #[serde(default)]
    iat: Option<u64>,
    #[serde(default)]
    tenant: Option<String>,
    #[serde(default)]
    roles: Vec<String>,
}

/// Signs HS256 claims (development tokens, tests).
pub fn mint(secret: &str, claims: &Claims) -> Result<String, jsonwebtoken::errors::Error> {
    jsonwebtoken::encode(
        &Header::new(Algorithm::HS256),
        claims,
        &EncodingKey::from_secret(secret.as_bytes()),
    )
}

/// Seconds since the Unix epoch.
pub fn now_secs() -> u64 {
    jsonwebtoken::get_current_timestamp()
}

/// The file, in the data dir, that holds the development secret.
pub const DEV_SECRET_FILE: &str = "dev-jwt-secret";

/// The HS256 secret in force: the configured one, or (when no secret and no
/// public key is configured) a development secret generated once and kept
/// in `data_dir`. Returns the secret and whether it is the development one.
pub fn resolve_secret(
    config: &AuthConfig,
    data_dir: &Path,
) -> Result<Option<(Secret, bool)>, KeyError> {
    if let Some(secret) = &config.jwt_secret {
        return Ok(Some((secret.clone(), false)));
    }
    if !config.keys.is_empty() {
        return Ok(None);
    }
    let path = data_dir.join(DEV_SECRET_FILE);
    let secret = key_file(&path).map_err(|source| KeyError::DevSecret {
        path: path.display().to_string(),
        source,
    })?;
    Ok(Some((secret, true)))
}

/// The random key kept in `path` (owner-only), made at its first use: 32
/// random bytes, base64url.
pub fn key_file(path: &Path) -> std::io::Result<Secret> {
    match std::fs::read_to_string(path) {
        Ok(secret) if secret.trim().len() >= 32 => return Ok(Secret::new(secret.trim())),
        Ok(_) => {}
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
        Err(e) => return Err(e),
    }
    if let Some(dir) = path.parent() {
        std::fs::create_dir_all(dir)?;
    }
    let bytes: [u8; 32] = rand::random();
    let secret = base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(bytes);
    write_private(path, &secret)?;
    Ok(Secret::new(secret))
}

fn write_private(path: &Path, content: &str) -> std::io::Result<()> {
    use std::io::Write;
    let mut options = std::fs::OpenOptions::new();
    options.write(true).create(true).truncate(true);
    #[cfg(unix)]
    {
        use std::os::unix::fs::OpenOptionsExt;
        options.mode(0o600);
    }
    let mut file = options.open(path)?;
    file.write_all(content.as_bytes())?;
    file.sync_all()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::PublicKeyConfig;

    const SECRET: &str = "test-secret-test-secret-test-secret!";

    fn claims(sub: &str) -> Claims {
        Claims {
            sub: sub.into(),
            exp: now_secs() + 600,
            iat: Some(now_secs()),
            nbf: None,
            aud: None,
            iss: None,
            tenant: Some("t1".into()),
            roles: vec!["admin".into()],
        }
    }

    fn verifier(config: AuthConfig) -> Verifier {
        Verifier::new(&config, Some(SECRET)).unwrap()
    }

    fn refused(v: &Verifier, token: &str) -> String {
        match v.verify(token) {
            Err(AuthError::Refused(why)) => why,
            other => panic!("expected a refusal, got {other:?}"),
        }
    }

    #[test]
    fn accepts_a_good_token() {
        let v = verifier(AuthConfig::default());
        let user = v.verify(&mint(SECRET, &claims("u-42")).unwrap()).unwrap();
        assert_eq!(user.id, "u-42");
        assert_eq!(user.tenant.as_deref(), Some("t1"));
        assert_eq!(user.roles, ["admin"]);
    }

    #[test]
    fn refuses_every_bad_kind() {
        let v = verifier(AuthConfig {
            leeway_secs: 0,
            ..AuthConfig::default()
        });
        // Wrong secret.
        assert_eq!(
            refused(
                &v,
                &mint("another-secret-another-secret-xx", &claims("u")).unwrap()
            ),
            "bad signature"
        );
        // Expired.
        let mut c = claims("u");
        c.exp = now_secs() - 10;
        assert_eq!(refused(&v, &mint(SECRET, &c).unwrap()), "token expired");
        // Not yet valid.
        let mut c = claims("u");
        c.nbf = Some(now_secs() + 300);
        assert_eq!(
            refused(&v, &mint(SECRET, &c).unwrap()),
            "token not yet valid (nbf)"
        );
        // Empty sub.
        assert!(refused(&v, &mint(SECRET, &claims("")).unwrap()).contains("sub"));
        // Missing exp and missing sub.
        let no_exp = jsonwebtoken::encode(
            &Header::new(Algorithm::HS256),
            &serde_json::json!({"sub": "u"}),
            &EncodingKey::from_secret(SECRET.as_bytes()),
        )
        .unwrap();
        assert!(refused(&v, &no_exp).contains("missing claim"));
        let no_sub = jsonwebtoken::encode(
            &Header::new(Algorithm::HS256),
            &serde_json::json!({"exp": now_secs() + 60}),
            &EncodingKey::from_secret(SECRET.as_bytes()),
        )
        .unwrap();
        assert!(!refused(&v, &no_sub).is_empty());
        // alg: none, unsigned.
        let b64 = |s: &str| base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(s);
        let none = format!(
            "{}.{}.",
            b64(r#"{"alg":"none","typ":"JWT"}"#),
            b64(&format!(r#"{{"sub":"u","exp":{}}}"#, now_secs() + 60))
        );
        assert!(v.verify(&none).is_err());
        // HS512 with the right secret: algorithm not configured.
        let hs512 = jsonwebtoken::encode(
            &Header::new(Algorithm::HS512),
            &claims("u"),
            &EncodingKey::from_secret(SECRET.as_bytes()),
        )
        .unwrap();
        assert_eq!(refused(&v, &hs512), "algorithm not allowed for this key");
        // Unknown kid.
        let mut header = Header::new(Algorithm::HS256);
        header.kid = Some("nope".into());
        let with_kid = jsonwebtoken::encode(
            &header,
            &claims("u"),
            &EncodingKey::from_secret(SECRET.as_bytes()),
        )
        .unwrap();
        assert_eq!(refused(&v, &with_kid), "unknown kid");
        // Garbage.
        assert!(v.verify("not.a.jwt").is_err());
        assert!(v.verify("").is_err());
    }

    #[test]
    fn checks_audience_and_issuer_when_configured() {
        let v = verifier(AuthConfig {
            audience: Some("skald".into()),
            issuer: Some("https://id.example".into()),
            ..AuthConfig::default()
        });
        let mut c = claims("u");
        assert!(refused(&v, &mint(SECRET, &c).unwrap()).starts_with("missing claim `"));
        c.iss = Some("https://id.example".into());
        assert_eq!(
            refused(&v, &mint(SECRET, &c).unwrap()),
            "missing claim `aud` (this server requires it: \"skald\")"
        );
        c.iss = None;
        c.aud = Some("skald".into());
        assert_eq!(
            refused(&v, &mint(SECRET, &c).unwrap()),
            "missing claim `iss` (this server requires it: \"https://id.example\")"
        );
        c.aud = Some("other".into());
        c.iss = Some("https://id.example".into());
        assert_eq!(refused(&v, &mint(SECRET, &c).unwrap()), "wrong audience");
        c.aud = Some("skald".into());
        c.iss = Some("https://evil.example".into());
        assert_eq!(refused(&v, &mint(SECRET, &c).unwrap()), "wrong issuer");
        c.iss = Some("https://id.example".into());
        assert!(v.verify(&mint(SECRET, &c).unwrap()).is_ok());
    }

    /// A header with the claims and signature of a good token.
    fn signed_with_header(header: serde_json::Value, claims: &Claims) -> String {
        use base64::engine::general_purpose::URL_SAFE_NO_PAD;
        let head = URL_SAFE_NO_PAD.encode(header.to_string());
        let body = URL_SAFE_NO_PAD.encode(serde_json::to_string(claims).unwrap());
        let signature = jsonwebtoken::crypto::sign(
            format!("{head}.{body}").as_bytes(),
            &EncodingKey::from_secret(SECRET.as_bytes()),
            Algorithm::HS256,
        )
        .unwrap();
        format!("{head}.{body}.{signature}")
    }

    #[test]
    fn a_crit_header_is_refused_whatever_it_names() {
        let v = verifier(AuthConfig::default());
        let plain = signed_with_header(
            serde_json::json!({"alg": "HS256", "typ": "JWT"}),
            &claims("u"),
        );
        assert!(
            v.verify(&plain).is_ok(),
            "the same token without crit passes"
        );
        for crit in [
            serde_json::json!(["b64"]),
            serde_json::json!(["exp"]),
            serde_json::json!([]),
        ] {
            let token = signed_with_header(
                serde_json::json!({"alg": "HS256", "typ": "JWT", "b64": false, "crit": crit}),
                &claims("u"),
            );
            assert!(refused(&v, &token).contains("crit"), "{crit}");
        }
    }

    #[test]
    fn a_token_living_longer_than_allowed_is_refused() {
        let v = verifier(AuthConfig {
            max_token_lifetime_secs: Some(3600),
            ..AuthConfig::default()
        });
        let now = now_secs();
        let mut c = claims("u");
        c.iat = Some(now);
        c.exp = now + 3600;
        assert!(v.verify(&mint(SECRET, &c).unwrap()).is_ok());
        c.exp = now + 3601;
        assert_eq!(
            refused(&v, &mint(SECRET, &c).unwrap()),
            "token lives longer than this server allows (3600 s from iat)"
        );
        // Without iat, from now.
        c.iat = None;
        c.exp = now + 7200;
        assert!(refused(&v, &mint(SECRET, &c).unwrap()).contains("longer"));
        c.exp = now + 600;
        assert!(v.verify(&mint(SECRET, &c).unwrap()).is_ok());
        // Unset: any lifetime.
        let any = verifier(AuthConfig::default());
        c.iat = Some(now);
        c.exp = now + 10 * 365 * 86_400;
        assert!(any.verify(&mint(SECRET, &c).unwrap()).is_ok());
    }

    // An Ed25519 key pair generated for these tests only.
    const ED_PRIVATE: &str = "-----BEGIN PRIVATE KEY-----\nMC4CAQAwBQYDK2VwBCIEIEn90aRdkRb8E5BdrPK0B7xMVQMy/9SX12OtQQFi+Az0\n-----END PRIVATE KEY-----\n";
    const ED_PUBLIC: &str = "-----BEGIN PUBLIC KEY-----\nMCowBQYDK2VwAyEAGU3Rd1s42Cor3kdqVed+z0ys9Dgp+wZ+LLxWBxMTCws=\n-----END PUBLIC KEY-----\n";

    #[test]
    fn public_keys_by_kid_and_no_key_confusion() {
        let config = AuthConfig {
            keys: vec![PublicKeyConfig {
                kid: "ed1".into(),
                algorithm: PublicKeyAlgorithm::EdDSA,
                public_key_pem: ED_PUBLIC.into(),
            }],
            ..AuthConfig::default()
        };
        let v = Verifier::new(&config, None).unwrap();
        let mut header = Header::new(Algorithm::EdDSA);
        header.kid = Some("ed1".into());
        let good = jsonwebtoken::encode(
            &header,
            &claims("u-ed"),
            &EncodingKey::from_ed_pem(ED_PRIVATE.as_bytes()).unwrap(),
        )
        .unwrap();
        assert_eq!(v.verify(&good).unwrap().id, "u-ed");
        // HS256 "signed" with the public key as the secret, under the same kid:
        // the classic key-confusion attack.
        let mut header = Header::new(Algorithm::HS256);
        header.kid = Some("ed1".into());
        let confused = jsonwebtoken::encode(
            &header,
            &claims("attacker"),
            &EncodingKey::from_secret(ED_PUBLIC.as_bytes()),
        )
        .unwrap();
        assert_eq!(refused(&v, &confused), "algorithm not allowed for this key");
        // Without a kid there is no HS256 secret to check against.
        assert_eq!(
            refused(&v, &mint(SECRET, &claims("u")).unwrap()),
            "a kid is required"
        );
    }

    #[test]
    fn development_secret_is_generated_once_and_private() {
        let dir =
            std::env::temp_dir().join(format!("skald-auth-{}-{}", std::process::id(), now_secs()));
        let (first, dev) = resolve_secret(&AuthConfig::default(), &dir)
            .unwrap()
            .unwrap();
        assert!(dev);
        assert!(first.expose().len() >= 32);
        let (again, _) = resolve_secret(&AuthConfig::default(), &dir)
            .unwrap()
            .unwrap();
        assert_eq!(first, again);
        #[cfg(unix)]
        {
            use std::os::unix::fs::PermissionsExt;
            let mode = std::fs::metadata(dir.join(DEV_SECRET_FILE))
                .unwrap()
                .permissions()
                .mode();
            assert_eq!(mode & 0o777, 0o600);
        }
        let configured = AuthConfig {
            jwt_secret: Some(SECRET.into()),
            ..AuthConfig::default()
        };
        assert_eq!(
            resolve_secret(&configured, &dir).unwrap(),
            Some((Secret::new(SECRET), false))
        );
        std::fs::remove_dir_all(dir).unwrap();
    }
}
