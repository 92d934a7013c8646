//! Answers stored per second by the Persister on the embedded store, next
//! to a baseline measured in the same run: the same answers written one
//! `finish_answers` call (one durable transaction) at a time.
//!
//! `cargo run --release --example persister_throughput -- [answers] [concurrency]`
//! (defaults 20000 and 1000). The SQLite file is in a temporary directory on
//! the same disk as the data dir would be.

use std::sync::Arc;
use std::time::Instant;

use ractor::Actor;
use skald::store::sqlite::SqliteStore;
use skald_actors::persister::{Persister, PersisterArgs, PersisterCounters, PersisterMsg};
use skald_actors::ports::store::{AnswerEnd, FinishedAnswer, Store};
use skald_actors::testkit::store::exchange;
use skald_protocol::{FinishReason, Usage};

fn answer(ex: &skald_actors::ports::store::NewExchange) -> FinishedAnswer {
    FinishedAnswer {
        user: ex.user.clone(),
        conversation_id: ex.conversation_id.clone(),
        message_id: ex.assistant_message_id.clone(),
        content: "an answer of about a hundred bytes, which is what a short chat reply weighs once it is stored".into(),
        end: AnswerEnd {
            finish_reason: FinishReason::Stop,
            usage: Usage {
                prompt_tokens: 20,
                completion_tokens: 25,
                reasoning_tokens: None,
            },
            error: None,
        },
        at_ms: skald_actors::time::now_ms(),
    }
}

async fn prepare(store: &SqliteStore, n: usize, tag: &str) -> Vec<FinishedAnswer> {
    let mut answers = Vec::with_capacity(n);
    for i in 0..n {
        let ex = exchange(
            &format!("{tag}-{}", i % 100).into(),
            &format!("{tag}-{i}"),
            None,
            "q",
        );
        store.begin_exchange(ex.clone()).await.unwrap();
        answers.push(answer(&ex));
    }
    answers
}

#[tokio::main(flavor = "multi_thread", worker_threads = 2)]
async fn main() -> anyhow::Result<()> {
    let args: Vec<String> = std::env::args().collect();
    let n: usize = args
        .get(1)
        .map(|s| s.parse())
        .transpose()?
        .unwrap_or(20_000);
    let concurrency: usize = args.get(2).map(|s| s.parse()).transpose()?.unwrap_or(1000);
    let dir = std::env::temp_dir().join(format!("skald-persister-bench-{}", std::process::id()));
    let store = SqliteStore::open_in(&dir)?;

    // Baseline: one durable transaction per answer, one writer.
    let baseline_n = (n / 10).max(100);
    let answers = prepare(&store, baseline_n, "direct").await;
    let start = Instant::now();
    for a in answers {
        store.finish_answers(vec![a]).await?;
    }
    let direct = baseline_n as f64 / start.elapsed().as_secs_f64();

    // The Persister: `concurrency` streams finishing at once, each waiting
    // for its answer to be durable, as Stream actors do.
    let answers = prepare(&store, n, "persister").await;
    let counters = Arc::new(PersisterCounters::default());
    let (persister, _) = Actor::spawn(
        None,
        Persister,
        PersisterArgs {
            store: Arc::new(store.clone()),
            spool_path: dir.join("spool.jsonl"),
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
    println!("| writer | answers stored per second | ratio |");
    println!("| --- | --- | --- |");
    println!("| baseline: one durable transaction per answer ({baseline_n} answers) | {direct:.0} | 1.00 |");
    println!(
        "| Persister, {concurrency} concurrent streams ({n} answers, {batches} batches, {:.0} answers a batch) | {batched:.0} | {:.1} |",
        n as f64 / batches.max(1) as f64,
        batched / direct
    );
    persister.stop(None);
    let _ = std::fs::remove_dir_all(dir);
    Ok(())
}
