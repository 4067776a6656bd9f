//! The web console: Splynx's *Mass sending* screens (history, a run live, the message
//! logs, jobs with preview / send as test / send) as server-rendered HTML on the API's
//! port.
//!
//! Every screen is a handler that parses its input into the same filter and option types
//! the CLI and the JSON API use ([`RunQuery`](crate::history::query::RunQuery),
//! [`MessageQuery`](crate::history::query::MessageQuery), `engine::preview`,
//! `engine::send`), turns what they return into plain view structs, and renders a
//! minijinja template with them (auto-escaping on: every template is `.html`). A handler
//! answers the whole page, or only the page's `content` block when htmx asks
//! (`HX-Request`), from the same template. htmx 2 and its SSE extension are vendored in
//! `assets/` (with their licences) and served from the binary, so the console works with
//! no internet.
//!
//! Auth: with `server.token` set, the console asks for that token once on a sign-in page
//! and keeps a session (an opaque random id in an `HttpOnly`, `SameSite=Strict` cookie,
//! expiring after [`SESSION_TTL`]); the API keeps its bearer token. Every session carries
//! a CSRF token that every POST must echo (form field `csrf` or header `X-CSRF-Token`).
//! Without a token the console is only served on a loopback address ([`allowed`]).

mod chart;
mod compose;
mod jobs;
mod messages;
mod recipients;
mod runs;
#[cfg(test)]
mod tests;
mod view;

use std::collections::HashMap;
use std::sync::{Arc, LazyLock, Mutex};
use std::time::{Duration, Instant};

use axum::Form;
use axum::body::Body;
use axum::extract::{Request, State};
use axum::http::{HeaderMap, HeaderValue, StatusCode, header};
use axum::middleware::{self, Next};
use axum::response::{Html, IntoResponse, Redirect, Response};
use axum::routing::get;
use minijinja::Environment;
use serde::{Deserialize, Serialize};

use super::{Shared, constant_time_eq};

/// How long a signed-in session lasts (absolute, not sliding).
pub const SESSION_TTL: Duration = Duration::from_secs(12 * 3600);
/// Most sessions held at once; the oldest go first.
const MAX_SESSIONS: usize = 10_000;
/// The session cookie's name.
const COOKIE: &str = "crier_session";

/// May the console be served on `addr` with this config? Only behind a token, or on a
/// loopback address.
pub fn allowed(config: &crate::config::Config, addr: std::net::SocketAddr) -> bool {
    config.server.token.is_some() || addr.ip().is_loopback()
}

// ---------------------------------------------------------------------------------------
// Sessions.

#[derive(Clone)]
struct Session {
    signed_in: bool,
    csrf: String,
    expires: Instant,
}

/// The sessions of this server process (a restart signs everyone out).
#[derive(Default)]
pub(crate) struct Sessions {
    map: Mutex<HashMap<String, Session>>,
}

/// 32 random bytes from the system's CSPRNG, hex.
fn random_token() -> String {
    use ring::rand::SecureRandom;
    let mut bytes = [0u8; 32];
    ring::rand::SystemRandom::new()
        .fill(&mut bytes)
        .expect("system random number generator");
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

impl Sessions {
    fn get(&self, id: &str) -> Option<Session> {
        let mut map = self.map.lock().unwrap_or_else(|e| e.into_inner());
        match map.get(id) {
            Some(s) if s.expires > Instant::now() => Some(s.clone()),
            Some(_) => {
                map.remove(id);
                None
            }
            None => None,
        }
    }

    /// A new session; returns its id.
    fn create(&self, signed_in: bool) -> (String, Session) {
        let now = Instant::now();
        let session = Session {
            signed_in,
            csrf: random_token(),
            expires: now + SESSION_TTL,
        };
        let id = random_token();
        let mut map = self.map.lock().unwrap_or_else(|e| e.into_inner());
        map.retain(|_, s| s.expires > now);
        if map.len() >= MAX_SESSIONS
            && let Some(oldest) = map
                .iter()
                .min_by_key(|(_, s)| s.expires)
                .map(|(k, _)| k.clone())
        {
            map.remove(&oldest);
        }
        map.insert(id.clone(), session.clone());
        (id, session)
    }

    fn remove(&self, id: &str) {
        self.map
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .remove(id);
    }
}

/// The `Set-Cookie` of session `id` (empty `id`: clear it).
fn cookie(id: &str) -> HeaderValue {
    let max_age = if id.is_empty() {
        0
    } else {
        SESSION_TTL.as_secs()
    };
    HeaderValue::from_str(&format!(
        "{COOKIE}={id}; Path=/; HttpOnly; SameSite=Strict; Max-Age={max_age}"
    ))
    .expect("cookie is ASCII")
}

fn session_id(headers: &HeaderMap) -> Option<String> {
    headers
        .get_all(header::COOKIE)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(';'))
        .filter_map(|kv| kv.trim().split_once('='))
        .find(|(k, _)| *k == COOKIE)
        .map(|(_, v)| v.to_string())
}

