//! The one error type of the HTTP API: PROTOCOL.md's body
//! `{"error":{"code","message"}}`, with the status its code pairs with
//! (and `Retry-After` when a limit says when to come back). Handlers return
//! `Result<Json<T>, ApiError>`; the extractors' own rejections (a bad query
//! string, a bad path) become `invalid_request` through the same type, so
//! no answer of this server is the framework's plain text.

use axum::extract::rejection::{PathRejection, QueryRejection};
use axum::http::{header, HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::Json;
use skald_actors::ports::limits::LimitsError;
use skald_actors::ports::store::StoreError;
use skald_protocol::{ErrorBody, ErrorCode, HttpError};

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ApiError {
    pub code: ErrorCode,
    pub message: String,
    /// When a limit refused: how long to wait.
    pub retry_after_ms: Option<u64>,
}

impl ApiError {
    pub fn new(code: ErrorCode, message: impl Into<String>) -> ApiError {
        ApiError {
            code,
            message: message.into(),
            retry_after_ms: None,
        }
    }

    pub fn retry_after_ms(mut self, ms: u64) -> ApiError {
        self.retry_after_ms = Some(ms);
        self
    }

    pub fn status(&self) -> StatusCode {
        StatusCode::from_u16(self.code.http_status()).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR)
    }
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        let status = self.status();
        let retry_after = self.retry_after_ms;
        let body = HttpError {
            error: ErrorBody {
                code: self.code,
                message: self.message,
            },
        };
        with_retry_after((status, Json(body)).into_response(), retry_after)
    }
}

/// `Retry-After` in whole seconds (at least 1) when a limit said when to
/// come back; every error shape of the API answers with it.
pub fn with_retry_after(mut response: Response, retry_after_ms: Option<u64>) -> Response {
    if let Some(ms) = retry_after_ms {
        let seconds = ms.div_ceil(1000).max(1);
        if let Ok(value) = HeaderValue::from_str(&seconds.to_string()) {
            response.headers_mut().insert(header::RETRY_AFTER, value);
        }
    }
    response
}

impl From<StoreError> for ApiError {
    fn from(e: StoreError) -> ApiError {
        match e {
            StoreError::NotFound(what) => {
                ApiError::new(ErrorCode::NotFound, format!("no such {what}"))
            }
            StoreError::Unavailable(source) => {
                tracing::warn!(error = %source, "store unavailable");
                ApiError::new(
                    ErrorCode::Unavailable,
                    "storage is unavailable, try again later",
                )
            }
        }
    }
}

impl From<LimitsError> for ApiError {
    fn from(e: LimitsError) -> ApiError {
        tracing::warn!(error = %e, "limits unavailable");
        ApiError::new(
            ErrorCode::Unavailable,
            "limits are unavailable, try again later",
        )
    }
}

impl From<QueryRejection> for ApiError {
    fn from(e: QueryRejection) -> ApiError {
        ApiError::new(ErrorCode::InvalidRequest, e.body_text())
    }
}

impl From<PathRejection> for ApiError {
    fn from(e: PathRejection) -> ApiError {
        ApiError::new(ErrorCode::InvalidRequest, e.body_text())
    }
}

/// Unknown routes.
pub async fn not_found() -> ApiError {
    ApiError::new(ErrorCode::NotFound, "no such route")
}

/// A known route with a method it does not take.
pub async fn method_not_allowed() -> Response {
    let mut response =
        ApiError::new(ErrorCode::InvalidRequest, "method not allowed").into_response();
    *response.status_mut() = StatusCode::METHOD_NOT_ALLOWED;
    response
}

/// `Query<T>` whose rejection is an [`ApiError`].
pub struct ApiQuery<T>(pub T);

impl<T, S> axum::extract::FromRequestParts<S> for ApiQuery<T>
where
    T: serde::de::DeserializeOwned,
    S: Send + Sync,
{
    type Rejection = ApiError;

    async fn from_request_parts(
        parts: &mut axum::http::request::Parts,
        state: &S,
    ) -> Result<Self, ApiError> {
        let axum::extract::Query(value) =
            axum::extract::Query::<T>::from_request_parts(parts, state).await?;
        Ok(ApiQuery(value))
    }
}

/// `Path<T>` whose rejection is an [`ApiError`].
pub struct ApiPath<T>(pub T);

impl<T, S> axum::extract::FromRequestParts<S> for ApiPath<T>
where
    T: serde::de::DeserializeOwned + Send,
    S: Send + Sync,
{
    type Rejection = ApiError;

    async fn from_request_parts(
        parts: &mut axum::http::request::Parts,
        state: &S,
    ) -> Result<Self, ApiError> {
        let axum::extract::Path(value) =
            axum::extract::Path::<T>::from_request_parts(parts, state).await?;
        Ok(ApiPath(value))
    }
}

/// A JSON body whose rejection is an [`ApiError`] naming the field at
/// fault (`invalid body: `temperature`: invalid type: …`).
pub struct ApiJson<T>(pub T);

impl<T, S> axum::extract::FromRequest<S> for ApiJson<T>
where
    T: serde::de::DeserializeOwned,
    S: Send + Sync,
{
    type Rejection = ApiError;

    async fn from_request(req: axum::extract::Request, state: &S) -> Result<Self, ApiError> {
        let bytes = axum::body::Bytes::from_request(req, state)
            .await
            .map_err(|e| ApiError::new(ErrorCode::InvalidRequest, e.body_text()))?;
        decode(&mut serde_json::Deserializer::from_slice(&bytes)).map(ApiJson)
    }
}

/// Reads `T`, or says which field is wrong and why (serde_path_to_error
/// keeps the path serde alone loses).
pub fn decode<'de, T, D>(de: D) -> Result<T, ApiError>
where
    T: serde::Deserialize<'de>,
    D: serde::Deserializer<'de>,
{
    serde_path_to_error::deserialize(de).map_err(|e| {
        let path = e.path().to_string();
        let message = match path.as_str() {
            "." => format!("invalid body: {}", e.inner()),
            _ => format!("invalid body: `{path}`: {}", e.inner()),
        };
        ApiError::new(ErrorCode::InvalidRequest, message)
    })
}
