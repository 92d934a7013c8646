//! Store adapters: implementations of `skald_actors::ports::store::Store`.
//! Each passes the same contract suite (`skald_actors::testkit::store`):
//! SQLite in its unit tests, ScyllaDB on a real CQL node in
//! `tests/it/store_scylla.rs`.

pub mod scylla;
pub mod sqlite;

use skald_actors::ports::store::ToolCall;

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