/// What every console handler knows about the request: the session's CSRF token (for
/// the forms it renders) and whether htmx asked for a fragment.
#[derive(Clone)]
pub(crate) struct Ctx {
    pub csrf: String,
    pub fragment: bool,
    /// Whether the console has a sign-in (a `server.token`), so pages offer sign-out.
    pub auth: bool,
}

/// The console's state: the server's, plus its sessions.
#[derive(Clone)]
pub(crate) struct Console {
    pub app: Shared,
    sessions: Arc<Sessions>,
}

/// Lets a signed-in session through (with no `server.token`: any, making one if need
/// be); sends anyone else to the sign-in page. A POST must carry the session's CSRF token.
async fn guard(State(c): State<Console>, request: Request, next: Next) -> Response {
    let auth = c.app.config.server.token.is_some();
    let fragment = is_fragment(request.headers());
    let existing =
        session_id(request.headers()).and_then(|id| c.sessions.get(&id).map(|s| (id, s)));
    let (new_cookie, session) = match existing {
        Some((_, s)) if s.signed_in => (None, s),
        _ if !auth => {
            let (id, s) = c.sessions.create(true);
            (Some(id), s)
        }
        _ => return to_sign_in(&request, fragment),
    };
    let (request, ok) = check_csrf(request, &session.csrf).await;
    if !ok {
        return refused(
            StatusCode::FORBIDDEN,
            "The form is stale or not from this console (CSRF token missing or wrong): reload the page and try again.",
        );
    }
    let mut request = request;
    request.extensions_mut().insert(Ctx {
        csrf: session.csrf,
        fragment,
        auth,
    });
    let mut response = next.run(request).await;
    if let Some(id) = new_cookie {
        response
            .headers_mut()
            .append(header::SET_COOKIE, cookie(&id));
    }
    response
        .headers_mut()
        .insert(header::VARY, HeaderValue::from_static("HX-Request, Cookie"));
    response
}

/// htmx asked for the fragment (not a history restore, which needs the whole page).
fn is_fragment(headers: &HeaderMap) -> bool {
    headers.contains_key("hx-request") && !headers.contains_key("hx-history-restore-request")
}

fn to_sign_in(request: &Request, fragment: bool) -> Response {
    let next = request
        .uri()
        .path_and_query()
        .map(|p| p.as_str())
        .unwrap_or("/");
    let target = format!("/signin?next={}", url_encode(next));
    if request.method() != axum::http::Method::GET {
        return refused(
            StatusCode::UNAUTHORIZED,
            "Not signed in (or the session expired): sign in again.",
        );
    }
    if fragment {
        // htmx follows this header with a full page load.
        return (
            StatusCode::UNAUTHORIZED,
            [("hx-redirect", target)],
            "not signed in",
        )
            .into_response();
    }
    Redirect::to(&target).into_response()
}

fn url_encode(s: &str) -> String {
    form_urlencoded::byte_serialize(s.as_bytes()).collect()
}

/// For a POST, whether it carries `csrf` (header or form field); the request is rebuilt
/// from the buffered body.
async fn check_csrf(request: Request, csrf: &str) -> (Request, bool) {
    if request.method() != axum::http::Method::POST {
        return (request, true);
    }
    if let Some(h) = request
        .headers()
        .get("x-csrf-token")
        .and_then(|v| v.to_str().ok())
    {
        let ok = constant_time_eq(h.as_bytes(), csrf.as_bytes());
        return (request, ok);
    }
    let (parts, body) = request.into_parts();
    let bytes = match axum::body::to_bytes(body, 1 << 20).await {
        Ok(b) => b,
        Err(_) => return (Request::from_parts(parts, Body::empty()), false),
    };
    let ok = form_urlencoded::parse(&bytes)
        .find(|(k, _)| k == "csrf")
        .is_some_and(|(_, v)| constant_time_eq(v.as_bytes(), csrf.as_bytes()));
    (Request::from_parts(parts, Body::from(bytes)), ok)
}

