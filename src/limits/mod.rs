//! Limits backends implemented with real libraries: Redis, shared by every
//! instance, and the embedded one (quota counters in SQLite in the data
//! dir) for a single instance.

pub mod redis;
pub mod sqlite;

use std::collections::BTreeMap;

use skald_actors::settings::LimitOverride;
use skald_actors::UserId;

/// A user's override as both backends keep it: JSON.
pub(crate) fn user_limits_json(limits: &LimitOverride) -> String {
    // Numbers only: serialising cannot fail.
    serde_json::to_string(limits).unwrap_or_default()
}

/// The stored overrides by user; one that does not read (written by a
/// newer version) is logged and skipped.
pub(crate) fn read_user_limits(
    stored: impl IntoIterator<Item = (String, String)>,
) -> BTreeMap<UserId, LimitOverride> {
    stored
        .into_iter()
        .filter_map(|(user, json)| match serde_json::from_str(&json) {
            Ok(limits) => Some((UserId::from(user), limits)),
            Err(error) => {
                tracing::error!(user, %error, "a stored user override does not read; skipped");
                None
            }
        })
        .collect()
}
