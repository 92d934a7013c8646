//! Named upstreams, tried in a bot's order: the model provider when at
//! least one upstream is configured.
//!
//! Why fail over here, and only before the first token: until the model
//! said something (a thought or a word), nothing reached the client or the
//! log, so another upstream can answer instead without a word written
//! twice. After the first token a failure ends the stream as it always did.
//! What moves to the next upstream: a refused or broken connection, a
//! timeout (each upstream but the last has its own `first_token_timeout_ms`;
//! the last waits as long as the stream's own first-token timeout allows),
//! a 5xx, a 429, an error before the first token. A 4xx other than 429 is
//! the request's fault and would be refused everywhere: it ends the stream.
//!
//! Cool-down (what LiteLLM's router and Portkey do): an upstream that failed
//! `cooldown_after_failures` times in a row is skipped for `cooldown_ms`,
//! and one that answered 429 or 503 with `Retry-After` for that long (at
//! once, and for the longer of the two when both apply),
//! while another upstream of the list is not cooling down (when all are,
//! they are tried anyway: a refusal without trying helps nobody). One
//! success ends it. `/metrics` counts attempts, failures and skips per
//! upstream; `/readyz` lists the ones cooling down without failing.

use std::collections::BTreeMap;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use futures::StreamExt;
use skald_actors::ports::model::{ModelError, ModelProvider, ModelRequest, TokenStream};

/// The upstream a bot uses when it names none (`SKALD_UPSTREAM_*`).
pub const DEFAULT_UPSTREAM: &str = "default";

/// When an upstream that keeps failing is set aside.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Cooldown {
    pub after_failures: u32,
    pub duration: Duration,
}

/// One named upstream.
pub struct Upstream {
    pub name: String,
    pub provider: Arc<dyn ModelProvider>,
    /// How long it has for its first token before the next is tried.
    pub first_token_timeout: Duration,
}

#[derive(Debug, Default)]
struct Health {
    failures_in_a_row: u32,
    cooling_until: Option<Instant>,
}

struct Entry {
    upstream: Upstream,
    health: Mutex<Health>,
}

impl Entry {
    fn health(&self) -> std::sync::MutexGuard<'_, Health> {
        self.health.lock().unwrap_or_else(|p| p.into_inner())
    }

    fn is_cooling(&self, now: Instant) -> bool {
        self.health().cooling_until.is_some_and(|until| until > now)
    }

    fn succeeded(&self) {
        let mut health = self.health();
        if health.cooling_until.take().is_some() {
            tracing::info!(upstream = %self.upstream.name, "upstream answering again; its cool-down ends");
        }
        health.failures_in_a_row = 0;
        metrics::gauge!("skald_upstream_cooling_down", "upstream" => self.upstream.name.clone())
            .set(0.0);
    }

    /// A failure: counted, and once there were enough in a row, or when
    /// the upstream asked to be left alone (`Retry-After`), it cools down
    /// (for the longer of the two).
    fn failed(&self, cooldown: Cooldown, retry_after: Option<Duration>, now: Instant) {
        let mut health = self.health();
        health.failures_in_a_row = health.failures_in_a_row.saturating_add(1);
        let counted =
            (health.failures_in_a_row >= cooldown.after_failures).then_some(cooldown.duration);
        if let Some(wait) = counted.max(retry_after) {
            let until = now + wait;
            health.cooling_until = Some(health.cooling_until.map_or(until, |u| u.max(until)));
            tracing::warn!(
                upstream = %self.upstream.name,
                failures = health.failures_in_a_row,
                seconds = wait.as_secs_f64(),
                asked = retry_after.is_some(),
                "upstream failing or asking to wait: skipped while another can answer"
            );
            metrics::gauge!("skald_upstream_cooling_down", "upstream" => self.upstream.name.clone())
                .set(1.0);
        }
    }
}

/// The upstreams, by name, and their health.
pub struct Upstreams {
    entries: BTreeMap<String, Entry>,
    cooldown: Cooldown,
}

impl Upstreams {
    pub fn new(upstreams: Vec<Upstream>, cooldown: Cooldown) -> Upstreams {
        let entries = upstreams
            .into_iter()
            .map(|upstream| {
                let entry = Entry {
                    upstream,
                    health: Mutex::new(Health::default()),
                };
                (entry.upstream.name.clone(), entry)
            })
            .collect();
        Upstreams { entries, cooldown }
    }

