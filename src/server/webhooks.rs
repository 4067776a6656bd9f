//! Delivery-report webhooks under `/webhooks`. (Skeleton: routes land with the HTTP API
//! issue.)

use axum::Router;

use super::Shared;

/// The webhook routes.
pub fn routes() -> Router<Shared> {
    Router::new()
}
