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
use skald_actors_user::AuthedUser;

/// Re-export path for the user type `verify` returns, without depending on
/// `skald-actors` directly.
mod skald_actors_user {
    pub type AuthedUser = <super::VerifyOk as super::OkType>::T;
}
pub trait OkType {
    type T;
}
pub struct VerifyOk;
impl OkType for VerifyOk {
    type T = ResultOk<fn(&Verifier, &str) -> ()>;
}
pub type ResultOk<F> = F;
