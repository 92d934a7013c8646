//! Deterministic answer text.
//!
//! Tests must be able to predict exactly what the mock says, so every token is
//! a word from a fixed vocabulary chosen from its index and a stable hash of
//! the last user message: the same request always yields the same answer, and
//! different questions yield different answers.

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
    fn fnv_matches_reference_values() {
        assert_eq!(fnv1a(""), 0xcbf2_9ce4_8422_2325);
        assert_eq!(fnv1a("a"), 0xaf63_dc4c_8601_ec8c);
    }
}
