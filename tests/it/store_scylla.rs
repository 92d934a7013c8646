//! The ScyllaDB store on a real CQL node (`common::cql`): the store
//! contract every store passes, what only this store does (completing an
//! interrupted exchange, address TTLs, traces of late writes, closing the
//! answers of a dead instance, erase of every table), the flags no server
//! checks, and `skald migrate` as an operator runs it.

use std::process::Command;
use std::time::Duration;

use crate::common::cql::{self, Keyspace};
use crate::common::{checkpoint, TempDir};
use skald::store::scylla::migrate::{checksum, lwt_applied};
use skald::store::scylla::statements::{self, ALL};
use skald::store::scylla::{connect_session, connect_store, rows, ScyllaStore, MIGRATIONS};
use skald_actors::ports::store::{
    AnswerEnd, AuditAction, AuditRecord, BeginOutcome, Feedback, FinishedAnswer, NewExchange,
    Rating, Store,
};
use skald_actors::testkit::store::{self as contract, ns_user};
use skald_actors::time::now_ms;
use skald_protocol::{ClientMessageId, FinishReason, Usage, UserId};

/// Rows of one query, untyped except for the first column (a count of
/// what a table still holds of a user).
async fn count(
    store: &ScyllaStore,
    cql: &str,
    values: impl scylla::serialize::row::SerializeRow,
) -> usize {
    store
        .session()
        .query_unpaged(cql, values)
        .await
        .unwrap_or_else(|e| panic!("{cql}: {e}"))
        .into_rows_result()
        .unwrap()
        .rows_num()
}

/// The one row of a query, typed.
async fn single_row<R: for<'f, 'm> scylla::deserialize::row::DeserializeRow<'f, 'm>>(
    session: &scylla::client::session::Session,
    cql: &str,
    values: impl scylla::serialize::row::SerializeRow,
) -> R {
    session
        .query_unpaged(cql, values)
        .await
        .unwrap_or_else(|e| panic!("{cql}: {e}"))
        .into_rows_result()
        .unwrap()
        .single_row()
        .unwrap()
}

/// The rows a conversation holds in `messages_by_conversation` (traces
/// of late writes included, which reads skip).
async fn message_rows(store: &ScyllaStore, conversation_id: &str) -> usize {
    count(
        store,
        "SELECT message_id FROM messages_by_conversation WHERE conversation_id = ?",
        (conversation_id,),
    )
    .await
}

/// The rows `open_answers` holds of the answer of `ex`.
async fn open_answer_rows(store: &ScyllaStore, ex: &NewExchange) -> usize {
    count(
        store,
        "SELECT message_id FROM open_answers WHERE bucket = ? AND message_id = ?",
        (
            rows::open_bucket(ex.assistant_message_id.as_str()),
            ex.assistant_message_id.as_str(),
        ),
    )
    .await
}

/// Claims the idempotency key of `ex` the way `begin_exchange` starts,
/// and nothing more: the lightweight transaction's raw result.
async fn claim_key(
    store: &ScyllaStore,
    ex: &NewExchange,
) -> scylla::response::query_result::QueryResult {
    let claim = store
        .session()
        .prepare(statements::CLAIM_KEY)
        .await
        .unwrap();
    store
        .session()
        .execute_unpaged(&claim, rows::ClaimKey::of(ex))
        .await
        .unwrap()
}

