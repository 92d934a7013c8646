//! The built-in simulated model: deterministic answers at a configured speed.
//!
//! It makes `cargo run --release` useful with nothing else installed, and
//! gives tests and demos a model whose every token is known in advance.
//! Token `i` of an answer is a word picked from a fixed vocabulary by `i`
//! and a hash of the last user message, followed by a space; its own
//! "tokenizer" counts whitespace-separated words of the prompt.

use std::time::Duration;

use futures::stream;
use skald_actors::ports::model::{
    ModelError, ModelEvent, ModelFinish, ModelProvider, ModelRequest, Role, TokenStream,
};
use skald_protocol::Usage;

const VOCABULARY: [&str; 24] = [
    "Skald", "streams", "every", "token", "as", "the", "model", "writes", "it", "and", "keeps",
    "each", "answer", "safe", "while", "sessions", "come", "and", "go", "so", "nothing", "is",
    "lost", "today",
];

#[derive(Debug, Clone)]
pub struct SimulatedModel {
    /// Tokens per second; 0 means as fast as possible.
    pub tokens_per_second: f64,
    /// Length of a full answer before `max_tokens` applies.
    pub answer_tokens: u32,
}

impl SimulatedModel {
    /// The answer this model gives to `request`, token by token, and whether
    /// `max_tokens` cut it.
    pub fn answer(&self, request: &ModelRequest) -> (Vec<String>, ModelFinish) {
        let seed = request
            .messages
            .iter()
            .rev()
            .find(|m| m.role == Role::User)
            .map(|m| fnv1a(m.content.as_bytes()))
            .unwrap_or(0);
        let cut = request.max_tokens < self.answer_tokens;
        let n = self.answer_tokens.min(request.max_tokens) as u64;
        let tokens = (0..n)
            .map(|i| {
                let word =
                    VOCABULARY[((seed.wrapping_add(i * 7)) % VOCABULARY.len() as u64) as usize];
                format!("{word} ")
            })
            .collect();
        let finish = if cut {
            ModelFinish::Length
        } else {
            ModelFinish::Stop
        };
        (tokens, finish)
    }
}

fn fnv1a(bytes: &[u8]) -> u64 {
    bytes.iter().fold(0xcbf29ce484222325u64, |h, b| {
        (h ^ u64::from(*b)).wrapping_mul(0x100000001b3)
    })
}

fn count_words(request: &ModelRequest) -> u64 {
    request
        .messages
        .iter()
        .map(|m| m.content.split_whitespace().count() as u64)
        .sum()
}

#[async_trait::async_trait]
impl ModelProvider for SimulatedModel {
    async fn start(&self, request: ModelRequest) -> Result<TokenStream, ModelError> {
        let (tokens, finish) = self.answer(&request);
        let usage = Usage {
            prompt_tokens: count_words(&request),
            completion_tokens: tokens.len() as u64,
        };
        let period = (self.tokens_per_second > 0.0)
            .then(|| Duration::from_secs_f64(1.0 / self.tokens_per_second));
        let events = tokens
            .into_iter()
            .map(ModelEvent::Token)
            .chain([ModelEvent::Finish(finish), ModelEvent::Usage(usage)]);
        // The first token comes at once, the next ones every `period`
        // (a first tick of a fresh interval would still wait for the timer
        // wheel, about a millisecond).
        let ticker = period.map(|p| tokio::time::interval_at(tokio::time::Instant::now() + p, p));
        let stream = stream::unfold(
            (events, ticker, true),
            |(mut events, mut ticker, first)| async move {
                let event = events.next()?;
                match (&event, ticker.as_mut()) {
                    (ModelEvent::Token(_), Some(ticker)) if !first => {
                        ticker.tick().await;
                    }
                    _ => tokio::task::yield_now().await,
                }
                Some((Ok(event), (events, ticker, false)))
            },
        );
        Ok(Box::pin(stream))
    }

    fn name(&self) -> &'static str {
        "simulated"
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use futures::StreamExt;
    use skald_actors::ports::model::PromptMessage;

    fn request(text: &str, max_tokens: u32) -> ModelRequest {
        ModelRequest {
            model: None,
            messages: vec![
                PromptMessage {
                    role: Role::System,
                    content: "be brief".into(),
                },
                PromptMessage {
                    role: Role::User,
                    content: text.into(),
                },
            ],
            temperature: 0.0,
            max_tokens,
            user: "u".into(),
        }
    }

    #[tokio::test]
    async fn deterministic_answer_with_its_own_usage() {
        let model = SimulatedModel {
            tokens_per_second: 0.0,
            answer_tokens: 5,
        };
        let events: Vec<_> = model
            .start(request("hello there", 100))
            .await
            .unwrap()
            .collect()
            .await;
        let events: Vec<ModelEvent> = events.into_iter().map(Result::unwrap).collect();
        assert_eq!(events.len(), 7);
        assert_eq!(events[5], ModelEvent::Finish(ModelFinish::Stop));
        assert_eq!(
            events[6],
            ModelEvent::Usage(Usage {
                prompt_tokens: 4,
                completion_tokens: 5
            })
        );
        let again: Vec<_> = model
            .start(request("hello there", 100))
            .await
            .unwrap()
            .collect()
            .await;
        assert_eq!(again.len(), 7);
        assert_eq!(
            model.answer(&request("hello there", 100)),
            model.answer(&request("hello there", 100))
        );
        assert_ne!(
            model.answer(&request("other", 100)).0,
            model.answer(&request("hello there", 100)).0
        );
    }

    #[test]
    fn max_tokens_cuts_with_length() {
        let model = SimulatedModel {
            tokens_per_second: 0.0,
            answer_tokens: 10,
        };
        let (tokens, finish) = model.answer(&request("x", 3));
        assert_eq!(tokens.len(), 3);
        assert_eq!(finish, ModelFinish::Length);
    }
}
