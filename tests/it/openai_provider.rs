//! The OpenAI-compatible model provider against the loadtest crate's mock
//! upstream: what it sends, what it makes of the answer, and that failures
//! and cancels behave (no retry, no leaked key, the connection really closed).
//!
//! Everything runs on loopback; every wait is bounded.

use std::future::Future;
use std::time::Duration;

use futures::StreamExt;
use serde_json::json;
use skald::model::openai::{
    MaxTokensField, OpenAiProvider, OpenAiSettings, OpenAiSetupError, PROVIDER_NAME,
};
use skald_actors::ports::model::{
    ModelError, ModelErrorKind, ModelEvent, ModelFinish, ModelProvider, ModelRequest,
    PromptMessage, Role, TokenStream,
};
use skald_loadtest::mock_upstream::answer_text;
use skald_protocol::Usage;
use tokio::net::TcpListener;

use crate::common::mock_upstream;

const API_KEY: &str = "sk-secret-test";
const QUESTION: &str = "what does lorem ipsum mean";
/// Upper bound for anything a test waits for.
const PATIENCE: Duration = Duration::from_secs(10);

fn settings(base_url: String) -> OpenAiSettings {
    OpenAiSettings {
        base_url,
        api_key: Some(API_KEY.to_owned()),
        default_model: "default-model".to_owned(),
        connect_timeout: Duration::from_secs(2),
        user_hash_key: "test-user-hash-key-test-user-hash-key".into(),
    }
}

fn provider(base_url: String) -> OpenAiProvider {
    OpenAiProvider::new(settings(base_url)).expect("provider")
}

fn message(role: Role, content: &str) -> PromptMessage {
    PromptMessage::new(role, content)
}

fn request(model: Option<&str>, max_tokens: u32) -> ModelRequest {
    ModelRequest {
        model: model.map(str::to_owned),
        messages: vec![
            message(Role::System, "You are a terse assistant."),
            message(Role::User, "hello there"),
            message(Role::Assistant, "hello, how can I help"),
            message(Role::User, QUESTION),
        ],
        temperature: 0.25,
        max_tokens,
        user: "user-42".into(),
        ..skald_actors::testkit::model::request(QUESTION)
    }
}

/// What the mock counts as prompt tokens: words over all messages.
fn prompt_words(request: &ModelRequest) -> u64 {
    request
        .messages
        .iter()
        .map(|message| message.content.split_whitespace().count() as u64)
        .sum()
}

async fn bounded<T>(what: &str, future: impl Future<Output = T>) -> T {
    match tokio::time::timeout(PATIENCE, future).await {
        Ok(value) => value,
        Err(_) => panic!("timed out: {what}"),
    }
}

async fn start(provider: &OpenAiProvider, request: ModelRequest) -> TokenStream {
    match bounded("start", provider.start(request)).await {
        Ok(stream) => stream,
        Err(error) => panic!("start failed: {error:?}"),
    }
}

async fn start_err(provider: &OpenAiProvider, request: ModelRequest) -> ModelError {
    match bounded("start", provider.start(request)).await {
        Ok(_) => panic!("start should have failed"),
        Err(error) => error,
    }
}

/// Every item until the stream ends.
async fn drain(stream: TokenStream) -> Vec<Result<ModelEvent, ModelError>> {
    bounded("the end of the stream", stream.collect::<Vec<_>>()).await
}

fn text_of(events: &[Result<ModelEvent, ModelError>]) -> String {
    events
        .iter()
        .filter_map(|event| match event {
            Ok(ModelEvent::Token(text)) => Some(text.as_str()),
            _ => None,
        })
        .collect()
}

