//! Answers stored per second by the Persister, next to a baseline measured
//! in the same run: the same answers written one `finish_answers` call at a
//! time. On the embedded store always; with `--cql host:port`, also on the
//! ScyllaDB store against that node (a fresh keyspace), so the two stores
//! are compared in one run.
//!
//! `cargo run --release --example persister_throughput -- [answers] [concurrency] [--cql host:port]`
//! (defaults 20000 and 1000). The SQLite file is in a temporary directory on
//! the same disk as the data dir would be.

use std::sync::Arc;
use std::time::Instant;

use futures::StreamExt;
use ractor::Actor;
use skald::store::scylla::ScyllaStore;
use skald::store::sqlite::SqliteStore;
use skald_actors::persister::{Persister, PersisterArgs, PersisterCounters, PersisterMsg};
use skald_actors::ports::store::{AnswerEnd, FinishedAnswer, NewExchange, Store};
use skald_actors::testkit::store::exchange;
use skald_protocol::{FinishReason, Usage};

mod support;

fn answer(ex: &NewExchange) -> FinishedAnswer {
    FinishedAnswer {
        user: ex.user.clone(),
        conversation_id: ex.conversation_id.clone(),
        message_id: ex.assistant_message_id.clone(),
        content: "an answer of about a hundred bytes, which is what a short chat reply weighs once it is stored".into(),
        reasoning: String::new(),
        tool_calls: Vec::new(),
        end: AnswerEnd {
            finish_reason: FinishReason::Stop,
            usage: Usage {
                prompt_tokens: 20,
                completion_tokens: 25,
                reasoning_tokens: None,
            estimated: false,
        },
            error: None,
        },
        at_ms: skald_actors::time::now_ms(),
    }
}

/// `n` exchanges begun (64 at a time), and the answers that finish them.
async fn prepare(store: &dyn Store, n: usize, tag: &str) -> Vec<FinishedAnswer> {
    futures::stream::iter(0..n)
        .map(|i| async move {
            let ex = exchange(
                &format!("{tag}-{}", i % 100).into(),
                &format!("{tag}-{i}"),
                None,
                "q",
            );
            store.begin_exchange(ex.clone()).await.unwrap();
            answer(&ex)
        })
        .buffer_unordered(64)
        .collect()
        .await
}

/// One store's two figures: answers a second one at a time, and through
/// the Persister with `concurrency` streams finishing at once.
struct Figures {
    direct: f64,
    direct_n: usize,
    batched: f64,
    batches: u64,
}

async fn measure(
    store: Arc<dyn Store>,
    n: usize,
    concurrency: usize,
    spool: std::path::PathBuf,
) -> anyhow::Result<Figures> {
    // Baseline: one durable write of one answer at a time, one writer.
    let direct_n = (n / 10).max(100);
    let answers = prepare(store.as_ref(), direct_n, "direct").await;
    let start = Instant::now();
    for a in answers {
        store.finish_answers(vec![a]).await?;
    }
    let direct = direct_n as f64 / start.elapsed().as_secs_f64();

    // The Persister: `concurrency` streams finishing at once, each waiting
    // for its answer to be durable, as Stream actors do.
    let answers = prepare(store.as_ref(), n, "persister").await;
    let counters = Arc::new(PersisterCounters::default());
    let (persister, _) = Actor::spawn(
        None,
        Persister,
        PersisterArgs {
            store,
            spool_path: spool,
            counters: counters.clone(),
        },
    )
    .await?;
    let chunks: Vec<Vec<FinishedAnswer>> = answers
        .chunks(n.div_ceil(concurrency))
        .map(|c| c.to_vec())
        .collect();
    let start = Instant::now();
    let tasks: Vec<_> = chunks
        .into_iter()
        .map(|chunk| {
            let persister = persister.clone();
            tokio::spawn(async move {
                for a in chunk {
                    persister
                        .call(|reply| PersisterMsg::Answer(a, Some(reply)), None)
                        .await
                        .unwrap();
                }
            })
        })
        .collect();
    for t in tasks {
        t.await?;
    }
    let batched = n as f64 / start.elapsed().as_secs_f64();
    let batches = counters.batches.load(std::sync::atomic::Ordering::Relaxed);
    persister.stop(None);
    Ok(Figures {
        direct,
        direct_n,
        batched,
        batches,
    })
}

#[tokio::main(flavor = "multi_thread", worker_threads = 2)]
async fn main() -> anyhow::Result<()> {
    let mut args: Vec<String> = std::env::args().skip(1).collect();
    let cql = support::take_cql_node(&mut args)?;
    let n: usize = args
        .first()
        .map(|s| s.parse())
        .transpose()?
        .unwrap_or(20_000);
    let concurrency: usize = args.get(1).map(|s| s.parse()).transpose()?.unwrap_or(1000);
    let dir = std::env::temp_dir().join(format!("skald-persister-bench-{}", std::process::id()));

    let mut stores: Vec<(String, Arc<dyn Store>)> = vec![(
        "embedded (SQLite, fsync per commit)".into(),
        Arc::new(SqliteStore::open_in(&dir)?),
    )];
    if let Some(node) = cql {
        let settings = support::fresh_keyspace(&node);
        eprintln!("CQL node {node}, keyspace {}", settings.keyspace);
        stores.push((
            format!("CQL node {node} (local_quorum)"),
            Arc::new(ScyllaStore::connect(&settings).await?),
        ));
    }

    println!("| store | writer | answers stored per second | ratio to the store's baseline | ratio to the embedded store |");
    println!("| --- | --- | --- | --- | --- |");
    let mut embedded: Option<Figures> = None;
    for (name, store) in stores {
        let f = measure(
            store,
            n,
            concurrency,
            dir.join(format!("spool-{}.jsonl", name.len())),
        )
        .await?;
        let (direct_vs, batched_vs) = match &embedded {
            Some(e) => (
                format!("{:.2}", f.direct / e.direct),
                format!("{:.2}", f.batched / e.batched),
            ),
            None => ("1.00".into(), "1.00".into()),
        };
        println!(
            "| {name} | baseline: one answer per call ({} answers) | {:.0} | 1.00 | {direct_vs} |",
            f.direct_n, f.direct
        );
        println!(
            "| {name} | Persister, {concurrency} concurrent streams ({n} answers, {} batches, {:.0} answers a batch) | {:.0} | {:.1} | {batched_vs} |",
            f.batches,
            n as f64 / f.batches.max(1) as f64,
            f.batched,
            f.batched / f.direct
        );
        embedded.get_or_insert(f);
    }
    let _ = std::fs::remove_dir_all(dir);
    Ok(())
}