// ---------------------------------------------------------------------------------------
// Sign-in.

#[derive(Serialize)]
struct SignInPage<'a> {
    csrf: &'a str,
    next: &'a str,
    error: Option<&'a str>,
}

#[derive(Deserialize)]
struct NextParam {
    next: Option<String>,
}

/// Where to go after signing in: a path on this console, never another site.
fn safe_next(next: Option<&str>) -> &str {
    match next {
        Some(n) if n.starts_with('/') && !n.starts_with("//") && !n.contains('\\') => n,
        _ => "/",
    }
}

async fn sign_in_page(
    State(c): State<Console>,
    headers: HeaderMap,
    axum::extract::Query(q): axum::extract::Query<NextParam>,
) -> Response {
    if c.app.config.server.token.is_none() {
        return Redirect::to("/").into_response();
    }
    // A pre-session, unsigned, whose CSRF token the sign-in form carries.
    let (id, session) =
        match session_id(&headers).and_then(|id| c.sessions.get(&id).map(|s| (id, s))) {
            Some(found) => found,
            None => c.sessions.create(false),
        };
    let page = render(
        "signin.html",
        &SignInPage {
            csrf: &session.csrf,
            next: safe_next(q.next.as_deref()),
            error: None,
        },
    );
    ([(header::SET_COOKIE, cookie(&id))], page).into_response()
}

#[derive(Deserialize)]
struct SignInForm {
    token: String,
    csrf: String,
    next: Option<String>,
}

async fn sign_in(
    State(c): State<Console>,
    headers: HeaderMap,
    Form(f): Form<SignInForm>,
) -> Response {
    let Some(token) = &c.app.config.server.token else {
        return Redirect::to("/").into_response();
    };
    let pre = session_id(&headers).and_then(|id| c.sessions.get(&id).map(|s| (id, s)));
    let Some((pre_id, pre)) =
        pre.filter(|(_, s)| constant_time_eq(s.csrf.as_bytes(), f.csrf.as_bytes()))
    else {
        return refused(
            StatusCode::FORBIDDEN,
            "The sign-in form is stale (CSRF token missing or wrong): reload the page and try again.",
        );
    };
    let next = safe_next(f.next.as_deref());
    if !constant_time_eq(token.expose().as_bytes(), f.token.trim().as_bytes()) {
        tracing::warn!("Console sign-in refused: wrong token.");
        let page = render(
            "signin.html",
            &SignInPage {
                csrf: &pre.csrf,
                next,
                error: Some("That is not the server's token."),
            },
        );
        // 200, as the form page it is: a 4xx would be a console error in the browser.
        return page;
    }
    // A fresh id on sign-in, so a planted pre-session id is worth nothing.
    c.sessions.remove(&pre_id);
    let (id, _) = c.sessions.create(true);
    tracing::info!("Console signed in.");
    (
        StatusCode::SEE_OTHER,
        [
            (header::SET_COOKIE, cookie(&id)),
            (
                header::LOCATION,
                HeaderValue::from_str(next).unwrap_or(HeaderValue::from_static("/")),
            ),
        ],
    )
        .into_response()
}

async fn sign_out(State(c): State<Console>, headers: HeaderMap) -> Response {
    if let Some(id) = session_id(&headers) {
        c.sessions.remove(&id);
    }
    (
        StatusCode::SEE_OTHER,
        [
            (header::SET_COOKIE, cookie("")),
            (header::LOCATION, HeaderValue::from_static("/signin")),
        ],
    )
        .into_response()
}

// ---------------------------------------------------------------------------------------
// Templates and assets.

