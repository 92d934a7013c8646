//! The hot path of a token, measured with criterion: `cargo bench -p skald-actors`.
//!
//! - `encode_delta`: the borrowed encoder the writer uses, next to its
//!   baseline, building an owned `ServerFrame::Delta` and encoding it;
//! - `token_through_log_and_outbox`: one token pushed into a stream's log,
//!   waking one connection's outbox, and drained into an encoded `delta`
//!   frame, next to the baseline of encoding that frame alone. The
//!   difference is what the actors' data path adds per token.

use std::sync::Arc;

use criterion::{criterion_group, criterion_main, Criterion};
use skald_actors::outbox::Outbox;
use skald_actors::stream_log::{StreamIds, StreamLog};
use skald_protocol::{encode_delta, ServerFrame};

const STREAM_ID: &str = "0193a5c4-7e1f-7c3a-9b2d-5e6f7a8b9c0d";

fn encode(c: &mut Criterion) {
    let mut group = c.benchmark_group("encode_delta");
    group.bench_function("baseline: owned ServerFrame::Delta", |b| {
        b.iter(|| {
            ServerFrame::Delta {
                stream_id: STREAM_ID.into(),
                seq: 41,
                text: "Bonjour ".to_owned(),
            }
            .encode()
        })
    });
    group.bench_function("encode_delta (borrowed)", |b| {
        b.iter(|| encode_delta(STREAM_ID, 41, "Bonjour "))
    });
    group.finish();
}

fn token_path(c: &mut Criterion) {
    let mut group = c.benchmark_group("token_through_log_and_outbox");
    group.bench_function("baseline: encode one delta", |b| {
        b.iter(|| encode_delta(STREAM_ID, 0, "token "))
    });
    group.bench_function("push_token + drain", |b| {
        let log = Arc::new(StreamLog::new(StreamIds {
            stream_id: STREAM_ID.into(),
            user: "u".into(),
            conversation_id: "c".into(),
            message_id: "m".into(),
        }));
        let outbox = Outbox::new(256);
        outbox.push_and_attach(None, log.clone(), Default::default());
        outbox.drain();
        b.iter(|| {
            log.push_token("token ");
            let drained = outbox.drain();
            assert_eq!(drained.frames.len(), 1);
            drained
        })
    });
    group.finish();
}

criterion_group!(benches, encode, token_path);
criterion_main!(benches);