/// How the exchange of `key` ended, as the store reads it now.
async fn end_of(store: &ScyllaStore, user: &UserId, key: &str) -> AnswerEnd {
    store
        .exchange(user, &ClientMessageId::from(key))
        .await
        .unwrap()
        .unwrap()
        .finished
        .unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_store_contract_holds_on_a_cql_node() {
    let Some(ks) = Keyspace::fresh("the_store_contract_holds_on_a_cql_node").await else {
        return;
    };
    let store = ks.store().await;
    store.ping().await.unwrap();
    assert!(store.is_shared(), "other instances write this store too");
    contract::run_all(&store, "cql").await;
    ks.drop().await;
}

/// The idempotency and consistency of the statement table are what the
/// node got: no server checks them, so the table's own test pins them and
/// this one checks they reach the prepared statements.
#[tokio::test]
async fn every_statement_prepares_with_its_pinned_flags() {
    let Some(ks) = Keyspace::shared("every_statement_prepares_with_its_pinned_flags").await else {
        return;
    };
    let store = ks.store().await;
    let prepared = store.statements().each();
    assert_eq!(prepared.len(), ALL.len());
    for (def, statement) in prepared {
        assert_eq!(statement.get_statement(), def.cql, "{}", def.name);
        assert_eq!(
            statement.get_is_idempotent(),
            def.idempotent,
            "{}",
            def.name
        );
        assert_eq!(statement.get_consistency(), def.consistency, "{}", def.name);
        assert_eq!(
            statement.get_serial_consistency(),
            None,
            "{}: the session's",
            def.name
        );
    }
}

/// A lightweight transaction's result is read by its `[applied]` column:
/// Cassandra sends only that column when it applied and the existing row
/// beside it when not, ScyllaDB every column both times.
#[tokio::test]
async fn lightweight_transactions_are_read_by_their_applied_column() {
    let Some(ks) =
        Keyspace::shared("lightweight_transactions_are_read_by_their_applied_column").await
    else {
        return;
    };
    let store = ks.store().await;
    let user = UserId::from("lwt");
    let ex = contract::exchange(&user, "k", None, "claimed");
    let first = claim_key(&store, &ex).await;
    let again = claim_key(&store, &ex).await;
    let columns = |r: &scylla::response::query_result::QueryResult| {
        r.clone()
            .into_rows_result()
            .unwrap()
            .column_specs()
            .iter()
            .map(|c| c.name().to_owned())
            .collect::<Vec<_>>()
    };
    eprintln!(
        "LWT columns: applied {:?}, not applied {:?}",
        columns(&first),
        columns(&again)
    );
    assert_eq!(columns(&first)[0], "[applied]");
    assert!(columns(&again).len() > 1, "the existing row comes back");
    assert!(lwt_applied(first).unwrap());
    assert!(!lwt_applied(again).unwrap());
}

/// The claim was made but the process stopped before the writes: the next
/// lookup of the key writes them, with the claim's own ids.
#[tokio::test]
async fn an_interrupted_exchange_is_completed_by_the_next_lookup() {
    let Some(ks) =
        Keyspace::shared("an_interrupted_exchange_is_completed_by_the_next_lookup").await
    else {
        return;
    };
    let store = ks.store().await;
    let user = UserId::from("crash");
    let ex = contract::exchange(&user, "k-1", None, "sent just before a crash");
    assert!(lwt_applied(claim_key(&store, &ex).await).unwrap());
    assert!(store
        .conversation(&user, &ex.conversation_id)
        .await
        .unwrap()
        .is_none());

    let found = store
        .exchange(&user, &ClientMessageId::from("k-1"))
        .await
        .unwrap()
        .unwrap();
    assert_eq!(found.user_message_id, ex.user_message_id);
    assert_eq!(found.finished, None);
    let conversation = store
        .conversation(&user, &ex.conversation_id)
        .await
        .unwrap()
        .expect("the conversation was written");
    assert_eq!(conversation.created_at_ms, ex.at_ms);
    let messages = store
        .recent_messages(&ex.conversation_id, 10)
        .await
        .unwrap();
    assert_eq!(messages.len(), 2);
    assert_eq!(messages[0].content, "sent just before a crash");

    // A resend with other ids gets the claimed exchange, nothing more.
    let resend = contract::exchange(&user, "k-1", None, "sent just before a crash");
    match store.begin_exchange(resend).await.unwrap() {
        BeginOutcome::Existing(e) => assert_eq!(e.stream_id, ex.stream_id),
        other => panic!("{other:?}"),
    }
    let listed = store.list_conversations(&user, 10, None).await.unwrap();
    assert_eq!(listed.items.len(), 1);

    // `begin_exchange` that timed out after its claim, called again with
    // the same exchange, recognises its claim and finishes the writes.
    let retried = contract::exchange(&user, "r-1", None, "retried");
    claim_key(&store, &retried).await;
    assert_eq!(
        store.begin_exchange(retried.clone()).await.unwrap(),
        BeginOutcome::Created
    );
    let messages = store
        .recent_messages(&retried.conversation_id, 10)
        .await
        .unwrap();
    assert_eq!(messages.len(), 2);
}

fn finished(ex: &NewExchange, content: &str, at_ms: i64) -> FinishedAnswer {
    FinishedAnswer {
        user: ex.user.clone(),
        conversation_id: ex.conversation_id.clone(),
        message_id: ex.assistant_message_id.clone(),
        content: content.into(),
        reasoning: String::new(),
        tool_calls: Vec::new(),
        end: AnswerEnd {
            finish_reason: FinishReason::Stop,
            usage: Usage::default(),
            error: None,
        },
        at_ms,
    }
}

/// Writes that land after their conversation was deleted: an end is
/// dropped, a checkpoint of the time before the delete is shadowed by it;
/// a checkpoint of a stream that kept going leaves a trace, which reads
/// skip and the next sweep of open answers removes.
#[tokio::test]
async fn late_writes_after_a_delete_leave_nothing_readable_or_lasting() {
    let Some(ks) =
        Keyspace::fresh("late_writes_after_a_delete_leave_nothing_readable_or_lasting").await
    else {
        return;
    };
    let store = ks.store().await;
    let user = UserId::from("late");
    let ex = contract::exchange(&user, "l-1", None, "deleted while answering");
    store.begin_exchange(ex.clone()).await.unwrap();
    let before_delete = now_ms();
    tokio::time::sleep(Duration::from_millis(5)).await;
    assert!(store
        .delete_conversation(&user, &ex.conversation_id)
        .await
        .unwrap());
    store
        .finish_answers(vec![finished(&ex, "too late", now_ms())])
        .await
        .unwrap();
    store
        .checkpoint_answers(vec![checkpoint(&ex, "taken before", before_delete)])
        .await
        .unwrap();
    let rows_of =
        async |store: &ScyllaStore| message_rows(store, ex.conversation_id.as_str()).await;
    assert_eq!(
        rows_of(&store).await,
        0,
        "nothing of the deleted conversation"
    );
    assert_eq!(store.export_user(&user).await.unwrap(), Default::default());

    // A checkpoint after the delete (the stream went on): a trace...
    store
        .checkpoint_answers(vec![checkpoint(&ex, "taken after", now_ms())])
        .await
        .unwrap();
    assert_eq!(rows_of(&store).await, 1, "a trace of the late checkpoint");
    assert!(store
        .recent_messages(&ex.conversation_id, 10)
        .await
        .unwrap()
        .is_empty());
    // ...that an open answer leads to (written as a stream of another
    // instance would have left it) and the sweep removes.
    store
        .session()
        .query_unpaged(statements::INSERT_OPEN_ANSWER, rows::OpenAnswer::of(&ex))
        .await
        .unwrap();
    assert_eq!(store.close_interrupted(now_ms() + 1).await.unwrap(), 0);
    assert_eq!(rows_of(&store).await, 0, "the trace is gone");
    assert_eq!(
        open_answer_rows(&store, &ex).await,
        0,
        "and the open answer that led there"
    );
    ks.drop().await;
}

/// An answer closed as interrupted (its instance seemed dead) whose real
/// end arrives after all: the real end wins, with no error left on it.
#[tokio::test]
async fn a_real_end_overrides_a_close_as_interrupted() {
    let Some(ks) = Keyspace::fresh("a_real_end_overrides_a_close_as_interrupted").await else {
        return;
    };
    let store = ks.store().await;
    let user = UserId::from("slow");
    let ex = contract::exchange(&user, "s-1", None, "slow instance");
    store.begin_exchange(ex.clone()).await.unwrap();
    let now = now_ms();
    store
        .checkpoint_answers(vec![checkpoint(&ex, "so far", now)])
        .await
        .unwrap();
    assert_eq!(store.close_interrupted(now + 1).await.unwrap(), 1);
    let closed = end_of(&store, &user, "s-1").await;
    assert_eq!(closed.finish_reason, FinishReason::Error);
    store
        .finish_answers(vec![finished(&ex, "so far, and the rest", now + 500)])
        .await
        .unwrap();
    let end = end_of(&store, &user, "s-1").await;
    assert_eq!(end.finish_reason, FinishReason::Stop);
    assert_eq!(end.error, None);
    let messages = store
        .recent_messages(&ex.conversation_id, 10)
        .await
        .unwrap();
    assert_eq!(messages[1].content, "so far, and the rest");
    ks.drop().await;
}

fn record(user: Option<&UserId>, at_ms: i64) -> AuditRecord {
    AuditRecord {
        id: uuid::Uuid::now_v7().to_string(),
        at_ms,
        user: user.cloned(),
        action: AuditAction::Exported,
        address: Some("198.51.100.23".into()),
        address_anonymised: Some("198.51.100.0".into()),
        detail: String::new(),
        actor: None,
    }
}

/// Full addresses are written with a TTL that ends `address_ttl_secs`
/// after the record's time (a short one here), and the node drops them by
/// itself; the record and its anonymised address stay.
#[tokio::test]
async fn full_addresses_expire_after_their_ttl() {
    let Some(ks) = Keyspace::shared("full_addresses_expire_after_their_ttl").await else {
        return;
    };
    let store = ScyllaStore::connect(&skald::store::scylla::ScyllaSettings {
        address_ttl_secs: 3,
        ..ks.settings()
    })
    .await
    .unwrap();
    let user = UserId::from("ttl");
    let now = now_ms();
    store
        .append_audits(vec![record(Some(&user), now)])
        .await
        .unwrap();
    // Already older than the TTL: written without its address.
    store
        .append_audits(vec![record(Some(&user), now - 4_000)])
        .await
        .unwrap();
    let full = |e: &skald_actors::ports::store::UserExport| {
        e.audit.iter().filter(|r| r.address.is_some()).count()
    };
    let export = store.export_user(&user).await.unwrap();
    assert_eq!(export.audit.len(), 2);
    assert_eq!(full(&export), 1);
    assert!(export
        .audit
        .iter()
        .all(|r| r.address_anonymised.as_deref() == Some("198.51.100.0")));
    let (ttl,): (Option<i32>,) = store
        .session()
        .query_unpaged(
            "SELECT TTL(address) FROM audit_by_user WHERE user_id = ? AND month = ? AND audit_id = ?",
            (user.as_str(), rows::audit_month(now), export.audit[1].id.as_str()),
        )
        .await
        .unwrap()
        .into_rows_result()
        .unwrap()
        .single_row()
        .unwrap();
    assert!(matches!(ttl, Some(1..=3)), "{ttl:?}");

    tokio::time::sleep(Duration::from_secs(4)).await;
    let export = store.export_user(&user).await.unwrap();
    assert_eq!(export.audit.len(), 2, "records stay, only addresses go");
    assert_eq!(full(&export), 0);
    assert_eq!(store.anonymise_addresses(now).await.unwrap(), 0);

    // Records without a user (failed authentications) go to their hour's
    // partition, with the same TTL.
    let mut failed = record(None, now_ms());
    failed.action = AuditAction::AuthFailed;
    store.append_audits(vec![failed.clone()]).await.unwrap();
    let (action, ttl): (String, Option<i32>) = single_row(
        store.session(),
        "SELECT action, TTL(address) FROM audit_anonymous WHERE hour = ? AND audit_id = ?",
        (rows::audit_hour(failed.at_ms), failed.id.as_str()),
    )
    .await;
    assert_eq!(action, "auth_failed");
    assert!(matches!(ttl, Some(1..=3)), "{ttl:?}");
}

/// Pages are cut by the rows the node returns, traces included, so a
/// cursor always advances past a trace (a conversation row an update left
/// after a delete) and the pages together hold every live item once.
#[tokio::test]
async fn cursors_advance_past_traces() {
    let Some(ks) = Keyspace::shared("cursors_advance_past_traces").await else {
        return;
    };
    let store = ks.store().await;
    let user = UserId::from("cursors");
    let mut live = Vec::new();
    for i in 0..4 {
        let ex = contract::exchange(&user, &format!("p-{i}"), None, "page me");
        store.begin_exchange(ex.clone()).await.unwrap();
        live.push(ex.conversation_id.to_string());
        // A trace between each two conversations: an answer's touch that
        // landed after its conversation was deleted.
        let trace = skald_protocol::ConversationId::generate();
        store
            .session()
            .query_unpaged(
                statements::TOUCH_CONVERSATION,
                rows::TouchConversation::new(&user, &trace, now_ms()),
            )
            .await
            .unwrap();
    }
    live.reverse();
    for limit in [1, 2, 3] {
        let (mut seen, mut before, mut pages) = (Vec::new(), None::<String>, 0);
        loop {
            let page = store
                .list_conversations(&user, limit, before.as_deref())
                .await
                .unwrap();
            pages += 1;
            assert!(pages < 20, "paging ends");
            seen.extend(page.items.into_iter().map(|c| c.id.to_string()));
            match page.next {
                Some(next) => before = Some(next),
                None => break,
            }
        }
        assert_eq!(
            seen, live,
            "limit {limit}: every live conversation once, newest first"
        );
    }
    // Messages: the first page starts at the oldest, the cursor is the
    // last id of a page.
    let conversation = skald_protocol::ConversationId::from(live[0].as_str());
    for i in 0..3 {
        store
            .begin_exchange(contract::exchange(
                &user,
                &format!("m-{i}"),
                Some(&conversation),
                &format!("m{i}"),
            ))
            .await
            .unwrap();
    }
    let page = store
        .list_messages(&user, &conversation, 3, None)
        .await
        .unwrap()
        .unwrap();
    let next = page.next.expect("more than a page");
    assert_eq!(next, page.items[2].id.as_str());
    let rest = store
        .list_messages(&user, &conversation, 200, Some(&next))
        .await
        .unwrap()
        .unwrap();
    assert_eq!(page.items.len() + rest.items.len(), 8);
    assert!(rest.next.is_none());
}

/// Erasing a user leaves nothing of them in any table of the keyspace:
/// every table is either checked here for the user's rows or listed as
/// holding none, so a table added later without erase fails this test.
#[tokio::test]
async fn erase_covers_every_table() {
    let Some(ks) = Keyspace::shared("erase_covers_every_table").await else {
        return;
    };
    let store = ks.store().await;
    let user = ns_user("erase", "gone");
    let finished_ex = contract::exchange(&user, "e-1", None, "finished");
    let open_ex = contract::exchange(&user, "e-2", None, "still streaming");
    for ex in [&finished_ex, &open_ex] {
        store.begin_exchange(ex.clone()).await.unwrap();
    }
    store
        .finish_answers(vec![finished(&finished_ex, "done", now_ms())])
        .await
        .unwrap();
    store
        .checkpoint_answers(vec![checkpoint(&open_ex, "so far", now_ms())])
        .await
        .unwrap();
    let audited = record(Some(&user), now_ms());
    store.append_audits(vec![audited.clone()]).await.unwrap();
    let rated = Feedback {
        rating: Rating::Down,
        comment: Some("no".into()),
        at_ms: now_ms(),
    };
    let answer = &finished_ex.assistant_message_id;
    assert!(store
        .set_feedback(&user, answer, Some(rated))
        .await
        .unwrap());

    let u = user.as_str();
    let month = rows::audit_month(now_ms());
    let conversations = [
        finished_ex.conversation_id.as_str(),
        open_ex.conversation_id.as_str(),
    ];
    // The tables keyed by user, with the rest of their key.
    let by_user = [
        ("conversations_by_user", vec![]),
        ("idempotency_keys", vec![]),
        ("audit_by_user", vec![("month", month.as_str())]),
        ("audit_months_by_user", vec![]),
    ];
    let holdings = async |store: &ScyllaStore| {
        let mut held = Vec::new();
        for (table, rest) in &by_user {
            let mut cql = format!("SELECT user_id FROM {table} WHERE user_id = ?");
            let mut values = vec![u];
            for (column, value) in rest {
                cql += &format!(" AND {column} = ?");
                values.push(value);
            }
            held.push((*table, count(store, &cql, values).await));
        }
        let mut messages = 0;
        for c in conversations {
            messages += message_rows(store, c).await;
        }
        held.push(("messages_by_conversation", messages));
        let mut open = 0;
        for ex in [&finished_ex, &open_ex] {
            open += open_answer_rows(store, ex).await;
        }
        held.push(("open_answers", open));
        let mut owners = 0;
        for ex in [&finished_ex, &open_ex] {
            let cql = "SELECT message_id FROM answers_by_id WHERE message_id = ?";
            owners += count(store, cql, vec![ex.assistant_message_id.as_str()]).await;
        }
        held.push(("answers_by_id", owners));
        let cql = "SELECT message_id FROM feedback_by_month WHERE month = ? AND message_id = ?";
        let listed = count(store, cql, vec![month.as_str(), answer.as_str()]).await;
        held.push(("feedback_by_month", listed));
        let day = rows::audit_day(audited.at_ms);
        let cql = "SELECT audit_id FROM audit_by_day WHERE day = ? AND audit_id = ?";
        let logged = count(store, cql, vec![day.as_str(), audited.id.as_str()]).await;
        held.push(("audit_by_day", logged));
        held
    };
    let before = holdings(&store).await;
    assert!(
        before.iter().all(|(_, n)| *n > 0),
        "the user has rows in every table checked: {before:?}"
    );

    // Every table of the keyspace: checked above, or holding nothing of a
    // user (failed authentications have no user; the migration tables;
    // bots, whose only person is the operator who last changed each; the
    // days that have audit records and the months that have feedback).
    let tables: Vec<String> = store
        .session()
        .query_unpaged(
            "SELECT table_name FROM system_schema.tables WHERE keyspace_name = ?",
            (ks.name.as_str(),),
        )
        .await
        .unwrap()
        .into_rows_result()
        .unwrap()
        .rows::<(String,)>()
        .unwrap()
        .map(|r| r.unwrap().0)
        .collect();
    let without_users = [
        "audit_anonymous",
        "audit_days",
        "bots",
        "feedback_months",
        "schema_migrations",
        "schema_migration_lock",
    ];
    // Usage counters, kept on purpose (a user's ids, bots and token counts,
    // no content: admin.md, GDPR in the README).
    let kept = ["usage_by_user", "usage_users"];
    let usage_rows = async |store: &ScyllaStore| {
        let cql = "SELECT message_id FROM usage_by_user WHERE user_id = ? AND month = ?";
        count(store, cql, vec![u, month.as_str()]).await
    };
    assert_eq!(usage_rows(&store).await, 2, "one row per answer");
    for table in &tables {
        assert!(
            before.iter().any(|(t, _)| t == table)
                || without_users.contains(&table.as_str())
                || kept.contains(&table.as_str()),
            "table {table}: does erase_user cover it? add it to this test"
        );
    }

    store.erase_user(&user).await.unwrap();
    let after = holdings(&store).await;
    assert!(
        after.iter().all(|(_, n)| *n == 0),
        "left after erase: {after:?}"
    );
    assert_eq!(store.export_user(&user).await.unwrap(), Default::default());
    assert_eq!(usage_rows(&store).await, 2, "usage is kept");
}

/// Runs one statement on the node of `ks` by a session of no keyspace (one
/// that sets a keyspace up or breaks it on purpose), which it returns.
async fn run_on_node(ks: &Keyspace, cql: String) -> scylla::client::session::Session {
    let session = connect_session(&ks.settings()).await.unwrap();
    session
        .query_unpaged(cql.as_str(), ())
        .await
        .unwrap_or_else(|e| panic!("{cql}: {e}"));
    session
}

/// A server refuses a keyspace whose schema is older than its build, until
/// `skald migrate` ran.
#[tokio::test]
async fn an_unmigrated_keyspace_is_refused_at_start() {
    let Some(ks) = Keyspace::unmigrated("an_unmigrated_keyspace_is_refused_at_start") else {
        return;
    };
    run_on_node(
        &ks,
        format!(
            "CREATE KEYSPACE {} WITH replication = {}",
            ks.name,
            cql::REPLICATION
        ),
    )
    .await;
    let err = connect_store(&ks.settings()).await.err().expect("refused");
    assert!(err.to_string().contains("skald migrate"), "{err}");
    // With migrate_on_start, the server migrates and starts.
    let settings = skald::store::scylla::ScyllaSettings {
        migrate_on_start: true,
        ..ks.settings()
    };
    connect_store(&settings)
        .await
        .unwrap()
        .ping()
        .await
        .unwrap();
    ks.drop().await;
}

// --- skald migrate ---------------------------------------------------------

/// `skald migrate` as an operator runs it, on `ks` (config file in `dir`).
fn skald_migrate(ks: &Keyspace, dir: &std::path::Path) -> Command {
    let mut command = Command::new(env!("CARGO_BIN_EXE_skald"));
    command
        .env_clear()
        .env("PATH", std::env::var("PATH").unwrap_or_default())
        .env("SKALD_DATA_DIR", dir)
        .env("SKALD_CONFIG", ks.config_file(dir))
        .arg("migrate");
    command
}

fn run(mut command: Command) -> (bool, String) {
    outcome(command.output().unwrap())
}

/// Whether a command succeeded, and all it wrote (stdout, then stderr).
fn outcome(output: std::process::Output) -> (bool, String) {
    let text = format!(
        "{}{}",
        String::from_utf8_lossy(&output.stdout),
        String::from_utf8_lossy(&output.stderr)
    );
    (output.status.success(), text)
}

async fn applied(ks: &Keyspace) -> Vec<(u32, String)> {
    let session = connect_session(&ks.settings()).await.unwrap();
    session.use_keyspace(&ks.name, false).await.unwrap();
    skald::store::scylla::migrate::applied_versions(&session)
        .await
        .unwrap()
}

#[tokio::test]
async fn skald_migrate_creates_a_fresh_keyspace_and_a_rerun_does_nothing() {
    let Some(ks) =
        Keyspace::unmigrated("skald_migrate_creates_a_fresh_keyspace_and_a_rerun_does_nothing")
    else {
        return;
    };
    let dir = TempDir::new("migrate");
    let (ok, out) = run(skald_migrate(&ks, &dir.0));
    assert!(ok, "{out}");
    assert!(out.contains(&all_applied()), "{out}");
    let expected: Vec<(u32, String)> = MIGRATIONS
        .iter()
        .map(|m| (m.version, checksum(m.cql)))
        .collect();
    assert_eq!(applied(&ks).await, expected);
    // The keyspace has the replication asked for.
    let session = connect_session(&ks.settings()).await.unwrap();
    let (replication,): (std::collections::HashMap<String, String>,) = single_row(
        &session,
        "SELECT replication FROM system_schema.keyspaces WHERE keyspace_name = ?",
        (ks.name.as_str(),),
    )
    .await;
    assert!(
        replication["class"].ends_with("NetworkTopologyStrategy"),
        "{replication:?}"
    );
    assert_eq!(replication["datacenter1"], "1");

    let (ok, out) = run(skald_migrate(&ks, &dir.0));
    assert!(ok, "{out}");
    assert!(out.contains("schema up to date"), "{out}");
    assert_eq!(applied(&ks).await, expected);
    ks.store().await.ping().await.unwrap();
    ks.drop().await;
}

/// A released migration that changed (here: the checksum recorded for
/// it no longer matches the embedded file) is refused, and nothing runs.
#[tokio::test]
async fn skald_migrate_refuses_an_edited_migration() {
    let Some(ks) = Keyspace::fresh("skald_migrate_refuses_an_edited_migration").await else {
        return;
    };
    run_on_node(
        &ks,
        format!(
            "UPDATE {}.schema_migrations SET checksum = 'edited' WHERE version = 1",
            ks.name
        ),
    )
    .await;
    let dir = TempDir::new("edited");
    let (ok, out) = run(skald_migrate(&ks, &dir.0));
    assert!(!ok, "an edited migration must be refused: {out}");
    assert!(out.contains("must not change"), "{out}");
    ks.drop().await;
}

/// Two `skald migrate` at once on a fresh keyspace: both succeed, every
/// version is applied once, by one of them (they take turns through the
/// lock; the other finds nothing left to do).
#[tokio::test]
async fn two_skald_migrates_at_once_take_turns() {
    let Some(ks) = Keyspace::unmigrated("two_skald_migrates_at_once_take_turns") else {
        return;
    };
    let (a, b) = (TempDir::new("migrate-a"), TempDir::new("migrate-b"));
    let spawn = |dir: &std::path::Path| {
        skald_migrate(&ks, dir)
            .stdout(std::process::Stdio::piped())
            .stderr(std::process::Stdio::piped())
            .spawn()
            .unwrap()
    };
    let (first, second) = (spawn(&a.0), spawn(&b.0));
    let outputs: Vec<(bool, String)> = [first, second]
        .into_iter()
        .map(|child| outcome(child.wait_with_output().unwrap()))
        .collect();
    for (ok, out) in &outputs {
        assert!(ok, "{out}");
    }
    let appliers = outputs
        .iter()
        .filter(|(_, out)| out.contains(&all_applied()))
        .count();
    let idle = outputs
        .iter()
        .filter(|(_, out)| out.contains("schema up to date"))
        .count();
    assert_eq!((appliers, idle), (1, 1), "{outputs:?}");
    assert_eq!(applied(&ks).await.len(), MIGRATIONS.len());
    ks.drop().await;
}

/// A migration that stopped after its `ALTER TABLE ... ADD` (the columns
/// exist, the version is not recorded) runs again to its end.
#[tokio::test]
async fn a_migration_stopped_after_its_alter_runs_again_to_its_end() {
    let Some(ks) =
        Keyspace::fresh("a_migration_stopped_after_its_alter_runs_again_to_its_end").await
    else {
        return;
    };
    let session = run_on_node(
        &ks,
        format!(
            "DELETE FROM {}.schema_migrations WHERE version = 2",
            ks.name
        ),
    )
    .await;
    let versions = skald::store::scylla::migrate(&session, &ks.name, cql::REPLICATION)
        .await
        .unwrap();
    assert_eq!(versions, [2]);
    ks.store().await.ping().await.unwrap();
    ks.drop().await;
}

/// What `skald migrate` prints when it applies every migration.
fn all_applied() -> String {
    let versions: Vec<u32> = MIGRATIONS.iter().map(|m| m.version).collect();
    format!("applied migrations {versions:?}")
}
