//! Deterministic answer text.
//!
//! Tests must be able to predict exactly what the mock says, so every token is
//! a word from a fixed vocabulary chosen from its index and a stable hash of
//! the last user message: the same request always yields the same answer, and
//! different questions yield different answers. The thinking of the reasoning
//! modes is made the same way from another seed; the echo mode's tokens, the
//! tool call's arguments and the cuts of the split `<think>` form are also
//! functions of the request alone, and public, so that a test states what it
//! expects with the same functions.

/// The words answers are made of.
const VOCABULARY: [&str; 32] = [
    "lorem",
    "ipsum",
    "dolor",
    "sit",
    "amet",
    "consectetur",
    "adipiscing",
    "elit",
    "sed",
    "do",
    "eiusmod",
    "tempor",
    "incididunt",
    "ut",
    "labore",
    "et",
    "dolore",
    "magna",
    "aliqua",
    "enim",
    "ad",
    "minim",
    "veniam",
    "quis",
    "nostrud",
    "exercitation",
    "ullamco",
    "laboris",
    "nisi",
    "aliquip",
    "ex",
    "commodo",
];

/// FNV-1a 64 of the text's bytes, chosen because it is stable across Rust
/// releases (unlike `DefaultHasher`). The bytes are written directly: hashing
/// the `str` would append a terminator byte and change every answer.
fn fnv1a(text: &str) -> u64 {
    use std::hash::Hasher;
    let mut hasher = fnv::FnvHasher::default();
    hasher.write(text.as_bytes());
    hasher.finish()
}

/// SplitMix64 finaliser: spreads `seed ^ index` over the vocabulary.
fn mix(mut z: u64) -> u64 {
    z = z.wrapping_add(0x9e37_79b9_7f4a_7c15);
    z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
    z ^ (z >> 31)
}

/// The seed of the answers to a given last user message.
pub(super) fn seed(last_user_message: &str) -> u64 {
    fnv1a(last_user_message)
}

/// Token `index` of the answer with the given seed: a word followed by a space.
pub(super) fn token(seed: u64, index: u32) -> String {
    let word = VOCABULARY[(mix(seed ^ u64::from(index)) % VOCABULARY.len() as u64) as usize];
    format!("{word} ")
}

/// The seed of the thinking that goes with the answer of `seed`.
fn thinking_seed(seed: u64) -> u64 {
    mix(seed.rotate_left(29) ^ 0x7468_696e_6b69_6e67)
}

/// Thinking token `index` for the answer with the given seed.
pub(super) fn reasoning_token(seed: u64, index: u32) -> String {
    token(thinking_seed(seed), index)
}

/// The thinking the reasoning modes stream before the answer to
/// `last_user_message`, with `tokens` tokens (without any `<think>` tags).
pub fn reasoning_text(last_user_message: &str, tokens: u32) -> String {
    let seed = seed(last_user_message);
    (0..tokens)
        .map(|index| reasoning_token(seed, index))
        .collect()
}

/// The tokens of the echo mode: each word with the whitespace after it
/// (whitespace before the first word is a token of its own), so that the
/// tokens joined are `text` exactly.
pub fn echo_tokens(text: &str) -> Vec<&str> {
    let mut tokens = Vec::new();
    let mut start = 0;
    let mut previous_space = false;
    for (at, c) in text.char_indices() {
        if previous_space && !c.is_whitespace() {
            tokens.push(&text[start..at]);
            start = at;
        }
        previous_space = c.is_whitespace();
    }
    if start < text.len() {
        tokens.push(&text[start..]);
    }
    tokens
}

/// The name the tool call uses when the request lists no tool.
pub const DEFAULT_TOOL_NAME: &str = "lookup";

/// The JSON arguments of the tool-call mode's call: `{"query": <message>}`.
pub fn tool_call_arguments(last_user_message: &str) -> String {
    serde_json::json!({ "query": last_user_message }).to_string()
}

/// The id of the tool-call mode's call.
pub(super) fn tool_call_id(seed: u64) -> String {
    format!("call_mock{seed:016x}")
}

/// Piece lengths, in characters, that streamed text is cut into where the
/// mock imitates a tokenizer's arbitrary boundaries.
const CUT_CYCLE: [usize; 7] = [3, 5, 2, 6, 4, 1, 7];

/// `text` cut every 3, 5, 2, 6, 4, 1, 7, 3, … characters and also at each
/// character index in `extra_cuts`: always at character boundaries (an SSE
/// JSON string cannot split a character), anywhere else.
pub(super) fn pieces(text: &str, extra_cuts: &[usize]) -> Vec<String> {
    let chars: Vec<char> = text.chars().collect();
    let mut cuts: std::collections::BTreeSet<usize> = extra_cuts
        .iter()
        .copied()
        .filter(|&cut| cut > 0 && cut < chars.len())
        .collect();
    let mut at = 0;
    for length in CUT_CYCLE.iter().cycle() {
        at += length;
        if at >= chars.len() {
            break;
        }
        cuts.insert(at);
    }
    let mut out = Vec::with_capacity(cuts.len() + 1);
    let mut start = 0;
    for cut in cuts.into_iter().chain([chars.len()]) {
        if cut > start {
            out.push(chars[start..cut].iter().collect());
        }
        start = cut;
    }
    out
}

