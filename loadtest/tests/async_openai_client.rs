//! The mock as the server sees it: driven by the real async-openai client.

use async_openai::config::OpenAIConfig;
use async_openai::types::chat::{
    ChatCompletionRequestSystemMessage, ChatCompletionRequestUserMessage,
    ChatCompletionStreamOptions, CreateChatCompletionRequestArgs, FinishReason,
};
use async_openai::Client;
use futures::StreamExt;
use skald_loadtest::mock_upstream::{answer_text, MockConfig, MockUpstream};
use tokio::net::TcpListener;

async fn start(answer_tokens: u32) -> MockUpstream {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let config = MockConfig {
        tokens_per_second: 0.0,
        answer_tokens,
    };
    MockUpstream::start(listener, config).await.unwrap()
}

fn client(mock: &MockUpstream) -> Client<OpenAIConfig> {
    let config = OpenAIConfig::new()
        .with_api_base(mock.base_url())
        .with_api_key("test");
    Client::with_config(config)
}

fn request(model: &str, stream: bool) -> async_openai::types::chat::CreateChatCompletionRequest {
    let mut args = CreateChatCompletionRequestArgs::default();
    args.model(model).max_completion_tokens(6u32).messages(vec![
        ChatCompletionRequestSystemMessage::from("be brief").into(),
        ChatCompletionRequestUserMessage::from("hello there").into(),
    ]);
    if stream {
        args.stream(true)
            .stream_options(ChatCompletionStreamOptions {
                include_usage: Some(true),
                include_obfuscation: None,
            });
    }
    args.build().unwrap()
}

#[tokio::test]
async fn async_openai_streams_the_answer() {
    let mock = start(10).await;
    let mut stream = client(&mock)
        .chat()
        .create_stream(request("gpt-test", true))
        .await
        .unwrap();
    let (mut text, mut finish, mut usage) = (String::new(), None, None);
    while let Some(chunk) = stream.next().await {
        let chunk = chunk.unwrap();
        for choice in &chunk.choices {
            text.push_str(choice.delta.content.as_deref().unwrap_or(""));
            finish = finish.or(choice.finish_reason);
        }
        usage = usage.or(chunk.usage);
    }
    assert_eq!(text, answer_text("hello there", 6));
    assert_eq!(finish, Some(FinishReason::Length));
    let usage = usage.unwrap();
    assert_eq!((usage.prompt_tokens, usage.completion_tokens), (4, 6));

    let sent = mock.last_request().unwrap();
    let roles: Vec<&str> = sent["messages"]
        .as_array()
        .unwrap()
        .iter()
        .map(|message| message["role"].as_str().unwrap())
        .collect();
    assert_eq!(roles, ["system", "user"]);
    assert_eq!(mock.stats().completed, 1);
}

#[tokio::test]
async fn async_openai_non_streaming_and_errors() {
    let mock = start(10).await;
    let response = client(&mock)
        .chat()
        .create(request("gpt-test", false))
        .await
        .unwrap();
    let choice = &response.choices[0];
    assert_eq!(
        choice.message.content.as_deref(),
        Some(answer_text("hello there", 6).as_str())
    );
    assert_eq!(choice.finish_reason, Some(FinishReason::Length));

    let mut stream = client(&mock)
        .chat()
        .create_stream(request("mock-drop-after-2", true))
        .await
        .unwrap();
    let mut tokens = 0;
    let mut failed = false;
    while let Some(chunk) = stream.next().await {
        match chunk {
            Ok(chunk) => {
                let content = chunk.choices[0].delta.content.as_deref().unwrap_or("");
                tokens += usize::from(!content.is_empty());
            }
            Err(_) => failed = true,
        }
    }
    assert_eq!(tokens, 2);
    assert!(failed, "a dropped upstream must surface as an error");
}