static TEMPLATES: LazyLock<Environment<'static>> = LazyLock::new(|| {
    let mut env = Environment::new();
    for (name, text) in [
        ("base.html", include_str!("templates/base.html")),
        ("signin.html", include_str!("templates/signin.html")),
        ("error.html", include_str!("templates/error.html")),
        ("dashboard.html", include_str!("templates/dashboard.html")),
        ("runs.html", include_str!("templates/runs.html")),
        ("run.html", include_str!("templates/run.html")),
        ("progress.html", include_str!("templates/progress.html")),
        ("breakdown.html", include_str!("templates/breakdown.html")),
        ("messages.html", include_str!("templates/messages.html")),
        ("message.html", include_str!("templates/message.html")),
        ("jobs.html", include_str!("templates/jobs.html")),
        ("job.html", include_str!("templates/job.html")),
        ("preview.html", include_str!("templates/preview.html")),
        ("confirm.html", include_str!("templates/confirm.html")),
        ("tested.html", include_str!("templates/tested.html")),
        ("compose.html", include_str!("templates/compose.html")),
        ("invalid.html", include_str!("templates/invalid.html")),
        ("saved.html", include_str!("templates/saved.html")),
        ("recipients.html", include_str!("templates/recipients.html")),
        ("recipient.html", include_str!("templates/recipient.html")),
    ] {
        env.add_template(name, text)
            .expect("console template compiles");
    }
    env.add_filter("num", view::thousands);
    env
});

/// `name` rendered with `data`.
fn render(name: &str, data: &impl Serialize) -> Response {
    match TEMPLATES
        .get_template(name)
        .and_then(|t| t.render(minijinja::value::Serde(data)))
    {
        Ok(html) => Html(html).into_response(),
        Err(e) => super::ApiError::internal(format!("template {name}: {e:#}")).into_response(),
    }
}

/// A page: the whole of it, or only its `content` block when htmx asked for a fragment
/// (`base.html` leaves out the rest then).
fn page(ctx: &Ctx, name: &str, data: &impl Serialize) -> Response {
    render(
        name,
        &Wrapped {
            ctx: CtxView::from(ctx),
            page: data,
        },
    )
}

/// A fragment template on its own (progress, breakdown, preview): no `base.html`, so
/// it is the same whoever asks.
fn fragment(ctx: &Ctx, name: &str, data: &impl Serialize) -> Response {
    page(ctx, name, data)
}

/// `progress.html` for `data`, as text (the event stream's snapshots).
fn render_text(ctx: &Ctx, name: &str, data: &impl Serialize) -> String {
    TEMPLATES
        .get_template(name)
        .and_then(|t| {
            t.render(minijinja::value::Serde(Wrapped {
                ctx: CtxView::from(ctx),
                page: data,
            }))
        })
        .unwrap_or_else(|e| {
            tracing::error!(error = %e, template = name, "Console template failed.");
            String::new()
        })
}

/// What every template sees: `ctx` (CSRF token, auth) and `page` (the screen's data).
#[derive(Serialize)]
struct Wrapped<'a, T> {
    ctx: CtxView<'a>,
    page: &'a T,
}

#[derive(Serialize)]
struct CtxView<'a> {
    csrf: &'a str,
    auth: bool,
    fragment: bool,
}

impl<'a> From<&'a Ctx> for CtxView<'a> {
    fn from(c: &'a Ctx) -> CtxView<'a> {
        CtxView {
            csrf: &c.csrf,
            auth: c.auth,
            fragment: c.fragment,
        }
    }
}

#[derive(Serialize)]
struct ErrorPage<'a> {
    status: u16,
    message: &'a str,
}

/// A refusal as a small HTML page (its text is what htmx shows in the error box).
fn refused(status: StatusCode, message: &str) -> Response {
    let mut r = render(
        "error.html",
        &ErrorPage {
            status: status.as_u16(),
            message,
        },
    );
    *r.status_mut() = status;
    r
}

/// A console handler's error: an [`ApiError`](super::ApiError) shown as HTML.
pub(crate) struct PageError(super::ApiError);

impl From<super::ApiError> for PageError {
    fn from(e: super::ApiError) -> PageError {
        PageError(e)
    }
}

impl IntoResponse for PageError {
    fn into_response(self) -> Response {
        refused(self.0.status, &self.0.message)
    }
}

type PageResult = Result<Response, PageError>;

/// After a POST: to `to`, by a 303 for a form, by `HX-Redirect` for htmx (which would
/// otherwise swap the page it was redirected to into the form's target).
fn see_other(ctx: &Ctx, to: &str) -> Response {
    if ctx.fragment {
        return ([("hx-redirect", to.to_string())], "").into_response();
    }
    Redirect::to(to).into_response()
}

