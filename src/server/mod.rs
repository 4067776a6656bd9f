//! The HTTP server (axum): delivery-report webhooks, the query and control API, the
//! customer-portal inbox, health and metrics.
//!
//! One [`AppState`] is shared by every handler: the validated config, the store (one
//! process holds it; handlers make a [`Ledger`](crate::history::ledger::Ledger) over it
//! as they need, which is cheap and serialised process-wide), and the metrics. The
//! router is built in one place, [`router`], from each part's own routes:
//! `api::routes()` behind the bearer token, `webhooks::routes()` authenticated the way
//! each provider allows, `unsubscribe::routes()` by the signed token in the path,
//! `console::routes()` (the web console) behind a sign-in session. Every request body is size-limited; a malformed one is a 400
//! with a reason, never a panic.

pub mod api;
pub mod console;
pub mod email_webhooks;
pub mod metrics;
pub mod unsubscribe;
pub mod webhooks;

use std::sync::Arc;

use axum::Router;
use axum::extract::{DefaultBodyLimit, Request, State};
use axum::http::{StatusCode, header};
use axum::middleware::{self, Next};
use axum::response::{IntoResponse, Response};

use crate::config::Config;
use crate::store::Store;

/// What every handler sees.
pub struct AppState {
    pub config: Config,
    /// The store, for the life of the server.
    pub store: Arc<dyn Store>,
    pub metrics: metrics::Metrics,
    /// Jobs directory, for `POST /api/jobs/{name}/run`.
    pub jobs_dir: std::path::PathBuf,
    /// Set while `crier run`'s scheduler loop is alive; `None` under `crier serve`.
    pub scheduler: Option<Arc<std::sync::atomic::AtomicBool>>,
    /// This process among the workers on a PostgreSQL store (`crier run` on one);
    /// `/healthz` is unhealthy while it cannot heartbeat.
    pub worker: Option<Arc<crate::cluster::members::Worker>>,
}

pub type Shared = Arc<AppState>;

/// An API error: a status and a reason, as JSON `{"error": "..."}`.
#[derive(Debug)]
pub struct ApiError {
    pub status: StatusCode,
    pub message: String,
}

impl ApiError {
    pub fn new(status: StatusCode, message: impl Into<String>) -> ApiError {
        ApiError {
            status,
            message: message.into(),
        }
    }

    pub fn bad_request(message: impl Into<String>) -> ApiError {
        ApiError::new(StatusCode::BAD_REQUEST, message)
    }

    pub fn not_found(message: impl Into<String>) -> ApiError {
        ApiError::new(StatusCode::NOT_FOUND, message)
    }

    pub fn internal(message: impl std::fmt::Display) -> ApiError {
        tracing::error!(error = %message, "Request failed.");
        ApiError::new(
            StatusCode::INTERNAL_SERVER_ERROR,
            "internal error (see the server log)",
        )
    }
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        (
            self.status,
            axum::Json(serde_json::json!({ "error": self.message })),
        )
            .into_response()
    }
}

/// Compares two byte strings in time that depends only on their lengths.
pub fn constant_time_eq(a: &[u8], b: &[u8]) -> bool {
    if a.len() != b.len() {
        return false;
    }
    a.iter().zip(b).fold(0u8, |acc, (x, y)| acc | (x ^ y)) == 0
}

/// `Authorization: Bearer <server.token>` or 401, without detail.
async fn bearer(State(state): State<Shared>, request: Request, next: Next) -> Response {
    let presented = request
        .headers()
        .get(header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.strip_prefix("Bearer "));
    let ok = match (&state.config.server.token, presented) {
        (Some(token), Some(p)) => constant_time_eq(token.expose().as_bytes(), p.trim().as_bytes()),
        _ => false,
    };
    if !ok {
        return (
            StatusCode::UNAUTHORIZED,
            [(header::WWW_AUTHENTICATE, "Bearer")],
            axum::Json(serde_json::json!({ "error": "unauthorized" })),
        )
            .into_response();
    }
    next.run(request).await
}

/// The whole server, with the web console.
pub fn router(state: Shared) -> Router {
    router_with(state, true)
}

/// The server, with the console or without it.
fn router_with(state: Shared, console: bool) -> Router {
    let api = api::routes().layer(middleware::from_fn_with_state(state.clone(), bearer));
    let limit = DefaultBodyLimit::max(state.config.server.max_body_bytes);
    let mut router = Router::new()
        .merge(api)
        .merge(webhooks::routes())
        .merge(unsubscribe::routes())
        .merge(api::open_routes())
        .with_state(state.clone());
    if console {
        router = router.merge(console::routes(state));
    }
    router.layer(limit)
}

/// How long the requests in progress at shutdown have to finish.
pub const SHUTDOWN_GRACE: std::time::Duration = std::time::Duration::from_secs(10);

/// Serves until `shutdown` resolves, then finishes the requests in progress for at most
/// [`SHUTDOWN_GRACE`]: a client that stops sending its request, one that stops reading
/// an answer, or a keep-alive connection axum does not close (seen as a `crier serve`
/// that a SIGTERM did not stop in 30 s) cannot hold the process. The console is served
/// only where [`console::allowed`] says.
pub async fn serve(
    listener: tokio::net::TcpListener,
    state: Shared,
    shutdown: impl std::future::Future<Output = ()> + Send + 'static,
) -> std::io::Result<()> {
    let addr = listener.local_addr()?;
    let console = console::allowed(&state.config, addr);
    if !console {
        tracing::warn!(%addr, "No server.token is configured and the address is not loopback: the web console is not served (set server.token to serve it).");
    }
    let (stopping, stop) = tokio::sync::watch::channel(false);
    tokio::spawn(async move {
        shutdown.await;
        stopping.send_replace(true);
    });
    let stopped = |mut stop: tokio::sync::watch::Receiver<bool>| async move {
        let _ = stop.wait_for(|&s| s).await;
    };
    let graceful = axum::serve(listener, router_with(state, console))
        .with_graceful_shutdown(stopped(stop.clone()));
    let grace = async {
        stopped(stop).await;
        tokio::time::sleep(SHUTDOWN_GRACE).await;
    };
    tokio::select! {
        served = graceful => served,
        () = grace => {
            tracing::warn!(grace_secs = SHUTDOWN_GRACE.as_secs(), "Requests still open after the shutdown grace: they are cut off.");
            Ok(())
        }
    }
}
