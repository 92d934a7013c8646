//! Structured fuzzing of forged JWTs: arbitrary header JSON and claims JSON
//! (raw bytes, or fields chosen to look as legitimate as possible), encoded
//! as `header.claims.signature` where the signature is never the genuine
//! HS256 signature under the secret: empty, random bytes, arbitrary text, an
//! HMAC under a wrong key (including the EdDSA public key PEM, the classic
//! key-confusion attack), the secret under another HMAC algorithm, the
//! secret over other bytes, or the genuine signature re-encoded
//! non-canonically (padding, standard alphabet, stray trailing bits).
//!
//! Property: `verify` returns `Err` every time, on the verifier with the
//! HS256 secret only and on one that also has an EdDSA key under `kid`
//! "ed1". `alg: none`, algorithm confusion and `kid` tricks never pass.
#![no_main]

mod common;

use arbitrary::Arbitrary;
use base64::engine::general_purpose::{STANDARD, STANDARD_NO_PAD, URL_SAFE, URL_SAFE_NO_PAD};
use base64::Engine;
use jsonwebtoken::Algorithm;
use libfuzzer_sys::fuzz_target;
use serde_json::{json, Value};

/// A small JSON value.
#[derive(Arbitrary, Debug)]
enum J {
    Null,
    Bool(bool),
    Int(i64),
    UInt(u64),
    Float(f64),
    Str(String),
    Arr(Vec<J>),
    Obj(Vec<(String, J)>),
}

impl J {
    fn value(&self) -> Value {
        match self {
            J::Null => Value::Null,
            J::Bool(b) => json!(b),
            J::Int(i) => json!(i),
            J::UInt(u) => json!(u),
            J::Float(f) => json!(f),
            J::Str(s) => json!(s),
            J::Arr(items) => Value::Array(items.iter().map(J::value).collect()),
            J::Obj(pairs) => Value::Object(pairs.iter().map(|(k, v)| (k.clone(), v.value())).collect()),
        }
    }
}

#[derive(Arbitrary, Debug)]
enum Alg {
    None,
    /// "None", "NONE", "nOnE", "" ...
    NoneSpelling(u8),
    Hs256,
    /// "hs256", "HS256 ", "HS-256" ...
    Hs256Spelling(u8),
    Hs384,
    Hs512,
    Rs256,
    Es256,
    EdDsa,
    Ps256,
    Other(String),
    NotAString(J),
}

const NONE_SPELLINGS: [&str; 6] = ["None", "NONE", "nOnE", "", " none", "none\u{0}"];
const HS256_SPELLINGS: [&str; 6] = ["hs256", "HS256 ", " HS256", "HS-256", "HS256\u{0}", "Hs256"];

impl Alg {
    fn value(&self) -> Value {
        let pick = |list: &[&str], i: u8| json!(list[i as usize % list.len()]);
        match self {
            Alg::None => json!("none"),
            Alg::NoneSpelling(i) => pick(&NONE_SPELLINGS, *i),
            Alg::Hs256 => json!("HS256"),
            Alg::Hs256Spelling(i) => pick(&HS256_SPELLINGS, *i),
            Alg::Hs384 => json!("HS384"),
            Alg::Hs512 => json!("HS512"),
            Alg::Rs256 => json!("RS256"),
            Alg::Es256 => json!("ES256"),
            Alg::EdDsa => json!("EdDSA"),
            Alg::Ps256 => json!("PS256"),
            Alg::Other(s) => json!(s),
            Alg::NotAString(j) => j.value(),
        }
    }
}

#[derive(Arbitrary, Debug)]
enum Kid {
    /// The configured EdDSA key of `keyed_verifier`.
    Configured,
    /// "ED1", "ed1 ", "../ed1", "", "ed1\u0000" ...
    Spelling(u8),
    Null,
    Other(J),
}

const KID_SPELLINGS: [&str; 7] = ["ED1", "ed1 ", "../ed1", "", "ed1\u{0}", "/dev/null", "0"];

impl Kid {
    fn value(&self) -> Value {
        match self {
            Kid::Configured => json!(common::ED_KID),
            Kid::Spelling(i) => json!(KID_SPELLINGS[*i as usize % KID_SPELLINGS.len()]),
            Kid::Null => Value::Null,
            Kid::Other(j) => j.value(),
        }
    }
}