    /// The upstreams to try for `request`, in order: the bot's list (the
    /// default upstream when it names none), those cooling down left out
    /// while another is not.
    fn plan(&self, request: &ModelRequest) -> Vec<&Entry> {
        let named: Vec<&Entry> = if request.upstreams.is_empty() {
            self.entries.get(DEFAULT_UPSTREAM).into_iter().collect()
        } else {
            request
                .upstreams
                .iter()
                .filter_map(|name| self.entries.get(name))
                .collect()
        };
        let now = Instant::now();
        let (cooling, live): (Vec<&Entry>, Vec<&Entry>) =
            named.iter().partition(|entry| entry.is_cooling(now));
        if live.is_empty() {
            return named;
        }
        for entry in cooling {
            metrics::counter!("skald_upstream_skipped_total", "upstream" => entry.upstream.name.clone())
                .increment(1);
        }
        live
    }

    /// One attempt: the upstream's first event, and the stream after it.
    async fn attempt(
        entry: &Entry,
        request: ModelRequest,
        last: bool,
    ) -> Result<TokenStream, ModelError> {
        let attempt = async {
            let mut tokens = entry.upstream.provider.start(request).await?;
            match tokens.next().await {
                Some(Ok(first)) => Ok(futures::stream::once(async { Ok(first) })
                    .chain(tokens)
                    .boxed()),
                Some(Err(error)) => Err(error),
                None => Err(ModelError::upstream(
                    "the model provider ended its answer before it began",
                )),
            }
        };
        if last {
            // The stream's own first-token timeout bounds it.
            return attempt.await;
        }
        tokio::time::timeout(entry.upstream.first_token_timeout, attempt)
            .await
            .unwrap_or_else(|_| {
                Err(ModelError::timeout(
                    "the model provider did not answer in time",
                ))
            })
    }
}

#[async_trait::async_trait]
impl ModelProvider for Upstreams {
    async fn start(&self, request: ModelRequest) -> Result<TokenStream, ModelError> {
        let plan = self.plan(&request);
        let Some(last_index) = plan.len().checked_sub(1) else {
            return Err(ModelError::upstream(
                "no upstream is configured for this bot",
            ));
        };
        let mut failure = None;
        for (i, entry) in plan.into_iter().enumerate() {
            let name = entry.upstream.name.clone();
            metrics::counter!("skald_upstream_requests_total", "upstream" => name.clone())
                .increment(1);
            let started = Instant::now();
            match Upstreams::attempt(entry, request.clone(), i == last_index).await {
                Ok(tokens) => {
                    entry.succeeded();
                    if i > 0 {
                        tracing::info!(upstream = %name, attempt = i + 1, "answered after a failover");
                    }
                    return Ok(tokens);
                }
                Err(error) => {
                    metrics::counter!("skald_upstream_failures_total", "upstream" => name.clone())
                        .increment(1);
                    entry.failed(self.cooldown, error.retry_after, Instant::now());
                    tracing::warn!(
                        upstream = %name,
                        elapsed_ms = started.elapsed().as_millis() as u64,
                        error = %error.message,
                        next = i < last_index && error.failover,
                        "upstream attempt failed"
                    );
                    let next = error.failover;
                    failure = Some(error);
                    if !next {
                        break;
                    }
                }
            }
        }
        Err(failure.unwrap_or_else(|| ModelError::upstream("no upstream answered")))
    }

