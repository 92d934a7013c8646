//! The `skald` binary with the ScyllaDB store on a CQL node: SIGKILL
//! mid-answer, then a restart (`binary.rs` runs the same on the embedded
//! store).

use crate::binary::{answer_interrupted_by_sigkill, Restart};
use crate::common::cql::Keyspace;
use crate::common::TempDir;

/// The user message survived the SIGKILL (durable before its `ack`), the
/// answer holds a checkpoint, a prefix of what was streamed, and a resent
/// `send.id` gets its ack and an `unavailable` end, never a second message.
/// The restarted instance leaves the answer open: on a shared store only an
/// answer nobody checkpointed for two minutes is another's dead one
/// (`history_cql::interrupted_answers_are_closed_at_start`).
#[tokio::test]
async fn an_answer_interrupted_by_sigkill_keeps_its_checkpoint_on_a_cql_node() {
    let Some(ks) =
        Keyspace::shared("an_answer_interrupted_by_sigkill_keeps_its_checkpoint_on_a_cql_node")
            .await
    else {
        return;
    };
    let data = TempDir::new("sigkill-cql");
    let config = ks.config_file(&data.0).display().to_string();
    answer_interrupted_by_sigkill(
        &data.0,
        &[("SKALD_CONFIG", config.as_str())],
        Restart::LeavesRecentAnswersOpen,
    )
    .await;
}