#[derive(Arbitrary, Debug)]
enum HeaderIn {
    /// Arbitrary bytes where the header JSON goes.
    Raw(Vec<u8>),
    Fields {
        alg: Option<Alg>,
        kid: Option<Kid>,
        typ: Option<J>,
        /// Embeds the signing key as a JWK (`{"kty":"oct","k":...}`).
        embed_jwk: bool,
        jku: Option<String>,
        crit: Option<Vec<String>>,
        /// Extra members, possibly repeating `alg` or `kid`.
        extra: Vec<(Key, J)>,
    },
}

#[derive(Arbitrary, Debug)]
enum Key {
    Alg,
    Kid,
    Typ,
    Sub,
    Exp,
    Nbf,
    Aud,
    Iss,
    Other(String),
}

impl Key {
    fn name(&self) -> &str {
        match self {
            Key::Alg => "alg",
            Key::Kid => "kid",
            Key::Typ => "typ",
            Key::Sub => "sub",
            Key::Exp => "exp",
            Key::Nbf => "nbf",
            Key::Aud => "aud",
            Key::Iss => "iss",
            Key::Other(s) => s,
        }
    }
}

#[derive(Arbitrary, Debug)]
enum Time {
    /// Ten minutes ahead (exp) or now (nbf).
    Good,
    Rel(i32),
    Abs(u64),
    Float(f64),
    Other(J),
}

impl Time {
    fn value(&self, now: u64, good: u64) -> Value {
        match self {
            Time::Good => json!(good),
            Time::Rel(d) => json!(now.saturating_add_signed(i64::from(*d))),
            Time::Abs(t) => json!(t),
            Time::Float(f) => json!(f),
            Time::Other(j) => j.value(),
        }
    }
}

#[derive(Arbitrary, Debug)]
enum Name {
    Right,
    /// The right name among others.
    Among(Vec<String>),
    Other(J),
}

impl Name {
    fn value(&self, right: &str) -> Value {
        match self {
            Name::Right => json!(right),
            Name::Among(others) => {
                let mut all: Vec<Value> = others.iter().map(|s| json!(s)).collect();
                all.insert(others.len() / 2, json!(right));
                Value::Array(all)
            }
            Name::Other(j) => j.value(),
        }
    }
}

#[derive(Arbitrary, Debug)]
enum ClaimsIn {
    /// Arbitrary bytes where the claims JSON goes.
    Raw(Vec<u8>),
    /// Claims that pass every check but the signature, unless overridden.
    Fields {
        sub: Option<Option<J>>,
        exp: Option<Time>,
        nbf: Option<Time>,
        aud: Option<Name>,
        iss: Option<Name>,
        extra: Vec<(Key, J)>,
    },
}

#[derive(Arbitrary, Debug, Clone, Copy)]
enum Hmac {
    Hs256,
    Hs384,
    Hs512,
}

impl Hmac {
    fn alg(self) -> Algorithm {
        match self {
            Hmac::Hs256 => Algorithm::HS256,
            Hmac::Hs384 => Algorithm::HS384,
            Hmac::Hs512 => Algorithm::HS512,
        }
    }
}

#[derive(Arbitrary, Debug)]
enum SigIn {
    Empty,
    Random(Vec<u8>),
    Text(String),
    /// HMAC under a key that is not the secret.
    WrongKey(Vec<u8>, Hmac),
    /// HMAC keyed with the EdDSA public key PEM (key confusion).
    PublicKeyAsSecret(Hmac),
    /// The secret, under HS384 or HS512.
    SecretOtherHmac(bool),
    /// HS256 under the secret, over other bytes than this token's.
    SecretOtherMessage(Vec<u8>),
    /// The genuine signature, re-encoded non-canonically.
    Malleated(Malleation),
}

#[derive(Arbitrary, Debug)]
enum Malleation {
    /// Base64url with `=` padding.
    Padded,
    /// Standard alphabet (`+`, `/`).
    Standard(bool),
    /// The last character changed in its two unused low bits.
    TrailingBits(u8),
    /// A character inserted at a position.
    Insert(u8, char),
    /// Truncated by one character.
    Truncated,
}

