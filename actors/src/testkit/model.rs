//! A generation request for tests of model providers: one user message,
//! every bound open, nothing the caller chose. Tests change what they
//! test with struct update syntax (`ModelRequest { max_tokens: 3,
//! ..request("hi") }`), so a new field of the request is set here once.

use crate::ports::model::{ModelRequest, PromptMessage, Role};

pub fn request(text: &str) -> ModelRequest {
    ModelRequest {
        model: None,
        messages: vec![PromptMessage::new(Role::User, text)],
        temperature: 0.0,
        max_tokens: u32::MAX,
        max_answer_bytes: u32::MAX,
        max_reasoning_chars: u32::MAX,
        user: "u".into(),
        sampling: Default::default(),
        tools: None,
        response_format: None,
        upstreams: Vec::new(),
    }
}
