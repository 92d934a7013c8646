//! Fuzzes what the listings of the HTTP API read from a query string that
//! any caller writes: the page (`limit`, `before`, `after`:
//! `skald::edge::paging::PageQuery`), the month of the operators' usage
//! (`skald_actors::time::Month::parse`), and the usage cursor inside a
//! `before` (`skald::store::usage_cursor`).
//!
//! Properties:
//! - nothing panics, whatever the query string;
//! - a position the server wrote as a cursor reads back as itself;
//! - a month that parses prints back as the same text;
//! - a usage cursor reads back as the (user, bot) it was written from, for
//!   any user id and every bot name the Admin API accepts.
#![no_main]

use base64::Engine;
use libfuzzer_sys::fuzz_target;
use skald::edge::paging::PageQuery;
use skald::store::usage_cursor;
use skald_actors::ports::store::UsageRecord;
use skald_actors::time::Month;

/// The characters a bot name may hold (`edge/admin/bots.rs`).
const BOT_CHARS: &[u8] = b"abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789_-.";

fuzz_target!(|data: &[u8]| {
    // The query string as a client wrote it.
    if let Ok(query) = serde_urlencoded::from_bytes::<PageQuery>(data) {
        let _ = query.before();
        let _ = query.after();
    }
    let Ok(text) = std::str::from_utf8(data) else {
        return;
    };
    // A position the server wrote.
    if !text.is_empty() && text.len() <= 4096 {
        let cursor = base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(text);
        let query: PageQuery = serde_urlencoded::from_str(&format!("before={cursor}"))
            .expect("a cursor is a query value");
        let (_, position) = query.before().expect("a cursor the server wrote reads");
        assert_eq!(position.as_deref(), Some(text));
    }
    if let Some(month) = Month::parse(text) {
        assert_eq!(month.to_string(), text);
    }
    // A usage cursor: the text up to its last byte is the user, the bytes
    // after a `|` name the bot (mapped onto the characters it may hold).
    let (user, bot) = text.rsplit_once('|').unwrap_or((text, "x"));
    let bot: String = bot
        .bytes()
        .take(64)
        .map(|b| BOT_CHARS[b as usize % BOT_CHARS.len()] as char)
        .collect();
    if bot.is_empty() {
        return;
    }
    let row = UsageRecord {
        user: user.into(),
        bot: bot.clone(),
        month: Month::of(0),
        tokens: 0,
        requests: 0,
    };
    assert_eq!(
        usage_cursor::parse(&usage_cursor::of(&row)),
        (user.to_owned(), bot)
    );
});
