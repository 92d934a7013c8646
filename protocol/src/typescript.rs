//! The TypeScript side of the protocol, generated from these types by
//! ts-rs: `clients/js/src/protocol.ts`, which the TypeScript client and the
//! widget import. Nobody writes the protocol's types twice: the test below
//! fails when the committed file differs from what the Rust types produce,
//! and `SKALD_BLESS=1 cargo test -p skald-protocol typescript` rewrites it.
//!
//! ts-rs is a dev-dependency and the derives are `cfg_attr(test, …)`: the
//! server's build does not compile it.

use std::fmt::Write as _;

use ts_rs::{Config, TS};

use crate::http::{
    AuditAction, AuditEvent, AuditPage, AuditView, ConversationPage, ConversationView, DemoToken,
    Export, ExportedKey, ExportedUsage, Feedback, FeedbackEntry, FeedbackPage, FunctionCall,
    MessagePage, MessageRole, MessageView, Rating, ToolCall, ToolKind, UsageEntry, UsagePage,
    UsageReport, MAX_FEEDBACK_COMMENT_CHARS,
};
use crate::{
    ClientFrame, ClientMessageId, CloseCode, ConversationId, ErrorBody, ErrorCode, FinishReason,
    HttpError, Limits, MessageId, ServerFrame, SessionId, StartedMessage, StreamId, Usage, UserId,
    MAX_CLIENT_ID_CHARS, PROTOCOL_VERSION,
};

/// Where the generated file lives, from the workspace root.
pub const TYPESCRIPT_PATH: &str = "clients/js/src/protocol.ts";

fn declare<T: TS>(out: &mut String, cfg: &Config) {
    if let Some(docs) = T::docs() {
        out.push_str(&docs);
    }
    let _ = writeln!(out, "export {}\n", T::decl(cfg));
}

