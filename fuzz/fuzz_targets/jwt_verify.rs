//! Fuzzes `skald::auth::Verifier::verify` with arbitrary token text.
//!
//! Properties:
//! - `verify` never panics;
//! - it returns `Ok` only for a token whose signature is exactly the HS256
//!   signature of its `header.payload` under the secret (which the fuzzer
//!   cannot forge: in practice only seeds signed in `seeds/` get there), and
//!   then only with `alg: HS256`, no `kid`, a 1..=256-char `sub`, an `exp`
//!   not past (30 s leeway), an `nbf` not ahead, `aud` "skald", `iss` "iss".
#![no_main]

mod common;

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    // Tokens come from an HTTP header or a JSON string: always text.
    let token = String::from_utf8_lossy(data);
    let now_before = skald::auth::now_secs();
    let result = common::verifier().verify(&token);
    let now_after = skald::auth::now_secs();
    match result {
        Ok(user) => common::assert_acceptable(&token, &user.id, now_before, now_after),
        Err(e) => {
            let _ = e.to_string();
        }
    }
});
