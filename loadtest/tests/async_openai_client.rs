//! The mock as the server sees it: driven by the real async-openai client.

use async_openai::config::OpenAIConfig;
use async_openai::types::chat::{
    ChatCompletionRequestSystemMessage, ChatCompletionRequestUserMessage,
    ChatCompletionStreamOptions, CreateChatCompletionRequestArgs, FinishReason,
};
use async_openai::Client;
use futures::StreamExt;
use skald_loadtest::mock_upstream::{answer_text, MockUpstream};

async fn start(answer_tokens: u32) -> MockUpstream {
    MockUpstream::on_loopback(0.0, answer_tokens).await.unwrap()
}

fn client(mock: &MockUpstream) -> Client<OpenAIConfig> {
    let config = OpenAIConfig::new()
        .with_api_base(mock.base_url())
        .with_api_key("test");
    Client::with_config(config)
}

/// A streamed chat completion of `model` from the mock, through async-openai.
async fn open_stream(
    mock: &MockUpstream,
    model: &str,
) -> async_openai::types::chat::ChatCompletionResponseStream {
    client(mock)
        .chat()
        .create_stream(request(model, true))
        .await
        .unwrap()
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
    let mut stream = open_stream(&mock, "gpt-test").await;
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

    let mut stream = open_stream(&mock, "mock-drop-after-2").await;
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

/// Reads a whole stream: (content, tool-call arguments, finish, usage, errors).
type Collected = (
    String,
    String,
    Option<FinishReason>,
    Option<async_openai::types::chat::CompletionUsage>,
    Vec<String>,
);

async fn collect(mut stream: async_openai::types::chat::ChatCompletionResponseStream) -> Collected {
    let (mut text, mut arguments, mut finish, mut usage, mut errors) =
        (String::new(), String::new(), None, None, Vec::new());
    while let Some(chunk) = stream.next().await {
        let chunk = match chunk {
            Ok(chunk) => chunk,
            Err(error) => {
                errors.push(error.to_string());
                continue;
            }
        };
        for choice in &chunk.choices {
            text.push_str(choice.delta.content.as_deref().unwrap_or(""));
            for call in choice.delta.tool_calls.iter().flatten() {
                let function = call.function.as_ref();
                arguments.push_str(function.and_then(|f| f.arguments.as_deref()).unwrap_or(""));
            }
            finish = finish.or(choice.finish_reason);
        }
        usage = usage.or(chunk.usage);
    }
    (text, arguments, finish, usage, errors)
}

#[tokio::test]
async fn async_openai_reads_reasoning_usage_and_the_answer_around_it() {
    let mock = start(10).await;
    let stream = open_stream(&mock, "mock-reasoning-content-4").await;
    let (text, _, finish, usage, errors) = collect(stream).await;
    assert!(errors.is_empty(), "{errors:?}");
    // The thinking is in a field async-openai does not know: the answer is intact.
    assert_eq!(text, answer_text("hello there", 6));
    assert_eq!(finish, Some(FinishReason::Length));
    let usage = usage.unwrap();
    assert_eq!(usage.completion_tokens, 4 + 6);
    let details = usage.completion_tokens_details.unwrap();
    assert_eq!(details.reasoning_tokens, Some(4));
}

#[tokio::test]
async fn async_openai_streams_a_tool_call() {
    use async_openai::types::chat::{ChatCompletionTool, ChatCompletionTools, FunctionObject};
    use skald_loadtest::mock_upstream::tool_call_arguments;
    let mock = start(10).await;
    let mut request = request("mock-tool-call", true);
    request.max_completion_tokens = None;
    request.tools = Some(vec![ChatCompletionTools::Function(ChatCompletionTool {
        function: FunctionObject {
            name: "get_weather".into(),
            description: None,
            parameters: Some(serde_json::json!({ "type": "object" })),
            strict: None,
        },
    })]);
    let mut stream = client(&mock).chat().create_stream(request).await.unwrap();
    let first = stream.next().await.unwrap().unwrap();
    let call = &first.choices[0].delta.tool_calls.as_ref().unwrap()[0];
    assert_eq!(call.index, 0);
    assert!(call.id.as_deref().unwrap().starts_with("call_"));
    let function = call.function.as_ref().unwrap();
    assert_eq!(function.name.as_deref(), Some("get_weather"));
    assert_eq!(function.arguments.as_deref(), Some(""));
    let (text, arguments, finish, usage, errors) = collect(stream).await;
    assert!(errors.is_empty(), "{errors:?}");
    assert_eq!(text, "");
    assert_eq!(arguments, tool_call_arguments("hello there"));
    assert_eq!(finish, Some(FinishReason::ToolCalls));
    assert!(usage.unwrap().completion_tokens > 3);
}

#[tokio::test]
async fn async_openai_surfaces_both_in_stream_error_forms() {
    let mock = start(10).await;
    for model in ["mock-error-after-2", "mock-error-event-after-2"] {
        let stream = open_stream(&mock, model).await;
        let (text, _, finish, usage, errors) = collect(stream).await;
        assert_eq!(text, answer_text("hello there", 2), "{model}");
        assert_eq!(errors.len(), 1, "{model}: {errors:?}");
        assert!(errors[0].contains("injected error after 2"), "{errors:?}");
        assert_eq!((finish, usage), (None, None), "{model}");
    }
}

#[tokio::test]
async fn async_openai_echo_round_trip() {
    let mock = start(10).await;
    let message = "Tabs\tand  spaces, <img src=x onerror=alert(1)> & ünïcødé ✓";
    let mut args = CreateChatCompletionRequestArgs::default();
    args.model("mock-echo")
        .messages(vec![ChatCompletionRequestUserMessage::from(message).into()]);
    let response = client(&mock)
        .chat()
        .create(args.build().unwrap())
        .await
        .unwrap();
    assert_eq!(
        response.choices[0].message.content.as_deref(),
        Some(message)
    );
}