#[derive(Arbitrary, Debug)]
enum Encoding {
    UrlNoPad,
    UrlPad,
    Standard,
    StandardNoPad,
    /// Not base64 at all: the JSON as is.
    Plain,
}

impl Encoding {
    fn encode(&self, bytes: &[u8]) -> String {
        match self {
            Encoding::UrlNoPad => URL_SAFE_NO_PAD.encode(bytes),
            Encoding::UrlPad => URL_SAFE.encode(bytes),
            Encoding::Standard => STANDARD.encode(bytes),
            Encoding::StandardNoPad => STANDARD_NO_PAD.encode(bytes),
            Encoding::Plain => String::from_utf8_lossy(bytes).into_owned(),
        }
    }
}

#[derive(Arbitrary, Debug)]
enum Shape {
    Jws,
    /// A fourth segment after the signature.
    ExtraSegment(String),
    /// `header.signature`, no claims segment.
    NoClaims,
    /// Whitespace or a prefix around the token.
    Wrapped(u8),
}

#[derive(Arbitrary, Debug)]
struct Input {
    header: HeaderIn,
    claims: ClaimsIn,
    header_encoding: Encoding,
    claims_encoding: Encoding,
    signature: SigIn,
    shape: Shape,
}

/// `{"k":v,...}` written by hand so that keys may repeat.
fn object(pairs: &[(String, Value)]) -> Vec<u8> {
    let members: Vec<String> = pairs
        .iter()
        .map(|(k, v)| format!("{}:{}", json!(k), v))
        .collect();
    format!("{{{}}}", members.join(",")).into_bytes()
}

fn header_bytes(header: &HeaderIn, signing_key: Option<&[u8]>) -> Vec<u8> {
    let HeaderIn::Fields { alg, kid, typ, embed_jwk, jku, crit, extra } = header else {
        let HeaderIn::Raw(raw) = header else { unreachable!() };
        return raw.clone();
    };
    let mut pairs = Vec::new();
    if let Some(alg) = alg {
        pairs.push(("alg".to_owned(), alg.value()));
    }
    if let Some(kid) = kid {
        pairs.push(("kid".to_owned(), kid.value()));
    }
    if let Some(typ) = typ {
        pairs.push(("typ".to_owned(), typ.value()));
    }
    if *embed_jwk {
        let k = common::b64(signing_key.unwrap_or(common::ED_PUBLIC.as_bytes()));
        pairs.push(("jwk".to_owned(), json!({"kty": "oct", "k": k, "kid": common::ED_KID})));
    }
    if let Some(jku) = jku {
        pairs.push(("jku".to_owned(), json!(jku)));
    }
    if let Some(crit) = crit {
        pairs.push(("crit".to_owned(), json!(crit)));
    }
    pairs.extend(extra.iter().map(|(k, v)| (k.name().to_owned(), v.value())));
    object(&pairs)
}

fn claims_bytes(claims: &ClaimsIn, now: u64) -> Vec<u8> {
    let ClaimsIn::Fields { sub, exp, nbf, aud, iss, extra } = claims else {
        let ClaimsIn::Raw(raw) = claims else { unreachable!() };
        return raw.clone();
    };
    let mut pairs = Vec::new();
    match sub {
        None => pairs.push(("sub".to_owned(), json!("attacker"))),
        Some(None) => {}
        Some(Some(j)) => pairs.push(("sub".to_owned(), j.value())),
    }
    pairs.push(("exp".to_owned(), exp.as_ref().unwrap_or(&Time::Good).value(now, now + 600)));
    if let Some(nbf) = nbf {
        pairs.push(("nbf".to_owned(), nbf.value(now, now)));
    }
    pairs.push(("aud".to_owned(), aud.as_ref().unwrap_or(&Name::Right).value(common::AUDIENCE)));
    pairs.push(("iss".to_owned(), iss.as_ref().unwrap_or(&Name::Right).value(common::ISSUER)));
    pairs.extend(extra.iter().map(|(k, v)| (k.name().to_owned(), v.value())));
    object(&pairs)
}

