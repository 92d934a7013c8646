//! The built-in simulated model: deterministic answers at a configured speed.
//!
//! It makes `cargo run --release` useful with nothing else installed, and
//! gives tests and demos a model whose every token is known in advance. Its
//! answer says what it is, quotes the question, and shows what the widget
//! renders (a short list, inline code, a code block), cut or lengthened to
//! exactly `answer_tokens` tokens (then the bot's `max_tokens` applies). A
//! token is a word with the white space after it; its own "tokenizer"
//! counts whitespace-separated words of the prompt.

use std::time::Duration;

use futures::stream;
use skald_actors::ports::model::{
    ModelError, ModelEvent, ModelFinish, ModelProvider, ModelRequest, Role, TokenStream,
};
use skald_protocol::Usage;

/// Longest part of the question the answer quotes, in characters.
const QUOTE_CHARS: usize = 120;

/// The answer, `{question}` standing for the quoted question.
const ANSWER: &str = "I am Skald's simulated model: no language model is connected, so every \
question gets this same answer, written at the configured pace.

You asked: \u{201c}{question}\u{201d}

Here is what the chat widget renders:
- a short list like this one,
- `inline code`,
- and a code block:

```rust
fn main() {
    println!(\"streamed by Skald\");
}
```

Set `SKALD_UPSTREAM_URL` to any OpenAI-compatible endpoint to talk to a real model. ";

/// What follows the answer when `answer_tokens` asks for more words than it has.
const MORE: &str = "(The simulated model goes on to make the answer as long as configured.) ";

#[derive(Debug, Clone)]
pub struct SimulatedModel {
    /// Tokens per second; 0 means as fast as possible.
    pub tokens_per_second: f64,
    /// Length of a full answer before `max_tokens` applies.
    pub answer_tokens: u32,
}

/// Words with the white space that follows each.
fn tokens(text: &str) -> impl Iterator<Item = &str> + '_ {
    let mut rest = text;
    std::iter::from_fn(move || {
        if rest.is_empty() {
            return None;
        }
        let word_end = rest.find(char::is_whitespace).unwrap_or(rest.len());
        let space_end = rest[word_end..]
            .find(|c: char| !c.is_whitespace())
            .map_or(rest.len(), |i| word_end + i);
        let (token, tail) = rest.split_at(space_end);
        rest = tail;
        Some(token)
    })
}

impl SimulatedModel {
    /// The answer this model gives to `request`, token by token, and whether
    /// `max_tokens` cut it.
    pub fn answer(&self, request: &ModelRequest) -> (Vec<String>, ModelFinish) {
        let question = request
            .messages
            .iter()
            .rev()
            .find(|m| m.role == Role::User)
            .map(|m| m.content.as_str())
            .unwrap_or("");
        let flat = question.split_whitespace().collect::<Vec<_>>().join(" ");
        let mut quoted: String = flat.chars().take(QUOTE_CHARS).collect();
        if quoted.len() < flat.len() {
            quoted.push('\u{2026}');
        }
        let answer = ANSWER.replace("{question}", &quoted);
        let cut = request.max_tokens < self.answer_tokens;
        let n = self.answer_tokens.min(request.max_tokens) as usize;
        let tokens = tokens(&answer)
            .chain(std::iter::repeat_with(|| tokens(MORE)).flatten())
            .take(n)
            .map(str::to_owned)
            .collect();
        let finish = if cut {
            ModelFinish::Length
        } else {
            ModelFinish::Stop
        };
        (tokens, finish)
    }
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
            reasoning_tokens: None,
            estimated: false,
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
            messages: vec![
                PromptMessage::new(Role::System, "be brief"),
                PromptMessage::new(Role::User, text),
            ],
            max_tokens,
            ..skald_actors::testkit::model::request(text)
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
                completion_tokens: 5,
                reasoning_tokens: None,
                estimated: false,
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
        let longer = SimulatedModel {
            answer_tokens: 40,
            ..model
        };
        assert_ne!(
            longer.answer(&request("other", 100)).0,
            longer.answer(&request("hello there", 100)).0,
            "the answer quotes the question"
        );
    }

    #[test]
    fn the_answer_says_what_it_is_quotes_the_question_and_shows_markdown() {
        let model = SimulatedModel {
            tokens_per_second: 0.0,
            answer_tokens: 500,
        };
        let (tokens, finish) = model.answer(&request("What is   Skald?", 1000));
        let text = tokens.concat();
        assert_eq!(tokens.len(), 500, "exactly answer_tokens tokens");
        assert_eq!(finish, ModelFinish::Stop);
        assert!(text.starts_with("I am Skald's simulated model"));
        assert!(text.contains("You asked: \u{201c}What is Skald?\u{201d}"));
        assert!(text.contains("\n- a short list"));
        assert!(text.contains("`inline code`"));
        assert!(text.contains("```rust\nfn main() {\n"));
        assert!(text.contains("The simulated model goes on"));
        // Tokens are words with their white space: nothing lost.
        assert!(tokens.iter().all(|t| !t.trim().is_empty()));
        let long = "x ".repeat(200);
        let quoted = model.answer(&request(&long, 1000)).0.concat();
        assert!(quoted.contains('\u{2026}'), "a long question is shortened");
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