/// Polls `condition` every 20 ms for up to `PATIENCE`.
async fn eventually(what: &str, mut condition: impl FnMut() -> bool) {
    bounded(what, async {
        while !condition() {
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    })
    .await;
}

/// A loopback port with nothing listening on it.
async fn closed_port() -> u16 {
    let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind");
    let port = listener.local_addr().expect("addr").port();
    drop(listener);
    port
}

#[tokio::test]
async fn a_normal_stream_gives_the_answer_then_stop_then_usage() {
    let mock = mock_upstream(0.0, 12).await;
    let provider = provider(mock.base_url());
    assert_eq!(provider.name(), PROVIDER_NAME);
    assert_eq!(provider.name(), "openai");
    let request = request(Some("gpt-test"), 100);
    let prompt_tokens = prompt_words(&request);

    let events = drain(start(&provider, request).await).await;

    assert!(
        events.iter().all(Result::is_ok),
        "no errors expected: {events:?}"
    );
    let tokens = events
        .iter()
        .filter(|event| matches!(event, Ok(ModelEvent::Token(_))))
        .count();
    assert_eq!(tokens, 12, "one event per upstream token: {events:?}");
    assert_eq!(text_of(&events), answer_text(QUESTION, 12));
    // The tokens come first, then the finish reason, then the usage.
    let tail: Vec<_> = events[tokens..].to_vec();
    assert_eq!(
        tail,
        vec![
            Ok(ModelEvent::Finish(ModelFinish::Stop)),
            Ok(ModelEvent::Usage(Usage {
                prompt_tokens,
                completion_tokens: 12,
                reasoning_tokens: None,
                estimated: false,
            })),
        ]
    );
    let stats = mock.stats();
    assert_eq!(stats.requests, 1);
    assert_eq!(stats.completed, 1, "the stream was read to [DONE]");
    assert_eq!(stats.client_disconnects, 0);
    mock.shutdown().await;
}

#[tokio::test]
async fn the_request_is_what_an_openai_server_expects() {
    let mock = mock_upstream(0.0, 3).await;
    let provider = provider(mock.base_url());

    drain(start(&provider, request(Some("gpt-test"), 77)).await).await;

    let body = mock.last_request().expect("the mock saw the request");
    assert_eq!(body["model"], "gpt-test");
    assert_eq!(
        body["messages"],
        json!([
            { "role": "system", "content": "You are a terse assistant." },
            { "role": "user", "content": "hello there" },
            { "role": "assistant", "content": "hello, how can I help" },
            { "role": "user", "content": QUESTION },
        ])
    );
    assert_eq!(body["stream"], true);
    assert_eq!(body["stream_options"]["include_usage"], true);
    assert_eq!(body["max_completion_tokens"], 77);
    assert!(
        body.get("max_tokens").is_none(),
        "OpenAI refuses max_tokens together with max_completion_tokens: {body}"
    );
    assert_eq!(body["temperature"].as_f64(), Some(0.25));
    let identifier = body["safety_identifier"].as_str().unwrap().to_owned();
    assert!(
        !identifier.contains("user-42"),
        "the sub is not sent: {body}"
    );
    assert_eq!(
        identifier.len(),
        43,
        "an HMAC-SHA256 in base64url: {identifier}"
    );
    assert!(body.get("user").is_none(), "{body}");
    assert!(body.get("n").is_none(), "{body}");

    // Stable per user and key; another user or another key, another hash.
    let identifier_of = |provider: OpenAiProvider, user: &'static str| {
        let mock = &mock;
        async move {
            let mut asked = request(None, 5);
            asked.user = user.into();
            drain(start(&provider, asked).await).await;
            mock.last_request().unwrap()["safety_identifier"].clone()
        }
    };
    assert_eq!(identifier_of(provider, "user-42").await, identifier);
    assert_ne!(
        identifier_of(self::provider(mock.base_url()), "user-43").await,
        identifier
    );
    let mut rekeyed = settings(mock.base_url());
    rekeyed.user_hash_key = "another-key-another-key-another-key!".into();
    assert_ne!(
        identifier_of(OpenAiProvider::new(rekeyed).unwrap(), "user-42").await,
        identifier
    );
    mock.shutdown().await;
}