/// The content of the `<think>` forms: the tags around the thinking, then the answer.
pub fn think_content(thinking: &str, answer: &str) -> String {
    format!("<think>{thinking}</think>{answer}")
}

/// The chunks of the split `<think>` form (`think-split`) of `content`
/// (see [`think_content`]), with the thinking `thinking_chars` characters
/// long: cut inside `<think>` after `<th` and inside `</think>` after
/// `</thi`, and at the arbitrary positions of [`pieces`].
pub(super) fn think_split(content: &str, thinking_chars: usize) -> Vec<String> {
    let close = "<think>".len() + thinking_chars;
    pieces(content, &[3, close + 5])
}

/// A stamped token (model `mock-stamped`): `@` and the microseconds since the
/// Unix epoch at which the mock sent it, then a space. Clients on the same
/// machine subtract it from their receipt time; see [`parse_stamps`].
pub fn stamped_token(micros_since_epoch: u64) -> String {
    format!("@{micros_since_epoch} ")
}

/// Every stamp in a (possibly batched) delta text of `mock-stamped` tokens.
pub fn parse_stamps(text: &str) -> impl Iterator<Item = u64> + '_ {
    text.split_whitespace()
        .filter_map(|word| word.strip_prefix('@')?.parse().ok())
}

/// The full text the mock answers to `last_user_message` with `tokens` tokens
/// (what a test should expect to see streamed).
pub fn answer_text(last_user_message: &str, tokens: u32) -> String {
    let seed = seed(last_user_message);
    (0..tokens).map(|index| token(seed, index)).collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn answers_are_deterministic_and_depend_on_the_question() {
        assert_eq!(answer_text("hello", 5), answer_text("hello", 5));
        assert_ne!(answer_text("hello", 20), answer_text("goodbye", 20));
        assert_eq!(answer_text("hello", 4).split_whitespace().count(), 4);
        assert!(answer_text("hello", 3).ends_with(' '));
        assert_eq!(answer_text("x", 0), "");
    }

    #[test]
    fn stamps_round_trip_through_batched_text() {
        let text = format!(
            "{}{}",
            stamped_token(12),
            stamped_token(1_732_500_000_123_456)
        );
        assert_eq!(
            parse_stamps(&text).collect::<Vec<_>>(),
            [12, 1_732_500_000_123_456]
        );
        assert_eq!(parse_stamps("lorem @x ipsum").count(), 0);
    }

    #[test]
    fn thinking_is_deterministic_and_not_the_answer() {
        assert_eq!(reasoning_text("hello", 6), reasoning_text("hello", 6));
        assert_ne!(reasoning_text("hello", 6), answer_text("hello", 6));
        assert_ne!(reasoning_text("hello", 6), reasoning_text("bye", 6));
        assert_eq!(reasoning_text("hello", 6).split_whitespace().count(), 6);
    }

    #[test]
    fn echo_tokens_join_to_the_text() {
        for text in [
            "",
            "one",
            "  two  words ",
            "<script>alert(1)</script> é ü\n\tend",
        ] {
            assert_eq!(echo_tokens(text).concat(), text, "{text:?}");
        }
        assert_eq!(echo_tokens("  hello  world "), ["  ", "hello  ", "world "]);
        assert_eq!(echo_tokens("a b"), ["a ", "b"]);
        assert!(echo_tokens("").is_empty());
    }

    #[test]
    fn pieces_cut_at_characters_and_where_asked() {
        let text = "ab€déf ghïjklmnopqrstu";
        let cut = pieces(text, &[1, 100]);
        assert_eq!(cut.concat(), text);
        assert_eq!(cut[0], "a");
        assert_eq!(cut[1], "b€");
        assert_eq!(cut[2], "déf g");
        assert!(pieces("", &[1]).is_empty());
        assert_eq!(pieces("ab", &[]), ["ab"]);
    }

    #[test]
    fn think_split_cuts_inside_both_tags() {
        let thinking = reasoning_text("q", 3);
        let content = think_content(&thinking, &answer_text("q", 4));
        let chunks = think_split(&content, thinking.chars().count());
        assert_eq!(chunks.concat(), content);
        assert_eq!(chunks[0], "<th");
        // Every chunk boundary, as a character offset into the content.
        let ends: Vec<usize> = chunks
            .iter()
            .scan(0, |end, chunk| {
                *end += chunk.chars().count();
                Some(*end)
            })
            .collect();
        let close = content.find("</think>").unwrap();
        assert!(ends.contains(&(close + "</thi".len())), "{chunks:?}");
        assert!(chunks
            .iter()
            .all(|chunk| chunk != "<think>" && chunk != "</think>"));
    }

    #[test]
    fn fnv_matches_reference_values() {
        assert_eq!(fnv1a(""), 0xcbf2_9ce4_8422_2325);
        assert_eq!(fnv1a("a"), 0xaf63_dc4c_8601_ec8c);
    }
}
