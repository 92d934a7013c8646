//! The store contract against ScyllaDB, and what only ScyllaDB does
//! (concurrent migrations, completing an interrupted exchange, address
//! TTLs), when `SKALD_TEST_SCYLLA` names a node (`host:9042`, or several,
//! comma-separated). Without it the test passes and says loudly that it was
//! skipped: no ScyllaDB can run on the machines this repository is built on
//! (see docs/scylla.md for running one, e.g. with the compose file).
//!
//! The keyspace is `SKALD_TEST_SCYLLA_KEYSPACE` (default `skald_test`,
//! replication factor 1); every run uses fresh user names, so runs never
//! see each other's data.

use std::io::Write;
use std::time::Duration;

use skald::store::scylla::{
    connect_session, migrate, rows, statements, ScyllaSettings, ScyllaStore, MIGRATIONS,
};
use skald_actors::ports::store::{AuditAction, AuditRecord, BeginOutcome, Store};
use skald_actors::store_contract;
use skald_actors::time::now_ms;
use skald_protocol::{FinishReason, Usage};

fn settings() -> Option<ScyllaSettings> {
    let nodes = std::env::var("SKALD_TEST_SCYLLA")
        .ok()
        .filter(|v| !v.trim().is_empty());
    let Some(nodes) = nodes else {
        // Straight to stderr: the test harness does not capture this.
        let _ = std::io::stderr().write_all(
            b"\n*** SKIPPED: the ScyllaDB store tests need a node; \
              set SKALD_TEST_SCYLLA=host:9042 to run them ***\n\n",
        );
        return None;
    };
    Some(ScyllaSettings {
        nodes: nodes.split(',').map(|n| n.trim().to_owned()).collect(),
        keyspace: std::env::var("SKALD_TEST_SCYLLA_KEYSPACE")
            .unwrap_or_else(|_| "skald_test".into()),
        replication: "{'class': 'NetworkTopologyStrategy', 'replication_factor': 1}".into(),
        request_timeout_ms: 10_000,
        ..ScyllaSettings::default()
    })
}