#[tokio::test]
async fn the_default_model_and_max_tokens_field_are_used_when_asked() {
    let mock = mock_upstream(0.0, 3).await;
    let provider = provider(mock.base_url()).with_max_tokens_field(MaxTokensField::MaxTokens);
    assert_eq!(provider.default_model(), "default-model");
    let mut request = request(None, 9);
    request.user = String::new().into();

    let events = drain(start(&provider, request).await).await;
    assert!(events.contains(&Ok(ModelEvent::Finish(ModelFinish::Stop))));

    let body = mock.last_request().expect("the mock saw the request");
    assert_eq!(body["model"], "default-model");
    assert_eq!(body["max_tokens"], 9);
    assert!(body.get("max_completion_tokens").is_none(), "{body}");
    assert!(
        body.get("safety_identifier").is_none(),
        "an empty user is not sent: {body}"
    );
    mock.shutdown().await;
}

#[tokio::test]
async fn a_limit_below_the_answer_finishes_with_length() {
    let mock = mock_upstream(0.0, 20).await;
    let provider = provider(mock.base_url());

    let events = drain(start(&provider, request(Some("gpt-test"), 5)).await).await;

    assert_eq!(text_of(&events), answer_text(QUESTION, 5));
    assert!(
        events.contains(&Ok(ModelEvent::Finish(ModelFinish::Length))),
        "{events:?}"
    );
    assert!(!events.contains(&Ok(ModelEvent::Finish(ModelFinish::Stop))));
    let usage = events.iter().find_map(|event| match event {
        Ok(ModelEvent::Usage(usage)) => Some(*usage),
        _ => None,
    });
    assert_eq!(usage.map(|usage| usage.completion_tokens), Some(5));
    mock.shutdown().await;
}

#[tokio::test]
async fn an_http_500_fails_start_once_without_the_key() {
    let mock = mock_upstream(0.0, 5).await;
    let provider = provider(mock.base_url());

    let error = start_err(&provider, request(Some("mock-error-500"), 50)).await;

    assert_eq!(error.kind, ModelErrorKind::Upstream);
    assert!(error.message.contains("500"), "{}", error.message);
    assert!(
        !error.message.contains("injected internal error"),
        "the upstream's own words are logged, not passed on: {}",
        error.message
    );
    assert!(error.failover, "a 500 may be answered by another upstream");
    assert!(!error.message.contains(API_KEY), "{}", error.message);
    // async-openai's default client would have retried the 500 three times
    // before `start` returned.
    assert_eq!(mock.stats().requests, 1, "the request must not be retried");
    mock.shutdown().await;
}

#[tokio::test]
async fn a_connection_cut_mid_stream_is_an_error_after_the_tokens() {
    let mock = mock_upstream(0.0, 20).await;
    let provider = provider(mock.base_url());

    let events = drain(start(&provider, request(Some("mock-drop-after-3"), 50)).await).await;

    // What happens: the three tokens, then one `Err` (the HTTP body ended
    // without its chunked terminator), then the end. Never a finish.
    assert_eq!(events.len(), 4, "{events:?}");
    assert_eq!(text_of(&events[..3]), answer_text(QUESTION, 3));
    match &events[3] {
        Err(error) => {
            assert_eq!(error.kind, ModelErrorKind::Upstream);
            assert!(!error.message.contains(API_KEY), "{}", error.message);
            assert!(!error.message.contains("127.0.0.1"), "{}", error.message);
        }
        other => panic!("expected an error after the tokens, got {other:?}"),
    }
    assert!(!events
        .iter()
        .any(|event| matches!(event, Ok(ModelEvent::Finish(_)))));
    mock.shutdown().await;
}

