//! The query and control API under `/api` (bearer token), plus `/healthz`, `/metrics` and
//! `/api/openapi.json`. (Skeleton: routes land with the HTTP API issue.)

use axum::Router;
use axum::routing::get;

use super::Shared;

/// Routes behind the bearer token.
pub fn routes() -> Router<Shared> {
    Router::new()
}

/// Routes open to anyone who can reach the server (health and metrics, no data).
pub fn open_routes() -> Router<Shared> {
    Router::new().route("/healthz", get(|| async { "ok" }))
}
