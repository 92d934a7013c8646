//! Splits a leading `<think>…</think>` out of a model's streamed content:
//! the form in which DeepSeek-R1, QwQ and the models distilled from them
//! give their reasoning when the server in front of them has no reasoning
//! parser (vLLM or llama.cpp without one, many hosted endpoints).
//!
//! Why a state machine over pieces rather than a search in the whole text:
//! the answer streams, so the split must too, and the tags arrive cut at
//! any byte (`<th` in one chunk, `ink>` in the next; the end of the
//! thinking and the start of the answer in one chunk). Text that could
//! still be the start of a tag is held back until the next piece (at most
//! a tag's length), never longer, so the answer is delayed by nothing
//! else.
//!
//! Only a *leading* block counts (after whitespace): `<think>` later in an
//! answer is the answer's text. Whitespace right after `<think>` and right
//! after `</think>` is dropped (models put newlines there); a block never
//! closed (the model was cut while thinking) is all reasoning.

const OPEN: &str = "<think>";
const CLOSE: &str = "</think>";

/// A piece of the content, once split.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Piece {
    Reasoning(String),
    Answer(String),
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
enum State {
    /// Nothing but whitespace seen: a `<think>` may still come.
    #[default]
    Start,
    /// Inside the block, before any non-whitespace.
    ThinkingStart,
    Thinking,
    /// After `</think>`, before any non-whitespace.
    AnswerStart,
    Answer,
}

/// The splitter of one stream's content.
#[derive(Debug, Default)]
pub struct ThinkSplitter {
    state: State,
    /// Text held back: what may be the start of a tag.
    held: String,
}

impl ThinkSplitter {
    pub fn new() -> ThinkSplitter {
        ThinkSplitter::default()
    }

    /// Splits the next piece of content; appends what can be said now.
    pub fn push(&mut self, text: &str, out: &mut Vec<Piece>) {
        if self.state == State::Answer && self.held.is_empty() {
            // The common case once the answer started: no copy of state.
            emit(out, Piece::Answer(text.to_owned()));
            return;
        }
        let mut rest = std::mem::take(&mut self.held);
        rest.push_str(text);
        let mut rest = rest.as_str();
        loop {
            match self.state {
                State::Start => {
                    let trimmed = rest.trim_start();
                    if let Some(after) = trimmed.strip_prefix(OPEN) {
                        self.state = State::ThinkingStart;
                        rest = after;
                    } else if OPEN.starts_with(trimmed) {
                        // Whitespace, or the start of the tag: wait.
                        self.held = rest.to_owned();
                        return;
                    } else {
                        self.state = State::Answer;
                    }
                }
                State::ThinkingStart => {
                    rest = rest.trim_start();
                    if rest.is_empty() {
                        return;
                    }
                    self.state = State::Thinking;
                }
                State::Thinking => {
                    if let Some(at) = rest.find(CLOSE) {
                        emit(out, Piece::Reasoning(rest[..at].to_owned()));
                        rest = &rest[at + CLOSE.len()..];
                        self.state = State::AnswerStart;
                        continue;
                    }
                    let keep = partial_tag_len(rest, CLOSE);
                    let (say, hold) = rest.split_at(rest.len() - keep);
                    emit(out, Piece::Reasoning(say.to_owned()));
                    self.held = hold.to_owned();
                    return;
                }
                State::AnswerStart => {
                    rest = rest.trim_start();
                    if rest.is_empty() {
                        return;
                    }
                    self.state = State::Answer;
                }
                State::Answer => {
                    emit(out, Piece::Answer(rest.to_owned()));
                    return;
                }
            }
        }
    }

    /// The content ended: what was held back is said as what it was.
    pub fn finish(&mut self, out: &mut Vec<Piece>) {
        let held = std::mem::take(&mut self.held);
        match self.state {
            // Only whitespace or a tag's start came: that was the answer.
            State::Start => emit(out, Piece::Answer(held)),
            // A block never closed: it was all reasoning.
            State::Thinking => emit(out, Piece::Reasoning(held)),
            State::ThinkingStart | State::AnswerStart | State::Answer => {}
        }
    }
}

/// Appends a piece, merged with the last one when of the same kind; empty
/// pieces are dropped.
fn emit(out: &mut Vec<Piece>, piece: Piece) {
    match (out.last_mut(), piece) {
        (_, Piece::Reasoning(t) | Piece::Answer(t)) if t.is_empty() => {}
        (Some(Piece::Reasoning(last)), Piece::Reasoning(t))
        | (Some(Piece::Answer(last)), Piece::Answer(t)) => last.push_str(&t),
        (_, piece) => out.push(piece),
    }
}