    fn name(&self) -> &'static str {
        "upstreams"
    }

    fn upstream_status(&self) -> Vec<(String, &'static str)> {
        let now = Instant::now();
        self.entries
            .iter()
            .map(|(name, entry)| {
                let status = if entry.is_cooling(now) {
                    "cooling_down"
                } else {
                    "ok"
                };
                (name.clone(), status)
            })
            .collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use skald_actors::ports::model::{ModelEvent, ModelFinish};
    use std::sync::atomic::{AtomicU32, Ordering};

    /// A provider that fails `failures` times (as `error`), then answers.
    struct Flaky {
        failures: AtomicU32,
        error: ModelError,
        calls: AtomicU32,
    }

    impl Flaky {
        fn new(failures: u32, error: ModelError) -> Arc<Flaky> {
            Arc::new(Flaky {
                failures: AtomicU32::new(failures),
                error,
                calls: AtomicU32::new(0),
            })
        }
    }

    #[async_trait::async_trait]
    impl ModelProvider for Flaky {
        async fn start(&self, _: ModelRequest) -> Result<TokenStream, ModelError> {
            self.calls.fetch_add(1, Ordering::Relaxed);
            let left = self.failures.load(Ordering::Relaxed);
            if left > 0 {
                self.failures.store(left - 1, Ordering::Relaxed);
                return Err(self.error.clone());
            }
            Ok(futures::stream::iter([
                Ok(ModelEvent::Token("hi".into())),
                Ok(ModelEvent::Finish(ModelFinish::Stop)),
            ])
            .boxed())
        }

        fn name(&self) -> &'static str {
            "flaky"
        }
    }

    fn request(upstreams: &[&str]) -> ModelRequest {
        ModelRequest {
            max_tokens: 10,
            upstreams: upstreams.iter().map(|s| s.to_string()).collect(),
            ..skald_actors::testkit::model::request("q")
        }
    }

    fn upstreams(list: &[(&str, Arc<Flaky>)]) -> Upstreams {
        Upstreams::new(
            list.iter()
                .map(|(name, provider)| Upstream {
                    name: name.to_string(),
                    provider: provider.clone(),
                    first_token_timeout: Duration::from_secs(5),
                })
                .collect(),
            Cooldown {
                after_failures: 2,
                duration: Duration::from_secs(60),
            },
        )
    }

    fn status(all: &Upstreams, name: &str) -> &'static str {
        all.upstream_status()
            .into_iter()
            .find(|(n, _)| n == name)
            .map(|(_, s)| s)
            .unwrap()
    }

    async fn text(tokens: TokenStream) -> String {
        tokens
            .filter_map(|e| async move {
                match e {
                    Ok(ModelEvent::Token(t)) => Some(t),
                    _ => None,
                }
            })
            .collect::<Vec<_>>()
            .await
            .concat()
    }

    #[tokio::test]
    async fn a_failing_upstream_is_passed_over_then_cooled_down() {
        let primary = Flaky::new(u32::MAX, ModelError::upstream("HTTP 503"));
        let backup = Flaky::new(0, ModelError::upstream("unused"));
        let all = upstreams(&[("primary", primary.clone()), ("backup", backup.clone())]);
        let asked = request(&["primary", "backup"]);
        for _ in 0..4 {
            let tokens = all.start(asked.clone()).await.unwrap();
            assert_eq!(text(tokens).await, "hi");
        }
        // Two failures in a row, then skipped while the backup answers.
        assert_eq!(primary.calls.load(Ordering::Relaxed), 2);
        assert_eq!(backup.calls.load(Ordering::Relaxed), 4);
        assert_eq!(status(&all, "primary"), "cooling_down");
        assert_eq!(status(&all, "backup"), "ok");
    }

    #[tokio::test]
    async fn a_refusal_of_the_request_is_not_failed_over() {
        let mut refused = ModelError::upstream("HTTP 400: context too long");
        refused.failover = false;
        let primary = Flaky::new(1, refused);
        let backup = Flaky::new(0, ModelError::upstream("unused"));
        let all = upstreams(&[("primary", primary), ("backup", backup.clone())]);
        let error = all
            .start(request(&["primary", "backup"]))
            .await
            .err()
            .unwrap();
        assert!(error.message.contains("400"));
        assert_eq!(backup.calls.load(Ordering::Relaxed), 0);
    }

    #[tokio::test]
    async fn an_upstream_that_asks_to_wait_is_left_alone_at_once() {
        let mut busy = ModelError::upstream("HTTP 429");
        busy.retry_after = Some(Duration::from_secs(30));
        let primary = Flaky::new(u32::MAX, busy);
        let backup = Flaky::new(0, ModelError::upstream("unused"));
        let all = upstreams(&[("primary", primary.clone()), ("backup", backup)]);
        for _ in 0..3 {
            let tokens = all.start(request(&["primary", "backup"])).await.unwrap();
            assert_eq!(text(tokens).await, "hi");
        }
        assert_eq!(primary.calls.load(Ordering::Relaxed), 1);
        assert_eq!(status(&all, "primary"), "cooling_down");
    }

    #[tokio::test]
    async fn when_all_cool_down_they_are_tried_anyway() {
        let only = Flaky::new(2, ModelError::upstream("HTTP 500"));
        let all = upstreams(&[(DEFAULT_UPSTREAM, only.clone())]);
        for _ in 0..2 {
            assert!(all.start(request(&[])).await.is_err());
        }
        assert_eq!(status(&all, DEFAULT_UPSTREAM), "cooling_down");
        let tokens = all.start(request(&[])).await.unwrap();
        assert_eq!(text(tokens).await, "hi");
        assert_eq!(status(&all, DEFAULT_UPSTREAM), "ok", "one success ends it");
    }
}
