//! The stream bus on Redis (fred): any instance serves any user.
//!
//! Keys (`<p>` is the configured prefix):
//!
//! | key | type | content | lifetime |
//! | --- | --- | --- | --- |
//! | `<p>:st:<stream>` | stream | one entry per flush, field `f`: the frames of that flush as sent to clients, one per line (JSON holds no raw newline) | capped at [`MAX_ENTRIES`]; expires `resume_window` after its `done` |
//! | `<p>:sm:<stream>` | string | the stream's meta (owner, user, ids, quota month), JSON | [`META_TTL`] while live, `resume_window` after `done` |
//! | `<p>:leases` | zset | stream -> lease expiry (ms) of every live stream | members removed at `done` |
//! | `<p>:orphan:<stream>` | string | the claim of the instance that closes a dead owner's stream | 60 s |
//!
//! Channels: `<p>:ctl:<instance>` carries that instance's control messages
//! (`cancel`), `<p>:users` every user event (`started`).
//!
//! A publisher's flush is one command, the [`PUBLISH`] script (every new
//! stream's meta and lease, one entry per stream with its new frames, the
//! end of the streams that ended), so a token costs a fraction of a round
//! trip and of a command: at 1,000 streams of 20 tokens/s, a flush carries
//! about ten frames.
//! Reads block on a connection of their own (`XREAD BLOCK` holds its
//! connection), pub/sub runs on a subscriber connection that resubscribes
//! after a reconnect, and every other command shares the main pipelined
//! connection. Every command is bounded (`redis.command_timeout_ms`); while
//! Redis is down every call fails at once with [`BusError::Unavailable`].
//! One instance's streams live in one Redis (not a Cluster: `XREAD` over
//! many streams needs their keys in one slot).

use std::time::Duration;

use fred::clients::{Client, SubscriberClient};
use fred::error::Error as FredError;
use fred::interfaces::{
    ClientLike, EventInterface, KeysInterface, PubsubInterface, SortedSetsInterface,
    StreamsInterface,
};
use fred::types::{Expiration, SetOptions, Value};
use skald_actors::ports::bus::{
    BusError, Control, EntryId, Incoming, InstanceId, PublishBatch, StreamBus, StreamMeta,
    UserEvent,
};
use skald_protocol::{ServerFrame, StreamId};
use tokio::sync::mpsc;

use crate::limits::redis::RedisSetupError;
use crate::limits::redis::{eval, invalid_url, prepare, redact, wait_connected, RedisSettings};

/// Entries kept per stream (a generation longer than this in frames keeps
/// only its end for late resumes; the owner's log keeps all of it).
pub const MAX_ENTRIES: u64 = 20_000;

/// One flush, atomically.
/// KEYS: the leases zset; each announced stream's meta; then per stream
/// with frames, its log and its meta.
/// ARGV: lease expiry (ms), meta TTL (ms), MAX_ENTRIES, resume window (ms),
/// the number of announced streams, the number of streams with frames;
/// per announced stream: its id, its meta (JSON); per stream with frames:
/// its id, 1 if its `done` is among them (else 0), its frames.
const PUBLISH: &str = r#"
local k, a = 2, 7
for _ = 1, tonumber(ARGV[5]) do
  redis.call('SET', KEYS[k], ARGV[a + 1], 'PX', ARGV[2])
  redis.call('ZADD', KEYS[1], ARGV[1], ARGV[a])
  k, a = k + 1, a + 2
end
for _ = 1, tonumber(ARGV[6]) do
  redis.call('XADD', KEYS[k], 'MAXLEN', '~', ARGV[3], '*', 'f', ARGV[a + 2])
  if ARGV[a + 1] == '1' then
    redis.call('PEXPIRE', KEYS[k], ARGV[4])
    redis.call('PEXPIRE', KEYS[k + 1], ARGV[4])
    redis.call('ZREM', KEYS[1], ARGV[a])
  end
  k, a = k + 2, a + 3
