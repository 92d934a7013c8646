//! The embeddable widget and the demo: `GET /widget.js`, `GET /` (a page
//! with the widget) and `POST /v1/demo/token` (short-lived anonymous tokens,
//! rate-limited per client address), the last two only when `demo.enabled`.

use axum::Router;

use super::AppState;

pub fn router(_state: AppState) -> Router<AppState> {
    Router::new()
}