fn malleate(genuine: &str, how: &Malleation) -> String {
    let raw = base64::engine::general_purpose::URL_SAFE_NO_PAD
        .decode(genuine)
        .expect("jsonwebtoken signs in base64url");
    match how {
        Malleation::Padded => URL_SAFE.encode(&raw),
        Malleation::Standard(pad) => {
            if *pad {
                STANDARD.encode(&raw)
            } else {
                STANDARD_NO_PAD.encode(&raw)
            }
        }
        Malleation::TrailingBits(bits) => {
            // 32 bytes = 43 characters, of which the last carries 4 bits of
            // data and 2 unused ones.
            const ALPHABET: &[u8] =
                b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_";
            let mut chars = genuine.as_bytes().to_vec();
            let last = chars.last_mut().expect("non-empty signature");
            let index = ALPHABET.iter().position(|c| c == last).expect("base64url");
            *last = ALPHABET[(index & !0b11) | (*bits as usize & 0b11)];
            String::from_utf8(chars).expect("ASCII")
        }
        Malleation::Insert(at, c) => {
            let mut s = genuine.to_owned();
            let at = *at as usize % (s.len() + 1);
            s.insert(at, *c);
            s
        }
        Malleation::Truncated => genuine[..genuine.len() - 1].to_owned(),
    }
}

fuzz_target!(|input: Input| {
    let now = skald::auth::now_secs();
    let secret = common::SECRET.as_bytes();

    // The key an HMAC signature will use, if any, so the header may embed it.
    let wrong_key: Option<Vec<u8>> = match &input.signature {
        SigIn::WrongKey(key, _) => {
            let mut key = key.clone();
            // (HMAC zero-pads short keys: `secret + [0]` signs like the
            // secret itself; the `signed_with_secret` guard below skips it.)
            if key == secret {
                key.push(1);
            }
            Some(key)
        }
        SigIn::PublicKeyAsSecret(_) => Some(common::ED_PUBLIC.as_bytes().to_vec()),
        _ => None,
    };

    let header = input
        .header_encoding
        .encode(&header_bytes(&input.header, wrong_key.as_deref()));
    let claims = input.claims_encoding.encode(&claims_bytes(&input.claims, now));
    let message = match input.shape {
        Shape::NoClaims => header.clone(),
        _ => format!("{header}.{claims}"),
    };

    let signature = match &input.signature {
        SigIn::Empty => String::new(),
        SigIn::Random(bytes) => common::b64(bytes),
        SigIn::Text(text) => text.clone(),
        SigIn::WrongKey(_, hmac) | SigIn::PublicKeyAsSecret(hmac) => common::hs_sign(
            wrong_key.as_deref().expect("set above"),
            message.as_bytes(),
            hmac.alg(),
        ),
        SigIn::SecretOtherHmac(hs512) => {
            let alg = if *hs512 { Algorithm::HS512 } else { Algorithm::HS384 };
            common::hs_sign(secret, message.as_bytes(), alg)
        }
        SigIn::SecretOtherMessage(other) => {
            if other == message.as_bytes() {
                return;
            }
            common::hs_sign(secret, other, Algorithm::HS256)
        }
        SigIn::Malleated(how) => malleate(
            &common::hs_sign(secret, message.as_bytes(), Algorithm::HS256),
            how,
        ),
    };

    let token = match &input.shape {
        Shape::Jws | Shape::NoClaims => format!("{message}.{signature}"),
        Shape::ExtraSegment(extra) => format!("{message}.{signature}.{extra}"),
        Shape::Wrapped(how) => match how % 4 {
            0 => format!(" {message}.{signature}"),
            1 => format!("{message}.{signature}\n"),
            2 => format!("Bearer {message}.{signature}"),
            _ => format!(".{message}.{signature}"),
        },
    };

    // A random or arbitrary signature could in theory be the genuine one;
    // such a token is not forged, and is out of this target's scope.
    if common::signed_with_secret(&token) {
        return;
    }

    for (name, verifier) in [
        ("secret-only", common::verifier()),
        ("secret+ed1", common::keyed_verifier()),
    ] {
        if let Ok(user) = verifier.verify(&token) {
            panic!(
                "FORGED TOKEN ACCEPTED by the {name} verifier as user {:?}\n token: {token:?}\n signature: {:?}",
                user.id, input.signature
            );
        }
    }
});
