//! Fuzzes the reading of `POST /v1/chat/completions` bodies
//! (`skald::edge::completions::parse_request`): OpenAI's JSON, read with
//! async-openai's own types, then what Skald takes of it. Any client can
//! send any bytes here.
//!
//! Properties:
//! - reading never panics, whatever the bytes;
//! - what is accepted holds at most four stop sequences and parameters
//!   within OpenAI's ranges and at most 128 tools (the bot decides at
//!   admission whether a caller's own system turns are taken);
//! - it is deterministic.
#![no_main]

use libfuzzer_sys::fuzz_target;
use skald::edge::completions::parse_request;

fuzz_target!(|data: &[u8]| {
    let first = parse_request(data, None);
    let again = parse_request(data, None);
    assert_eq!(first.is_ok(), again.is_ok(), "deterministic");
    let Ok(completion) = first else {
        return;
    };
    let ask = &completion.ask;
    let p = &ask.params;
    assert!(p.temperature.is_none_or(|t| (0.0..=2.0).contains(&t)));
    assert!(p.sampling.top_p.is_none_or(|t| (0.0..=1.0).contains(&t)));
    assert!(p.sampling.stop.len() <= 4);
    assert!(p.max_tokens != Some(0));
    assert!(p
        .tools
        .as_ref()
        .is_none_or(|t| t.definitions.as_array().is_some_and(|d| d.len() <= 128)));
});