fn namespace() -> String {
    format!("t{}", uuid::Uuid::now_v7().simple())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn scylla_store() {
    let Some(settings) = settings() else {
        return;
    };
    migrations_apply_once_from_concurrent_instances(&settings).await;
    let store = ScyllaStore::connect(&settings)
        .await
        .expect("connect to ScyllaDB");
    store.ping().await.unwrap();

    store_contract::run_all(&store, &namespace()).await;

    an_interrupted_exchange_is_completed_by_the_next_lookup(&store, &namespace()).await;
    a_retried_begin_exchange_completes_its_own_claim(&store, &namespace()).await;
    an_answer_after_its_conversation_was_deleted_is_dropped(&store, &namespace()).await;
    full_addresses_expire_thirty_days_after_the_record(&store, &namespace()).await;
    failed_authentications_are_recorded_without_a_user(&store).await;
}

async fn migrations_apply_once_from_concurrent_instances(settings: &ScyllaSettings) {
    let (a, b) = (
        connect_session(settings).await.unwrap(),
        connect_session(settings).await.unwrap(),
    );
    let (ks, repl) = (&settings.keyspace, &settings.replication);
    let (ra, rb) = tokio::join!(migrate(&a, ks, repl), migrate(&b, ks, repl));
    let mut applied = [ra.unwrap(), rb.unwrap()].concat();
    applied.sort();
    let before = applied.len();
    applied.dedup();
    assert_eq!(
        applied.len(),
        before,
        "a version applied twice: {applied:?}"
    );
    // A fresh keyspace gets every version once; an existing one none.
    assert!(
        applied.is_empty() || applied.len() == MIGRATIONS.len(),
        "{applied:?}"
    );
    assert!(migrate(&a, ks, repl).await.unwrap().is_empty());
}

/// The claim was made but the process stopped before the writes: the next
/// lookup of the key writes them, with the claim's own ids.
async fn an_interrupted_exchange_is_completed_by_the_next_lookup(store: &ScyllaStore, ns: &str) {
    let user = format!("{ns}-crash");
    let ex = store_contract::exchange(&user, "k-1", None, "sent just before a crash");
    let claim = store
        .session()
        .execute_unpaged(
            &store
                .session()
                .prepare(statements::CLAIM_KEY)
                .await
                .unwrap(),
            rows::claim_key(&ex),
        )
        .await
        .unwrap();
    assert!(skald::store::scylla::migrate::lwt_applied(claim).unwrap());
    assert!(store
        .conversation(&user, &ex.conversation_id)
        .await
        .unwrap()
        .is_none());

    let found = store.exchange(&user, "k-1").await.unwrap().unwrap();
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
    let resend = store_contract::exchange(&user, "k-1", None, "sent just before a crash");
    match store.begin_exchange(resend).await.unwrap() {
        BeginOutcome::Existing(e) => assert_eq!(e.stream_id, ex.stream_id),
        other => panic!("{other:?}"),
    }
    assert_eq!(
        store
            .list_conversations(&user, 10, None)
            .await
            .unwrap()
            .items
            .len(),
        1
    );
}

/// `begin_exchange` that timed out after its claim, called again with the
/// same exchange, recognises its claim and finishes the writes.
async fn a_retried_begin_exchange_completes_its_own_claim(store: &ScyllaStore, ns: &str) {
    let user = format!("{ns}-retry");
    let ex = store_contract::exchange(&user, "r-1", None, "retried");
    let prepared = store
        .session()
        .prepare(statements::CLAIM_KEY)
        .await
        .unwrap();
    store
        .session()
        .execute_unpaged(&prepared, rows::claim_key(&ex))
        .await
        .unwrap();
    assert_eq!(
        store.begin_exchange(ex.clone()).await.unwrap(),
        BeginOutcome::Created
    );
    assert_eq!(
        store
            .recent_messages(&ex.conversation_id, 10)
            .await
            .unwrap()
            .len(),
        2
    );
}

async fn an_answer_after_its_conversation_was_deleted_is_dropped(store: &ScyllaStore, ns: &str) {
    let user = format!("{ns}-late");
    let ex = store_contract::exchange(&user, "l-1", None, "deleted while answering");
    store.begin_exchange(ex.clone()).await.unwrap();
    assert!(store
        .delete_conversation(&user, &ex.conversation_id)
        .await
        .unwrap());
    let late = skald_actors::ports::store::FinishedAnswer {
        user: user.clone(),
        conversation_id: ex.conversation_id.clone(),
        message_id: ex.assistant_message_id.clone(),
        content: "too late".into(),
        finish_reason: FinishReason::Stop,
        usage: Usage::default(),
        at_ms: now_ms(),
    };
    // Dropped, like on the other stores, and it leaves nothing behind.
    store.finish_answer(late).await.unwrap();
    assert!(store
        .list_conversations(&user, 10, None)
        .await
        .unwrap()
        .items
        .is_empty());
    assert!(store
        .recent_messages(&ex.conversation_id, 10)
        .await
        .unwrap()
        .is_empty());
    assert_eq!(store.export_user(&user).await.unwrap(), Default::default());
}

fn record(user: Option<&str>, at_ms: i64) -> AuditRecord {
    AuditRecord {
        id: skald_actors::new_id(),
        at_ms,
        user: user.map(str::to_owned),
        action: AuditAction::Exported,
        address: Some("198.51.100.23".into()),
        address_anonymised: Some("198.51.100.0".into()),
        detail: String::new(),
    }
}

async fn full_addresses_expire_thirty_days_after_the_record(store: &ScyllaStore, ns: &str) {
    let user = format!("{ns}-ttl");
    let day = 86_400_000;
    let now = now_ms();
    store.append_audit(record(Some(&user), now)).await.unwrap();
    // Two seconds short of 30 days old, and already older.
    store
        .append_audit(record(Some(&user), now - 30 * day + 2_000))
        .await
        .unwrap();
    store
        .append_audit(record(Some(&user), now - 31 * day))
        .await
        .unwrap();
    let full = |e: &skald_actors::ports::store::UserExport| {
        e.audit.iter().filter(|r| r.address.is_some()).count()
    };
    let export = store.export_user(&user).await.unwrap();
    assert_eq!(export.audit.len(), 3);
    assert_eq!(full(&export), 2);
    assert!(export
        .audit
        .iter()
        .all(|r| r.address_anonymised.as_deref() == Some("198.51.100.0")));

    // The fresh record's address has (about) 30 days to live.
    let month = rows::audit_month(now);
    let ttl: (Option<i32>,) = store
        .session()
        .query_unpaged(
            "SELECT TTL(address) FROM audit_by_user WHERE user_id = ? AND month = ? \
             ORDER BY audit_id ASC LIMIT 1",
            (&user, &month),
        )
        .await
        .unwrap()
        .into_rows_result()
        .unwrap()
        .first_row()
        .unwrap();
    let ttl = ttl.0.expect("the address has a TTL");
    assert!((2_591_900..=2_592_000).contains(&ttl), "{ttl}");

    tokio::time::sleep(Duration::from_secs(4)).await;
    let export = store.export_user(&user).await.unwrap();
    assert_eq!(export.audit.len(), 3, "records stay, only addresses go");
    assert_eq!(full(&export), 1);
    assert_eq!(store.anonymise_addresses(now).await.unwrap(), 0);
}

async fn failed_authentications_are_recorded_without_a_user(store: &ScyllaStore) {
    let mut r = record(None, now_ms());
    r.action = AuditAction::AuthFailed;
    store.append_audit(r.clone()).await.unwrap();
    let (action,): (String,) = store
        .session()
        .query_unpaged(
            "SELECT action FROM audit_anonymous WHERE hour = ? AND audit_id = ?",
            (rows::audit_hour(r.at_ms), &r.id),
        )
        .await
        .unwrap()
        .into_rows_result()
        .unwrap()
        .single_row()
        .unwrap();
    assert_eq!(action, "auth_failed");
}
