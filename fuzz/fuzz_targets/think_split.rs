//! Fuzzes the `<think>` splitter (`skald::model::think`): what models send
//! as content, cut into chunks anywhere, is split into reasoning and answer
//! as the whole content is. An upstream (or whoever answers in its place)
//! controls both the text and where the chunks end.
//!
//! Input: the first byte is a seed for the cut positions, the rest is the
//! content (made valid UTF-8 lossily, as chunks of a JSON string are).
//!
//! Properties:
//! - splitting never panics;
//! - any cutting splits exactly as the whole does ([`split_whole`], the
//!   reference): nothing lost, added, duplicated or reordered;
//! - nothing of the input is invented: the reasoning and the answer
//!   together are no longer than the content.
#![no_main]

use libfuzzer_sys::fuzz_target;
use skald::model::think::{split_pieces, split_whole};

fuzz_target!(|data: &[u8]| {
    let Some((&seed, text)) = data.split_first() else {
        return;
    };
    let content = String::from_utf8_lossy(text);
    let whole = split_whole(&content);
    assert!(whole.0.len() + whole.1.len() <= content.len());
    // Cut at character boundaries, every 1 to 8 characters as the seed says.
    let mut pieces = Vec::new();
    let mut start = 0;
    for (step, (at, _)) in content.char_indices().enumerate() {
        let every = 1 + ((usize::from(seed) >> (step % 8)) & 7);
        if at >= start + every {
            pieces.push(&content[start..at]);
            start = at;
        }
    }
    pieces.push(&content[start..]);
    assert_eq!(split_pieces(pieces.iter().copied()), whole, "{pieces:?}");
});