end
return 1
"#;
/// How long a live stream's meta lives without its `done` (longer than any
/// stream runs; the lease, not this, says whether its owner is alive).
pub const META_TTL: Duration = Duration::from_secs(3600);
/// Incoming messages queued for the instance before new ones are dropped
/// (and counted): a bounded queue, like every other.
const INCOMING_QUEUE: usize = 4096;

#[derive(Clone)]
pub struct BusSettings {
    pub redis: RedisSettings,
    /// A live stream's lease (renewed every third of it by its owner).
    pub stream_lease: Duration,
    /// How long a finished stream stays readable (`sessions.resume_window_ms`).
    pub resume_window: Duration,
}

pub struct RedisBus {
    instance: InstanceId,
    main: Client,
    reader: Client,
    subscriber: SubscriberClient,
    prefix: String,
    secrets: Vec<String>,
    settings: BusSettings,
    /// The [`PUBLISH`] script's hash, once loaded.
    publish_sha: std::sync::OnceLock<String>,
    /// The clients' connection tasks, ended with the bus.
    tasks: Vec<tokio::task::AbortHandle>,
}

impl RedisBus {
    pub async fn connect(settings: BusSettings) -> Result<RedisBus, RedisSetupError> {
        let redis = &settings.redis;
        let (builder, secrets) = prepare(redis)?;
        let bad = |e| invalid_url(redis, e, &secrets);
        let main = builder.build().map_err(bad)?;
        let reader = builder.build().map_err(bad)?;
        let subscriber = builder.build_subscriber_client().map_err(bad)?;
        let tasks = vec![
            main.connect().abort_handle(),
            reader.connect().abort_handle(),
            subscriber.connect().abort_handle(),
            // Subscriptions come back by themselves after a reconnect.
            subscriber.manage_subscriptions().abort_handle(),
        ];
        wait_connected(&main, redis, "stream bus").await;
        Ok(RedisBus {
            instance: InstanceId::generate(),
            prefix: redis.key_prefix.clone(),
            main,
            reader,
            subscriber,
            secrets,
            settings,
            publish_sha: std::sync::OnceLock::new(),
            tasks,
        })
    }

    fn stream_key(&self, stream: &StreamId) -> String {
        format!("{}:st:{stream}", self.prefix)
    }

    fn meta_key(&self, stream: &StreamId) -> String {
        format!("{}:sm:{stream}", self.prefix)
    }

    fn leases_key(&self) -> String {
        format!("{}:leases", self.prefix)
    }

    fn control_channel(&self, instance: &InstanceId) -> String {
        format!("{}:ctl:{instance}", self.prefix)
    }

    fn users_channel(&self) -> String {
        format!("{}:users", self.prefix)
    }

    fn unavailable(&self, what: &str, e: impl std::fmt::Display) -> BusError {
        metrics::counter!("skald_bus_errors_total").increment(1);
        BusError::Unavailable(redact(&format!("redis {what}: {e}"), &self.secrets))
    }

    fn now_ms() -> i64 {
        skald_actors::time::now_ms()
    }
}

impl Drop for RedisBus {
    fn drop(&mut self) {
        // Ends the connections and their reconnection loops.
        for task in &self.tasks {
            task.abort();
        }
    }
}

/// The `(entry id, frame)` pairs of one stream in an `XREAD`/`XRANGE` reply.
fn entries(value: Value) -> Vec<(EntryId, ServerFrame)> {
    let Value::Array(items) = value else {
        return Vec::new();
    };
    items
        .into_iter()
        .filter_map(|item| {
            let Value::Array(mut pair) = item else {
                return None;
            };
            let fields = pair.pop()?;
            let id = pair.pop()?.as_string()?;
            let frames = match fields {
                Value::Array(kv) => kv.into_iter().nth(1)?.as_string()?,
                Value::Map(map) => map.inner().into_iter().next()?.1.as_string()?,
                _ => return None,
            };
            Some(
                frames
                    .split('\n')
                    .filter_map(|frame| serde_json::from_str::<ServerFrame>(frame).ok())
                    .map(|frame| (EntryId(id.clone()), frame))
                    .collect::<Vec<_>>(),
            )
        })
        .flatten()
        .collect()
}