#[tokio::test]
async fn dropping_the_stream_closes_the_upstream_connection() {
    let mock = mock_upstream(20.0, 200).await;
    let provider = provider(mock.base_url());
    let mut stream = start(&provider, request(Some("gpt-test"), 500)).await;

    let mut tokens = 0;
    while tokens < 2 {
        match bounded("a token", stream.next()).await {
            Some(Ok(ModelEvent::Token(_))) => tokens += 1,
            Some(Ok(_)) => {}
            other => panic!("expected tokens, got {other:?}"),
        }
    }
    assert_eq!(mock.stats().client_disconnects, 0);
    drop(stream);

    eventually("the mock sees the client leave", || {
        mock.stats().client_disconnects == 1
    })
    .await;
    let stats = mock.stats();
    assert_eq!(stats.completed, 0);
    let sent = stats.tokens_sent;
    assert!(sent < 200, "the answer stopped early ({sent} tokens)");
    tokio::time::sleep(Duration::from_millis(300)).await;
    assert_eq!(mock.stats().tokens_sent, sent, "nothing is sent any more");
    mock.shutdown().await;
}

#[tokio::test]
async fn abandoning_start_closes_a_request_still_waiting_for_headers() {
    let mock = mock_upstream(0.0, 5).await;
    let provider = provider(mock.base_url());

    // The caller's first-token timeout drops the `start` future.
    let started = tokio::time::timeout(
        Duration::from_millis(300),
        provider.start(request(Some("mock-hang"), 50)),
    )
    .await;
    assert!(started.is_err(), "mock-hang never answers");

    eventually("the mock sees the client leave", || {
        mock.stats().client_disconnects == 1
    })
    .await;
    assert_eq!(mock.stats().requests, 1);
    mock.shutdown().await;
}

#[tokio::test]
async fn a_refused_connection_fails_start() {
    let port = closed_port().await;
    let provider = provider(format!("http://127.0.0.1:{port}/v1"));

    let error = start_err(&provider, request(Some("gpt-test"), 50)).await;

    assert_eq!(error.kind, ModelErrorKind::Upstream);
    assert!(error.message.contains("connect"), "{}", error.message);
    assert!(!error.message.contains(API_KEY), "{}", error.message);
}

#[tokio::test]
async fn a_connection_that_never_completes_hits_the_connect_timeout() {
    // A listener whose accept queue is full: Linux drops further SYNs, so a
    // connect hangs (an unroutable address may be answered by the sandbox).
    let socket = tokio::net::TcpSocket::new_v4().expect("socket");
    socket
        .bind("127.0.0.1:0".parse().expect("addr"))
        .expect("bind");
    let addr = socket.local_addr().expect("addr");
    let _listener = socket.listen(1).expect("listen");
    let mut fillers = Vec::new();
    loop {
        let connect = tokio::net::TcpStream::connect(addr);
        match tokio::time::timeout(Duration::from_millis(200), connect).await {
            Ok(Ok(stream)) if fillers.len() < 64 => fillers.push(stream),
            Ok(Ok(_)) => {
                eprintln!("skipped: this kernel never stops accepting connections");
                return;
            }
            Ok(Err(error)) => panic!("filler connect failed: {error}"),
            Err(_) => break,
        }
    }
    let mut settings = settings(format!("http://{addr}/v1"));
    settings.connect_timeout = Duration::from_millis(300);
    let provider = OpenAiProvider::new(settings).expect("provider");

    let began = std::time::Instant::now();
    let error = start_err(&provider, request(Some("gpt-test"), 50)).await;

    assert_eq!(error.kind, ModelErrorKind::Timeout, "{}", error.message);
    assert!(error.message.contains("connect"), "{}", error.message);
    assert!(
        began.elapsed() < Duration::from_secs(3),
        "gave up after {:?}",
        began.elapsed()
    );
}