async fn asset(axum::extract::Path(name): axum::extract::Path<String>) -> Response {
    let (body, kind): (&'static str, &str) = match name.as_str() {
        "htmx.min.js" => (include_str!("assets/htmx.min.js"), "text/javascript"),
        "htmx-ext-sse.min.js" => (
            include_str!("assets/htmx-ext-sse.min.js"),
            "text/javascript",
        ),
        "console.css" => (include_str!("assets/console.css"), "text/css"),
        "htmx.LICENSE" => (include_str!("assets/htmx.LICENSE"), "text/plain"),
        "htmx-ext-sse.LICENSE" => (include_str!("assets/htmx-ext-sse.LICENSE"), "text/plain"),
        _ => return StatusCode::NOT_FOUND.into_response(),
    };
    (
        [
            (header::CONTENT_TYPE, format!("{kind}; charset=utf-8")),
            (header::CACHE_CONTROL, "public, max-age=3600".to_string()),
        ],
        body,
    )
        .into_response()
}

/// Headers on every console answer: no framing by other sites, no inline script, no
/// request to anywhere but this server.
async fn security_headers(request: Request, next: Next) -> Response {
    let mut r = next.run(request).await;
    let h = r.headers_mut();
    h.insert(
        header::CONTENT_SECURITY_POLICY,
        HeaderValue::from_static(
            "default-src 'self'; script-src 'self'; style-src 'self' 'unsafe-inline'; img-src 'self' data:; frame-ancestors 'none'; form-action 'self'",
        ),
    );
    h.insert(header::X_FRAME_OPTIONS, HeaderValue::from_static("DENY"));
    h.insert(
        header::X_CONTENT_TYPE_OPTIONS,
        HeaderValue::from_static("nosniff"),
    );
    h.insert(
        header::REFERRER_POLICY,
        HeaderValue::from_static("same-origin"),
    );
    if !h.contains_key(header::CACHE_CONTROL) {
        h.insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
    }
    r
}

/// The console's routes (their own state; merged into the server's router).
pub fn routes(app: Shared) -> axum::Router {
    let console = Console {
        app,
        sessions: Arc::new(Sessions::default()),
    };
    let guarded = axum::Router::new()
        .route("/", get(runs::dashboard))
        .route("/runs", get(runs::list))
        .route("/runs/{id}", get(runs::show))
        .route("/runs/{id}/progress", get(runs::progress))
        .route("/runs/{id}/events", get(runs::events))
        .route("/runs/{id}/breakdown", get(runs::breakdown))
        .route("/runs/{id}/cancel", axum::routing::post(runs::cancel))
        .route("/runs/{id}/remove", axum::routing::post(runs::remove))
        .route("/runs/{id}/retry", axum::routing::post(runs::retry))
        .route("/runs/{id}/messages.csv", get(runs::export))
        .route("/messages", get(messages::list))
        .route("/messages.csv", get(messages::export))
        .route("/messages/{id}", get(messages::show))
        .route("/jobs", get(jobs::list))
        .route("/jobs/{name}", get(jobs::show))
        .route("/jobs/{name}/preview", get(jobs::preview))
        .route("/jobs/{name}/confirm", get(jobs::confirm))
        .route("/jobs/{name}/test", axum::routing::post(jobs::test))
        .route("/jobs/{name}/send", axum::routing::post(jobs::send))
        .route("/recipients", get(recipients::list))
        .route("/recipients/{kind}/{id}", get(recipients::show))
        .route("/compose", get(compose::show))
        .route("/compose/preview", get(compose::preview))
        .route("/compose/test", axum::routing::post(compose::test))
        .route("/compose/confirm", axum::routing::post(compose::confirm))
        .route("/compose/send", axum::routing::post(compose::send))
        .route("/compose/job.yaml", get(compose::download))
        .route(
            "/compose/template",
            axum::routing::post(compose::save_template),
        )
        .route("/signout", axum::routing::post(sign_out))
        .route_layer(middleware::from_fn_with_state(console.clone(), guard));
    axum::Router::new()
        .merge(guarded)
        .route("/signin", get(sign_in_page).post(sign_in))
        .route("/assets/{name}", get(asset))
        .layer(middleware::from_fn(security_headers))
        .with_state(console)
}