/// `XREAD`'s reply: per stream key, its entries.
fn streams_of(value: Value) -> Vec<(String, Value)> {
    match value {
        Value::Array(streams) => streams
            .into_iter()
            .filter_map(|s| {
                let Value::Array(mut pair) = s else {
                    return None;
                };
                let entries = pair.pop()?;
                Some((pair.pop()?.as_string()?, entries))
            })
            .collect(),
        Value::Map(map) => map
            .inner()
            .into_iter()
            .filter_map(|(k, v)| Some((k.as_str()?.to_string(), v)))
            .collect(),
        _ => Vec::new(),
    }
}

#[async_trait::async_trait]
impl StreamBus for RedisBus {
    fn instance(&self) -> &InstanceId {
        &self.instance
    }

    async fn publish(&self, batch: &PublishBatch) -> Result<(), BusError> {
        if batch.announce.is_empty() && batch.frames.is_empty() {
            return Ok(());
        }
        let lease_until = Self::now_ms() + self.settings.stream_lease.as_millis() as i64;
        let mut keys = Vec::with_capacity(1 + batch.announce.len() + 2 * batch.frames.len());
        let mut args = Vec::with_capacity(6 + 2 * batch.announce.len() + 3 * batch.frames.len());
        keys.push(self.leases_key());
        args.extend([
            lease_until.to_string(),
            META_TTL.as_millis().to_string(),
            MAX_ENTRIES.to_string(),
            self.settings.resume_window.as_millis().to_string(),
            batch.announce.len().to_string(),
            batch.frames.len().to_string(),
        ]);
        for meta in &batch.announce {
            keys.push(self.meta_key(&meta.stream_id));
            args.push(meta.stream_id.to_string());
            args.push(serde_json::to_string(meta).unwrap_or_default());
        }
        for stream in &batch.frames {
            keys.push(self.stream_key(&stream.stream_id));
            keys.push(self.meta_key(&stream.stream_id));
            args.push(stream.stream_id.to_string());
            args.push(if stream.ended { "1" } else { "0" }.to_owned());
            args.push(stream.frames.join("\n"));
        }
        tokio::time::timeout(
            self.settings.redis.command_timeout,
            eval(&self.main, PUBLISH, &self.publish_sha, keys, args),
        )
        .await
        .unwrap_or_else(|_| Err(FredError::new(fred::error::ErrorKind::Timeout, "timed out")))
        .map_err(|e| self.unavailable("publish", e))?;
        Ok(())
    }

    async fn refresh_leases(&self, streams: &[StreamId], until_ms: i64) -> Result<(), BusError> {
        if streams.is_empty() {
            return Ok(());
        }
        let values: Vec<(f64, &str)> = streams
            .iter()
            .map(|s| (until_ms as f64, s.as_str()))
            .collect();
        // XX: a stream that ended (and left the set) is not brought back.
        self.main
            .zadd::<Value, _, _>(
                self.leases_key(),
                Some(SetOptions::XX),
                None,
                false,
                false,
                values,
            )
            .await
            .map(|_| ())
            .map_err(|e| self.unavailable("lease", e))
    }

    async fn meta(&self, stream_id: &StreamId) -> Result<Option<StreamMeta>, BusError> {
        let json: Option<String> = self
            .main
            .get(self.meta_key(stream_id))
            .await
            .map_err(|e| self.unavailable("meta", e))?;
        Ok(json.and_then(|j| serde_json::from_str(&j).ok()))
    }

