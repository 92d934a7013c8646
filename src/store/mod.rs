//! Store adapters: implementations of `skald_actors::ports::store::Store`.
//! Each passes the same contract suite (`skald_actors::testkit::store`):
//! SQLite in its unit tests, ScyllaDB on a real CQL node in
//! `tests/it/store_scylla.rs`.

pub mod scylla;
pub mod sqlite;

use skald_actors::ports::store::{StoredBot, ToolCall, UsageRecord};
use skald_actors::settings::BotSettings;

/// An answer's tool calls as both stores keep them: OpenAI's JSON array in
/// one text column, absent when there are none (most answers).
pub(crate) fn tool_calls_column(calls: &[ToolCall]) -> Option<String> {
    if calls.is_empty() {
        return None;
    }
    // Strings and a unit enum only: serialising cannot fail.
    serde_json::to_string(calls).ok()
}

/// The tool calls of [`tool_calls_column`]; a value that does not read is
/// logged and read as none, rather than failing the whole history.
pub(crate) fn tool_calls_of_column(column: Option<&str>) -> Vec<ToolCall> {
    let Some(column) = column else {
        return Vec::new();
    };
    serde_json::from_str(column).unwrap_or_else(|error| {
        tracing::error!(%error, "a stored answer's tool calls do not read");
        Vec::new()
    })
}

/// A stored bot's settings as both stores keep them: the JSON of
/// `[bots.<name>]`, absent for a deletion (a tombstone).
pub(crate) fn bot_settings_column(bot: &StoredBot) -> Option<String> {
    // Plain fields only: serialising cannot fail.
    bot.settings
        .as_ref()
        .and_then(|s| serde_json::to_string(s).ok())
}

/// A stored bot from its columns. Settings that do not read (written by a
/// newer version with a field this one does not know) are logged and the
/// row is skipped: the file's bot of that name, if any, stays in force.
pub(crate) fn stored_bot(
    name: String,
    settings: Option<&str>,
    updated_at_ms: i64,
    updated_by: String,
) -> Option<StoredBot> {
    let settings = match settings.map(serde_json::from_str::<BotSettings>) {
        None => None,
        Some(Ok(settings)) => Some(settings),
        Some(Err(error)) => {
            tracing::error!(bot = name, %error, "a stored bot's settings do not read; skipped");
            return None;
        }
    };
    Some(StoredBot {
        name,
        settings,
        updated_at_ms,
        updated_by: updated_by.into(),
    })
}

/// The cursor of a usage listing in both stores: `<user>|<bot>`, the last
/// row given (bot names hold no `|`; a user id may).
pub mod usage_cursor {
    use super::UsageRecord;

    pub fn of(row: &UsageRecord) -> String {
        format!("{}|{}", row.user, row.bot)
    }

    /// The cursor after every bot of `user` (`~` sorts after every
    /// character a bot name may hold).
    pub fn after_every_bot(user: &str) -> String {
        format!("{user}|~")
    }

    /// The (user, bot) a page starts after. A cursor this did not write
    /// reads as a user with no bot: a page, never an error.
    pub fn parse(cursor: &str) -> (String, String) {
        let (user, bot) = cursor.rsplit_once('|').unwrap_or((cursor, ""));
        (user.to_owned(), bot.to_owned())
    }
}
