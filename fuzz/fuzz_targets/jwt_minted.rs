//! Tokens signed with the RIGHT secret by `skald::auth::mint`, with fuzzed
//! claims: `sub` (empty to well over 256 characters), `exp` and `nbf`
//! relative to now or absolute, `aud` and `iss` right, missing or near
//! misses, `tenant`, `roles`.
//!
//! Properties:
//! - `verify` never panics;
//! - `Ok` implies: `sub` is 1..=256 characters, `exp` is not past (30 s
//!   leeway), `nbf` not ahead, `aud` == "skald", `iss` == "iss", and the user
//!   is the token's `sub`, `tenant` and `roles`;
//! - conversely, a token whose claims are clearly good (`exp` in the future,
//!   `nbf` absent or past, right `aud` and `iss`, 1..=256-char `sub`) is
//!   accepted: the verifier does not refuse what it should take.
#![no_main]

mod common;

use arbitrary::Arbitrary;
use libfuzzer_sys::fuzz_target;
use skald::auth::{mint, Claims};

#[derive(Arbitrary, Debug)]
enum Time {
    /// Seconds relative to now.
    Rel(i32),
    /// Within a minute of now, around the 30 s leeway.
    Near(i8),
    Abs(u64),
}

impl Time {
    fn at(&self, now: u64) -> u64 {
        match self {
            Time::Rel(d) => now.saturating_add_signed(i64::from(*d)),
            Time::Near(d) => now.saturating_add_signed(i64::from(*d) / 2),
            Time::Abs(t) => *t,
        }
    }
}

#[derive(Arbitrary, Debug)]
enum Name {
    Right,
    Missing,
    /// Case, whitespace and NUL variations of the right name.
    NearMiss(u8),
    Other(String),
}

impl Name {
    fn get(&self, right: &str) -> Option<String> {
        match self {
            Name::Right => Some(right.to_owned()),
            Name::Missing => None,
            Name::NearMiss(i) => Some(match i % 6 {
                0 => right.to_uppercase(),
                1 => format!("{right} "),
                2 => format!(" {right}"),
                3 => format!("{right}\u{0}"),
                4 => String::new(),
                _ => right[..right.len() - 1].to_owned(),
            }),
            Name::Other(s) => Some(s.clone()),
        }
    }
}

#[derive(Arbitrary, Debug)]
struct Input {
    sub: String,
    /// `sub` is repeated `1 + sub_repeat % 300` times (0 when `sub` is
    /// empty), to reach and pass the 256-character limit.
    sub_repeat: u16,
    exp: Time,
    iat: Option<u64>,
    nbf: Option<Time>,
    aud: Name,
    iss: Name,
    tenant: Option<String>,
    roles: Vec<String>,
}

fuzz_target!(|input: Input| {
    let now = skald::auth::now_secs();
    let claims = Claims {
        sub: input.sub.repeat(1 + usize::from(input.sub_repeat % 300)),
        exp: input.exp.at(now),
        iat: input.iat,
        nbf: input.nbf.as_ref().map(|t| t.at(now)),
        aud: input.aud.get(common::AUDIENCE),
        iss: input.iss.get(common::ISSUER),
        tenant: input.tenant.clone(),
        roles: input.roles.clone(),
    };
    let token = mint(common::SECRET, &claims).expect("HS256 minting cannot fail");

    let now_before = skald::auth::now_secs();
    let result = common::verifier().verify(&token);
    let now_after = skald::auth::now_secs();

    match &result {
        Ok(user) => {
            let n = claims.sub.chars().count();
            assert!((1..=256).contains(&n), "accepted a sub of {n} chars");
            assert!(
                claims.exp.saturating_add(common::LEEWAY_SECS) >= now_before,
                "accepted exp {} at {now_before}",
                claims.exp
            );
            if let Some(nbf) = claims.nbf {
                assert!(
                    nbf <= now_after + common::LEEWAY_SECS,
                    "accepted nbf {nbf} at {now_after}"
                );
            }
            assert_eq!(claims.aud.as_deref(), Some(common::AUDIENCE), "accepted aud");
            assert_eq!(claims.iss.as_deref(), Some(common::ISSUER), "accepted iss");
            assert_eq!(user.id, claims.sub.as_str());
            assert_eq!(user.tenant, claims.tenant);
            assert_eq!(user.roles, claims.roles);
            common::assert_acceptable(&token, &user.id, now_before, now_after);
        }
        Err(e) => {
            let _ = e.to_string();
        }
    }

    let clearly_good = (1..=256).contains(&claims.sub.chars().count())
        && claims.exp > now_after
        && claims.nbf.is_none_or(|nbf| nbf <= now_before)
        && claims.aud.as_deref() == Some(common::AUDIENCE)
        && claims.iss.as_deref() == Some(common::ISSUER);
    if clearly_good {
        assert!(
            result.is_ok(),
            "refused a good token: {result:?}\n claims: {claims:?}"
        );
    }
});