#[tokio::test]
async fn settings_are_checked_and_the_key_never_printed() {
    let good = settings("http://127.0.0.1:9/v1".to_owned());
    let provider = OpenAiProvider::new(good.clone()).expect("valid settings");
    assert!(!format!("{provider:?}").contains(API_KEY));
    assert!(!format!("{good:?}").contains(API_KEY));

    let with = |change: fn(&mut OpenAiSettings)| {
        let mut settings = good.clone();
        change(&mut settings);
        OpenAiProvider::new(settings)
    };
    assert!(matches!(
        with(|s| s.base_url = "localhost:8000".into()),
        Err(OpenAiSetupError::InvalidBaseUrl(_))
    ));
    assert!(matches!(
        with(|s| s.base_url = "http://example.com/v1?api-key=x".into()),
        Err(OpenAiSetupError::InvalidBaseUrl(_))
    ));
    assert!(matches!(
        with(|s| s.api_key = Some("sk-bad\nkey".into())),
        Err(OpenAiSetupError::InvalidApiKey)
    ));
    assert!(matches!(
        with(|s| s.default_model = " ".into()),
        Err(OpenAiSetupError::EmptyDefaultModel)
    ));
    assert!(matches!(
        with(|s| s.connect_timeout = Duration::ZERO),
        Err(OpenAiSetupError::ZeroConnectTimeout)
    ));
    assert!(with(|s| s.api_key = None).is_ok());
}

fn reasoning_of(events: &[Result<ModelEvent, ModelError>]) -> String {
    events
        .iter()
        .filter_map(|event| match event {
            Ok(ModelEvent::Reasoning(text)) => Some(text.as_str()),
            _ => None,
        })
        .collect()
}

/// The three forms in which upstreams give their thinking, the `<think>`
/// one also with its tags cut across chunks at odd places: one reasoning
/// part before the answer, the answer without a trace of it, and the
/// upstream's count of reasoning tokens.
#[tokio::test]
async fn every_form_of_reasoning_is_read_as_reasoning_before_the_answer() {
    let mock = mock_upstream(0.0, 10).await;
    let provider = provider(mock.base_url());
    for model in [
        "mock-reasoning-content-6",
        "mock-reasoning-6",
        "mock-think-6",
        "mock-think-split-6",
    ] {
        let events = drain(start(&provider, request(Some(model), 100)).await).await;
        assert!(events.iter().all(Result::is_ok), "{model}: {events:?}");
        assert_eq!(
            reasoning_of(&events),
            skald_loadtest::mock_upstream::reasoning_text(QUESTION, 6),
            "{model}"
        );
        assert_eq!(text_of(&events), answer_text(QUESTION, 10), "{model}");
        let first_answer = events
            .iter()
            .position(|e| matches!(e, Ok(ModelEvent::Token(_))))
            .unwrap();
        let last_reasoning = events
            .iter()
            .rposition(|e| matches!(e, Ok(ModelEvent::Reasoning(_))))
            .unwrap();
        assert!(last_reasoning < first_answer, "{model}: thinking first");
        let usage = events.iter().find_map(|e| match e {
            Ok(ModelEvent::Usage(u)) => Some(*u),
            _ => None,
        });
        assert_eq!(
            usage.and_then(|u| u.reasoning_tokens),
            Some(6),
            "{model}: {usage:?}"
        );
    }
    mock.shutdown().await;
}

/// An error reported inside a 200 stream, as a `data:` line (vLLM) or an
/// `event: error`: the tokens before it, then one upstream error, whose
/// text is Skald's and not the upstream's body.
#[tokio::test]
async fn an_error_inside_a_stream_ends_it_with_one_upstream_error() {
    let mock = mock_upstream(0.0, 10).await;
    let provider = provider(mock.base_url());
    for model in ["mock-error-after-3", "mock-error-event-after-3"] {
        let events = drain(start(&provider, request(Some(model), 100)).await).await;
        assert_eq!(text_of(&events), answer_text(QUESTION, 3), "{model}");
        let errors: Vec<_> = events.iter().filter_map(|e| e.as_ref().err()).collect();
        assert_eq!(errors.len(), 1, "{model}: {events:?}");
        assert_eq!(errors[0].kind, ModelErrorKind::Upstream);
        assert!(
            matches!(events.last(), Some(Err(_))),
            "{model}: the error is last: {events:?}"
        );
        assert!(
            !events
                .iter()
                .any(|e| matches!(e, Ok(ModelEvent::Finish(_)))),
            "{model}"
        );
    }
    mock.shutdown().await;
}