/// The whole generated file.
pub fn typescript() -> String {
    // u64/i64 values of this protocol (seq, usage, ts) stay far below 2^53:
    // plain numbers, as JSON.parse gives them.
    let cfg = Config::new().with_large_int("number");
    let mut out = String::from(
        "// Skald wire protocol v1 (PROTOCOL.md): generated from the Rust crate\n\
         // skald-protocol by ts-rs. Do not edit: change the Rust types, then run\n\
         // `SKALD_BLESS=1 cargo test -p skald-protocol typescript`.\n\n",
    );
    declare::<UserId>(&mut out, &cfg);
    declare::<ConversationId>(&mut out, &cfg);
    declare::<MessageId>(&mut out, &cfg);
    declare::<StreamId>(&mut out, &cfg);
    declare::<SessionId>(&mut out, &cfg);
    declare::<ClientMessageId>(&mut out, &cfg);
    declare::<ClientFrame>(&mut out, &cfg);
    declare::<ServerFrame>(&mut out, &cfg);
    declare::<StartedMessage>(&mut out, &cfg);
    declare::<Limits>(&mut out, &cfg);
    declare::<Usage>(&mut out, &cfg);
    declare::<ErrorBody>(&mut out, &cfg);
    declare::<HttpError>(&mut out, &cfg);
    declare::<ErrorCode>(&mut out, &cfg);
    declare::<FinishReason>(&mut out, &cfg);
    // The HTTP API's bodies.
    declare::<MessageRole>(&mut out, &cfg);
    declare::<AuditAction>(&mut out, &cfg);
    declare::<ConversationView>(&mut out, &cfg);
    declare::<MessageView>(&mut out, &cfg);
    declare::<ToolCall>(&mut out, &cfg);
    declare::<ToolKind>(&mut out, &cfg);
    declare::<FunctionCall>(&mut out, &cfg);
    declare::<AuditEvent>(&mut out, &cfg);
    declare::<AuditPage>(&mut out, &cfg);
    declare::<Rating>(&mut out, &cfg);
    declare::<Feedback>(&mut out, &cfg);
    declare::<FeedbackEntry>(&mut out, &cfg);
    declare::<FeedbackPage>(&mut out, &cfg);
    declare::<ConversationPage>(&mut out, &cfg);
    declare::<MessagePage>(&mut out, &cfg);
    declare::<UsageReport>(&mut out, &cfg);
    declare::<UsageEntry>(&mut out, &cfg);
    declare::<UsagePage>(&mut out, &cfg);
    declare::<ExportedKey>(&mut out, &cfg);
    declare::<AuditView>(&mut out, &cfg);
    declare::<ExportedUsage>(&mut out, &cfg);
    declare::<Export>(&mut out, &cfg);
    declare::<DemoToken>(&mut out, &cfg);

    let _ = writeln!(
        out,
        "/** The protocol version carried in `ready.protocol`. */\n\
         export const PROTOCOL_VERSION = {PROTOCOL_VERSION};\n"
    );
    let _ = writeln!(
        out,
        "/** `send.id` is 1 to this many characters. */\n\
         export const MAX_CLIENT_ID_CHARS = {MAX_CLIENT_ID_CHARS};\n"
    );
    let _ = writeln!(
        out,
        "/** A feedback comment is at most this many characters. */\n\
         export const MAX_FEEDBACK_COMMENT_CHARS = {MAX_FEEDBACK_COMMENT_CHARS};\n"
    );
    out.push_str("/** Every error code, in PROTOCOL.md's order. */\nexport const ERROR_CODES: readonly ErrorCode[] = [\n");
    for code in ErrorCode::ALL {
        let _ = writeln!(out, "  \"{}\",", code.as_str());
    }
    out.push_str("];\n\n");
    out.push_str("/** The HTTP status PROTOCOL.md pairs with each error code. */\nexport const ERROR_HTTP_STATUS: { readonly [code in ErrorCode]: number } = {\n");
    for code in ErrorCode::ALL {
        let _ = writeln!(out, "  {}: {},", code.as_str(), code.http_status());
    }
    out.push_str("};\n\n");
    out.push_str("/** WebSocket close codes used by Skald. */\nexport const CloseCode = {\n");
    for n in 1000..=4999u16 {
        if let Some(code) = CloseCode::from_u16(n) {
            let _ = writeln!(out, "  {code:?}: {n},");
        }
    }
    out.push_str(
        "} as const;\n\
         export type CloseCode = (typeof CloseCode)[keyof typeof CloseCode];\n",
    );
    out
}

#[test]
fn typescript_bindings_are_current() {
    let path = std::path::Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("..")
        .join(TYPESCRIPT_PATH);
    let generated = typescript();
    if std::env::var_os("SKALD_BLESS").is_some() {
        std::fs::write(&path, &generated).unwrap();
    }
    let on_disk = std::fs::read_to_string(&path).unwrap_or_default();
    assert!(
        on_disk == generated,
        "{TYPESCRIPT_PATH} is stale: run `SKALD_BLESS=1 cargo test -p skald-protocol typescript`"
    );
}

#[test]
fn typescript_has_every_frame_and_code() {
    let ts = typescript();
    for kind in ["hello", "send", "cancel", "resume", "ping"] {
        assert!(ts.contains(&format!("\"type\": \"{kind}\"")), "{kind}");
    }
    for kind in [
        "ready",
        "ack",
        "reasoning",
        "delta",
        "done",
        "error",
        "started",
        "pong",
    ] {
        assert!(ts.contains(&format!("\"type\": \"{kind}\"")), "{kind}");
    }
    for code in ErrorCode::ALL {
        assert!(ts.contains(&format!("\"{}\"", code.as_str())));
    }
    assert!(ts.contains("TooManyConnections: 4429,"));
    assert!(ts.contains("export type Conversation = "));
    assert!(ts.contains("export type StoredMessage = "));
    assert!(ts.contains("export type StreamId = string;"));
    assert!(!ts.contains("bigint"), "64-bit integers must be numbers");
}
