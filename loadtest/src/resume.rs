//! Resume on another instance: how long a client that drops from the
//! instance running its answer and lands on another waits for its first
//! replayed delta.
//!
//! Each round is one user: connect to `from`, `send`, read `after` deltas,
//! drop the connection, connect to `to`, `resume` `replay` deltas before
//! the last one read (so that the first frame comes from what was
//! published, not from the model's next token), and time from the `resume`
//! frame to the first delta it brings (which must carry the asked `seq`). The stream is then read to its `done`, so a
//! gap or a missing end fails the round. Rounds run one after the other:
//! this measures the path, not a load.

use std::time::{Duration, Instant};

use anyhow::{bail, Context};
use futures::{SinkExt, StreamExt};
use serde::Serialize;
use skald_protocol::{ClientFrame, ClientMessageId, ServerFrame};
use tokio::time::timeout;
use tokio_tungstenite::tungstenite::Message;

use crate::client::{self, Target, Ws};
use crate::stats::Summary;

/// Bound on every wait for a frame.
const FRAME_WAIT: Duration = Duration::from_secs(30);

pub struct ResumeConfig {
    /// The instance that runs the answers.
    pub from: String,
    /// The instance the client resumes on.
    pub to: String,
    pub secret: String,
    pub rounds: u64,
    /// Deltas read on `from` before the drop.
    pub after: u64,
    /// Of those, how many the resume asks again.
    pub replay: u64,
}

#[derive(Debug, Serialize)]
pub struct ResumeReport {
    pub rounds: u64,
    /// From the `resume` frame sent to the first replayed delta.
    pub resume_to_first_delta: Summary,
}

pub async fn resume(config: ResumeConfig) -> anyhow::Result<ResumeReport> {
    let from = Target::parse(&config.from)?;
    let to = Target::parse(&config.to)?;
    if config.rounds == 0 || config.after == 0 || config.replay > config.after {
        bail!("--rounds and --after must be at least 1, and --replay at most --after");
    }
    let mut samples = Vec::with_capacity(config.rounds as usize);
    for round in 0..config.rounds {
        let waited = one_round(&config, &from, &to, round)
            .await
            .with_context(|| format!("round {round}"))?;
        samples.push(u64::try_from(waited.as_micros()).unwrap_or(u64::MAX));
    }
    Ok(ResumeReport {
        rounds: config.rounds,
        resume_to_first_delta: Summary::of(&samples),
    })
}

async fn one_round(
    config: &ResumeConfig,
    from: &Target,
    to: &Target,
    round: u64,
) -> anyhow::Result<Duration> {
    let token = client::mint_token(&config.secret, &format!("resumer-{round}"), 600)?;
    let mut ws = ready(from, &token).await?;
    send(
        &mut ws,
        &ClientFrame::Send {
            id: ClientMessageId::from(format!("resume-{round}")),
            conversation_id: None,
            bot: None,
            text: format!("resume round {round}"),
        },
    )
    .await?;
    let stream_id = loop {
        match next(&mut ws).await? {
            ServerFrame::Ack { stream_id, .. } => break stream_id,
            ServerFrame::Error { code, .. } => bail!("send refused: {}", code.as_str()),
            _ => {}
        }
    };
    let mut seen = 0;
    while seen < config.after {
        match next(&mut ws).await? {
            ServerFrame::Delta { .. } => seen += 1,
            ServerFrame::Done { .. } => bail!("the answer ended before {} deltas", config.after),
            _ => {}
        }
    }
    drop(ws);

    let mut ws = ready(to, &token).await?;
    let asked = Instant::now();
    send(
        &mut ws,
        &ClientFrame::Resume {
            stream_id: stream_id.clone(),
            after_seq: (seen - config.replay) as i64 - 1,
            after_reasoning_seq: None,
        },
    )
    .await?;
    let mut waited = None;
    let mut expected = seen - config.replay;
    loop {
        match next(&mut ws).await? {
            ServerFrame::Delta {
                stream_id: s, seq, ..
            } if s == stream_id => {
                waited.get_or_insert_with(|| asked.elapsed());
                if seq != expected {
                    bail!("resumed at seq {seq}, expected {expected}");
                }
                expected += 1;
            }
            ServerFrame::Done { stream_id: s, .. } if s == stream_id => break,
            ServerFrame::Error { code, .. } => bail!("resume refused: {}", code.as_str()),
            _ => {}
        }
    }
    waited.context("the resumed stream brought no delta")
}

async fn ready(target: &Target, token: &str) -> anyhow::Result<Ws> {
    let mut ws = client::connect(target, token, None).await?;
    match next(&mut ws).await? {
        ServerFrame::Ready { .. } => Ok(ws),
        other => bail!("expected ready, got {}", other.kind()),
    }
}

async fn send(ws: &mut Ws, frame: &ClientFrame) -> anyhow::Result<()> {
    ws.send(Message::text(serde_json::to_string(frame)?))
        .await
        .context("send")
}

async fn next(ws: &mut Ws) -> anyhow::Result<ServerFrame> {
    loop {
        let message = timeout(FRAME_WAIT, ws.next())
            .await
            .context("no frame within 30 s")?
            .context("connection closed")??;
        if let Message::Text(text) = message {
            return serde_json::from_str(text.as_str()).context("undecodable frame");
        }
    }
}