    async fn read(
        &self,
        after: &[(StreamId, EntryId)],
        block: Duration,
    ) -> Result<Vec<(StreamId, Vec<(EntryId, ServerFrame)>)>, BusError> {
        if after.is_empty() {
            return Ok(Vec::new());
        }
        let keys: Vec<String> = after.iter().map(|(s, _)| self.stream_key(s)).collect();
        let ids: Vec<String> = after.iter().map(|(_, id)| id.0.clone()).collect();
        let (client, block) = if block.is_zero() {
            (&self.main, None)
        } else {
            (&self.reader, Some(block.as_millis() as u64))
        };
        let reply: Value = client
            .xread(Some(1000), block, keys, ids)
            .await
            .map_err(|e| self.unavailable("read", e))?;
        let prefix = format!("{}:st:", self.prefix);
        Ok(streams_of(reply)
            .into_iter()
            .filter_map(|(key, value)| {
                let stream = StreamId::from(key.strip_prefix(&prefix)?);
                Some((stream, entries(value)))
            })
            .collect())
    }

    async fn lapsed(&self, now_ms: i64, limit: usize) -> Result<Vec<StreamId>, BusError> {
        let ids: Vec<String> = self
            .main
            .zrangebyscore(
                self.leases_key(),
                "-inf",
                now_ms,
                false,
                Some((0, limit as i64)),
            )
            .await
            .map_err(|e| self.unavailable("lapsed", e))?;
        Ok(ids.into_iter().map(StreamId::from).collect())
    }

    async fn claim_orphan(&self, stream_id: &StreamId) -> Result<bool, BusError> {
        let set: Option<String> = self
            .main
            .set(
                format!("{}:orphan:{stream_id}", self.prefix),
                self.instance.0.as_str(),
                Some(Expiration::PX(60_000)),
                Some(SetOptions::NX),
                false,
            )
            .await
            .map_err(|e| self.unavailable("claim", e))?;
        Ok(set.is_some())
    }

    async fn control(&self, to: &InstanceId, control: &Control) -> Result<(), BusError> {
        let json = serde_json::to_string(control).unwrap_or_default();
        self.main
            .publish::<(), _, _>(self.control_channel(to), json)
            .await
            .map_err(|e| self.unavailable("control", e))
    }

    async fn user_event(&self, event: &UserEvent) -> Result<(), BusError> {
        let json = serde_json::to_string(event).unwrap_or_default();
        self.main
            .publish::<(), _, _>(self.users_channel(), json)
            .await
            .map_err(|e| self.unavailable("user event", e))
    }

    async fn listen(&self) -> Result<mpsc::Receiver<Incoming>, BusError> {
        let control = self.control_channel(&self.instance);
        let users = self.users_channel();
        let mut messages = self.subscriber.message_rx();
        self.subscriber
            .subscribe(vec![control.clone(), users.clone()])
            .await
            .map_err(|e| self.unavailable("subscribe", e))?;
        let (tx, rx) = mpsc::channel(INCOMING_QUEUE);
        tokio::spawn(async move {
            loop {
                let message = match messages.recv().await {
                    Ok(message) => message,
                    Err(tokio::sync::broadcast::error::RecvError::Lagged(n)) => {
                        metrics::counter!("skald_bus_incoming_dropped_total").increment(n);
                        continue;
                    }
                    Err(_) => return,
                };
                let Some(text) = message.value.as_string() else {
                    continue;
                };
                let incoming = if *message.channel == *control {
                    serde_json::from_str(&text).ok().map(Incoming::Control)
                } else if *message.channel == *users {
                    serde_json::from_str(&text).ok().map(Incoming::User)
                } else {
                    None
                };
                let Some(incoming) = incoming else { continue };
                match tx.try_send(incoming) {
                    Ok(()) => {}
                    Err(mpsc::error::TrySendError::Full(_)) => {
                        metrics::counter!("skald_bus_incoming_dropped_total").increment(1);
                    }
                    Err(mpsc::error::TrySendError::Closed(_)) => return,
                }
            }
        });
        Ok(rx)
    }
}
