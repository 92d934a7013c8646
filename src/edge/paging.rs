//! Paged listings over HTTP (PROTOCOL.md): `limit` (1 to [`MAX_PAGE`], 50
//! by default) and an opaque cursor, `before` or `after`, which is the
//! base64url of the store's position (a 400 when it does not decode). Every
//! listing of the API reads its query and writes its `next` here.

use base64::Engine;
use serde::Deserialize;
use skald_actors::ports::store::{Page, MAX_PAGE};
use skald_protocol::ErrorCode;

use super::error::ApiError;

const DEFAULT_PAGE: usize = 50;

/// The longest position a cursor holds: a usage cursor holds a user id
/// (a token's `sub`, bounded only by the size of a request's headers).
const MAX_CURSOR_BYTES: usize = 4096;

/// A listing's query string: its size and where it starts.
#[derive(Deserialize)]
pub struct PageQuery {
    limit: Option<String>,
    before: Option<String>,
    after: Option<String>,
}

impl PageQuery {
    /// The page size, and the position of `before` (listings newest first).
    pub fn before(&self) -> Result<(usize, Option<String>), ApiError> {
        Ok((self.limit()?, decode(self.before.as_deref())?))
    }

    /// The page size, and the position of `after` (listings oldest first).
    pub fn after(&self) -> Result<(usize, Option<String>), ApiError> {
        Ok((self.limit()?, decode(self.after.as_deref())?))
    }

    fn limit(&self) -> Result<usize, ApiError> {
        match &self.limit {
            None => Ok(DEFAULT_PAGE),
            Some(raw) => match raw.parse::<usize>() {
                Ok(n) if (1..=MAX_PAGE).contains(&n) => Ok(n),
                _ => Err(ApiError::new(
                    ErrorCode::InvalidRequest,
                    format!("limit must be 1 to {MAX_PAGE}"),
                )),
            },
        }
    }
}

/// A store's page as the API gives it: each item through `view`, and the
/// next page's cursor.
pub fn reply<T, V>(page: Page<T>, view: impl FnMut(T) -> V) -> (Vec<V>, Option<String>) {
    let next = page.next.as_deref().map(encode);
    (page.items.into_iter().map(view).collect(), next)
}

fn encode(position: &str) -> String {
    base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(position)
}

fn decode(cursor: Option<&str>) -> Result<Option<String>, ApiError> {
    let Some(cursor) = cursor else {
        return Ok(None);
    };
    base64::engine::general_purpose::URL_SAFE_NO_PAD
        .decode(cursor)
        .ok()
        .and_then(|bytes| String::from_utf8(bytes).ok())
        .filter(|s| !s.is_empty() && s.len() <= MAX_CURSOR_BYTES)
        .map(Some)
        .ok_or_else(|| ApiError::new(ErrorCode::InvalidRequest, "bad cursor"))
}