/// Length of the longest suffix of `text` that is a proper prefix of `tag`
/// (what may be the start of the tag, cut by the chunk's end).
fn partial_tag_len(text: &str, tag: &str) -> usize {
    (1..tag.len().min(text.len() + 1))
        .rev()
        .find(|&n| {
            text.is_char_boundary(text.len() - n) && tag.starts_with(&text[text.len() - n..])
        })
        .unwrap_or(0)
}

/// The split of a whole content at once: what [`ThinkSplitter`] gives for
/// any cutting of it into pieces (the property its tests and fuzz target
/// check). Returns (reasoning, answer).
pub fn split_whole(content: &str) -> (String, String) {
    let trimmed = content.trim_start();
    let Some(inside) = trimmed.strip_prefix(OPEN) else {
        return (String::new(), content.to_owned());
    };
    let inside = inside.trim_start();
    match inside.find(CLOSE) {
        Some(at) => (
            inside[..at].to_owned(),
            inside[at + CLOSE.len()..].trim_start().to_owned(),
        ),
        None => (inside.to_owned(), String::new()),
    }
}

/// Runs a splitter over `pieces` and joins what it said: (reasoning,
/// answer).
pub fn split_pieces<'a>(pieces: impl IntoIterator<Item = &'a str>) -> (String, String) {
    let mut splitter = ThinkSplitter::new();
    let mut out = Vec::new();
    for piece in pieces {
        splitter.push(piece, &mut out);
    }
    splitter.finish(&mut out);
    let (mut reasoning, mut answer) = (String::new(), String::new());
    for piece in out {
        match piece {
            Piece::Reasoning(t) => reasoning.push_str(&t),
            Piece::Answer(t) => answer.push_str(&t),
        }
    }
    (reasoning, answer)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Every cut of `content` into two and three pieces splits as the
    /// whole does.
    fn every_cut_splits_as_the_whole(content: &str) {
        let whole = split_whole(content);
        assert_eq!(split_pieces([content]), whole, "{content:?} in one piece");
        let bounds: Vec<usize> = (0..=content.len())
            .filter(|&i| content.is_char_boundary(i))
            .collect();
        for &i in &bounds {
            for &j in bounds.iter().filter(|&&j| j >= i) {
                let pieces = [&content[..i], &content[i..j], &content[j..]];
                assert_eq!(split_pieces(pieces), whole, "{content:?} cut {pieces:?}");
            }
        }
    }

    #[test]
    fn a_leading_block_is_reasoning_wherever_the_chunks_cut_it() {
        for content in [
            "<think>\nLet me think.\n</think>\n\nThe answer.",
            "  <think>a</think>b",
            "<think></think>answer",
            "<think>never closed",
            "<think>x</thin",
            "no thinking here <think>at all</think>",
            "<thinking>is not the tag</thinking>",
            "<thi",
            "",
            "   ",
            "<think>é</think>ü <think>",
            "<think>a </ think> </think>\u{1F642}",
        ] {
            every_cut_splits_as_the_whole(content);
        }
    }

    #[test]
    fn the_split_is_what_a_reader_expects() {
        assert_eq!(
            split_whole("<think>\nLet me think.\n</think>\n\nThe answer."),
            ("Let me think.\n".into(), "The answer.".into())
        );
        assert_eq!(
            split_whole("The answer <think>."),
            (String::new(), "The answer <think>.".into())
        );
        assert_eq!(split_whole("<think>cut"), ("cut".into(), String::new()));
    }

    #[test]
    fn nothing_is_held_longer_than_a_tag() {
        let mut splitter = ThinkSplitter::new();
        let mut out = Vec::new();
        splitter.push("<think>a long thought </th", &mut out);
        assert_eq!(out, [Piece::Reasoning("a long thought ".into())]);
        out.clear();
        splitter.push("ink>Hello", &mut out);
        assert_eq!(out, [Piece::Answer("Hello".into())]);
        out.clear();
        splitter.push(" world", &mut out);
        assert_eq!(out, [Piece::Answer(" world".into())]);
        let mut plain = ThinkSplitter::new();
        out.clear();
        plain.push("Hi", &mut out);
        assert_eq!(
            out,
            [Piece::Answer("Hi".into())],
            "an answer is not delayed"
        );
    }
}
