//! Fuzzes `ClientFrame::decode`, the first thing the server does with the
//! untrusted text of a WebSocket frame.
//!
//! Properties:
//! - `decode` never panics (and neither does formatting its error);
//! - an accepted frame obeys the protocol's fixed limits: `send.id` is 1 to
//!   64 characters, `resume.after_seq >= -1`;
//! - round trip: `serde_json::to_string(&frame)` decodes again to an equal
//!   frame, whose wire `type` is `frame.kind()`.
#![no_main]

use libfuzzer_sys::fuzz_target;
use skald_protocol::{ClientFrame, MAX_CLIENT_ID_CHARS};

fuzz_target!(|data: &[u8]| {
    // WebSocket text frames are UTF-8 by the time the server decodes them.
    let Ok(text) = std::str::from_utf8(data) else {
        return;
    };
    let frame = match ClientFrame::decode(text) {
        Ok(frame) => frame,
        Err(e) => {
            // The message goes back to the client: it must be formattable.
            let _ = e.to_string();
            return;
        }
    };

    match &frame {
        ClientFrame::Send { id, .. } => {
            let n = id.chars().count();
            assert!(
                (1..=MAX_CLIENT_ID_CHARS).contains(&n),
                "accepted send.id of {n} chars: {id:?}"
            );
        }
        ClientFrame::Resume { after_seq, .. } => {
            assert!(*after_seq >= -1, "accepted resume.after_seq {after_seq}");
        }
        _ => {}
    }

    let json = serde_json::to_string(&frame).expect("an accepted frame serializes");
    let again = match ClientFrame::decode(&json) {
        Ok(again) => again,
        Err(e) => panic!("re-encoded frame refused: {e}\n input: {text:?}\n json:  {json}"),
    };
    assert_eq!(frame, again, "round trip changed the frame; json: {json}");

    let value: serde_json::Value = serde_json::from_str(&json).expect("valid JSON");
    assert_eq!(value["type"].as_str(), Some(frame.kind()), "json: {json}");
});
