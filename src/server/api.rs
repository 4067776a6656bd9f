//! The query and control API under `/api` (bearer token), plus `/healthz`, `/metrics` and
//! `/api/openapi.json`.
//!
//! Every filter is parsed by `history::query` ([`RunQuery`], [`MessageQuery`]) and
//! every record is printed by `history::export` ([`RunView`], [`MessageView`], the CSV
//! writers), the same code `crier history` and `crier logs` use, so the terminal and the
//! API cannot disagree. Routes are registered through `utoipa_axum`'s `routes!`, which
//! takes each path and method from the handler's `#[utoipa::path]`: the OpenAPI document
//! is built from the very table that routes requests, so it cannot drift from it. Each
//! parameter's schema is built from what its parser accepts: the enum lists from the
//! types' own `ALL` lists, the run id pattern from [`RunId::PATTERN`], the job name pattern
//! from [`JOB_NAME`], the `limit` bounds from [`MAX_LIMIT`] (see "Parameter schemas").
//!
//! The store is synchronous; every handler reads and writes it on the blocking pool.
//! CSV is streamed: a blocking task writes rows into a bounded channel that the response
//! body drains, so an export of millions of messages holds a few chunks in memory.

use std::collections::BTreeMap;
use std::io::Write;
use std::path::PathBuf;
use std::sync::{Arc, Mutex};

use axum::Json;
use axum::body::{Body, Bytes};
use axum::extract::rejection::{PathRejection, QueryRejection};
use axum::extract::{Path, Query, State};
use axum::http::{StatusCode, header};
use axum::response::{IntoResponse, Response};
use chrono::Utc;
use serde::{Deserialize, Serialize};
use utoipa::openapi::schema::{
    AnyOfBuilder, KnownFormat, Object, ObjectBuilder, SchemaFormat, Type,
};
use utoipa::openapi::security::{Http, HttpAuthScheme, SecurityScheme};
use utoipa::{IntoParams, OpenApi, ToSchema};
use utoipa_axum::router::OpenApiRouter;
use utoipa_axum::routes;

use super::{ApiError, Shared};
use crate::engine::preview::preview;
use crate::engine::send::{SendError, SendOptions, send};
use crate::history::export::{Cells, MessageView, RunView, iso, messages_csv, runs_csv};
use crate::history::ledger::{Ledger, LedgerError};
use crate::history::query::{self, ANY_STATUS, Face, MessageQuery, Period, RunQuery};
use crate::history::{Message, MessageState, MessageType, Run, RunId, RunStatus, Trigger};
use crate::job::Channel;
use crate::provider::portal::Inbox;
use crate::recipients::RecipientKind;

/// Rows a JSON listing returns unless `limit` says otherwise.
const DEFAULT_LIMIT: usize = 100;
/// Most rows a JSON listing returns (CSV has no limit: it is streamed).
const MAX_LIMIT: usize = 10_000;
/// Bytes per chunk of a streamed CSV body.
const CHUNK: usize = 64 * 1024;
/// What a job name looks like: a plain file stem of the jobs directory (no path, not
/// hidden). [`job_file`] checks exactly this; the document publishes it.
const JOB_NAME: &str = "^[A-Za-z0-9_-][A-Za-z0-9._-]*$";

#[derive(OpenApi)]
#[openapi(
    info(
        title = "crier",
        description = "Scheduled mass messaging (SMS, email, customer portal): history, control and the portal inbox. Every /api route except this document (/api/openapi.json) needs `Authorization: Bearer <server.token>`. Filters take their values as listed here; the server also accepts them in any case, and `-` for `_` in `status` and `_` for `-` in `period`."
    ),
    modifiers(&BearerScheme)
)]
struct ApiDoc;

struct BearerScheme;

impl utoipa::Modify for BearerScheme {
    fn modify(&self, openapi: &mut utoipa::openapi::OpenApi) {
        // Cargo.toml names no licence; an empty one would be invalid.
        openapi.info.license = None;
        openapi
            .components
            .get_or_insert_with(Default::default)
            .add_security_scheme(
                "bearer",
                SecurityScheme::Http(Http::new(HttpAuthScheme::Bearer)),
            );
    }
}

/// The routes behind the bearer token, with their documentation.
fn secured() -> OpenApiRouter<Shared> {
    OpenApiRouter::with_openapi(ApiDoc::openapi())
        .routes(routes!(list_runs))
        .routes(routes!(get_run, delete_run))
        .routes(routes!(run_messages))
        .routes(routes!(list_messages))
        .routes(routes!(run_job))
        .routes(routes!(cancel_run))
        .routes(routes!(portal_inbox))
        .routes(routes!(portal_read))
}

/// The open routes, with their documentation.
fn open() -> OpenApiRouter<Shared> {
    OpenApiRouter::new()
        .routes(routes!(healthz))
        .routes(routes!(metrics))
        .routes(routes!(openapi_json))
}

/// The OpenAPI document of every route the server answers (except the webhooks, which
/// providers call, not people).
pub fn openapi() -> utoipa::openapi::OpenApi {
    let mut doc = secured().into_openapi();
    doc.merge(open().into_openapi());
    doc
}

/// Routes behind the bearer token.
pub fn routes() -> Router {
    secured().split_for_parts().0
}

type Router = axum::Router<Shared>;

/// Routes open to anyone who can reach the server (health, metrics, the API's document;
/// no data).
pub fn open_routes() -> Router {
    open().split_for_parts().0
}

// ---------------------------------------------------------------------------------------
// Request plumbing.

/// The `{"error": "..."}` body of every refusal.
#[derive(ToSchema)]
#[allow(dead_code)]
struct ErrorBody {
    error: String,
}

/// The query's fields, or a 400 naming the field: `format: unknown value `xml`, …`.
pub(super) fn query_of<T>(q: Result<Query<T>, QueryRejection>) -> Result<T, ApiError> {
    q.map(|Query(t)| t).map_err(|e| {
        let text = e.body_text();
        let text = text
            .strip_prefix("Failed to deserialize query string: ")
            .unwrap_or(&text);
        ApiError::bad_request(text.replace("unknown variant", "unknown value"))
    })
}

pub(super) fn path_of<T>(p: Result<Path<T>, PathRejection>) -> Result<T, ApiError> {
    p.map(|Path(t)| t)
        .map_err(|e| ApiError::bad_request(e.body_text()))
}

pub(super) fn run_id(s: &str) -> Result<RunId, ApiError> {
    s.parse().map_err(ApiError::bad_request)
}

/// A customer id: decimal digits only (no sign, no spaces), at most `u64::MAX`.
fn customer_id(s: &str) -> Result<u64, ApiError> {
    s.bytes()
        .all(|b| b.is_ascii_digit())
        .then(|| s.parse().ok())
        .flatten()
        .ok_or_else(|| ApiError::bad_request(format!("`{s}` is not a customer id (a number)")))
}

pub(super) fn ledger_error(e: LedgerError) -> ApiError {
    match e {
        LedgerError::NoSuchRun(_) | LedgerError::NoSuchMessage(_) => {
            ApiError::not_found(e.to_string())
        }
        e => ApiError::internal(e),
    }
}

/// Runs `f` on the blocking pool (the store is synchronous).
pub(super) async fn blocking<T: Send + 'static>(
    f: impl FnOnce() -> Result<T, ApiError> + Send + 'static,
) -> Result<T, ApiError> {
    tokio::task::spawn_blocking(f)
        .await
        .map_err(ApiError::internal)?
}

/// The rows of a JSON listing: `limit` checked against [`MAX_LIMIT`].
fn limit_of(limit: Option<usize>) -> Result<usize, ApiError> {
    match limit.unwrap_or(DEFAULT_LIMIT) {
        n @ 1..=MAX_LIMIT => Ok(n),
        n => Err(ApiError::bad_request(format!(
            "limit {n} is out of range (1 to {MAX_LIMIT}; use format=csv for everything)"
        ))),
    }
}

/// `json` (default) or `csv`.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Deserialize, ToSchema)]
#[serde(rename_all = "lowercase")]
enum Format {
    #[default]
    Json,
    Csv,
}

// ---------------------------------------------------------------------------------------
// Parameter schemas: each from the list or rule its parser uses, so the document says
// exactly what a handler accepts.

/// A string that is one of `values`.
fn one_of<'a>(values: impl IntoIterator<Item = &'a str>) -> Object {
    ObjectBuilder::new()
        .schema_type(Type::String)
        .enum_values(Some(values))
        .build()
}

/// A string matching `pattern`.
fn matching(pattern: impl Into<String>) -> ObjectBuilder {
    ObjectBuilder::new()
        .schema_type(Type::String)
        .pattern(Some(pattern))
}

/// `status`: [`ANY_STATUS`] or a [`RunStatus`].
fn run_status_schema() -> Object {
    one_of(std::iter::once(ANY_STATUS).chain(RunStatus::ALL.map(RunStatus::as_str)))
}

/// `state`: a [`MessageState`].
fn message_state_schema() -> Object {
    one_of(MessageState::ALL.map(MessageState::as_str))
}

/// `channel`: a [`Channel`].
fn channel_schema() -> Object {
    one_of(Channel::ALL.map(Channel::as_str))
}

/// `type`: a [`MessageType`].
fn message_type_schema() -> Object {
    one_of(MessageType::ALL.map(MessageType::as_str))
}

/// `period`: a [`Period`].
fn period_schema() -> Object {
    one_of(Period::ALL.map(Period::as_str))
}

/// `from`/`to`: what [`query::parse_bound`] reads: a date, a local date and time, or an
/// RFC 3339 instant.
fn bound_schema() -> AnyOfBuilder {
    let string = |format| {
        ObjectBuilder::new()
            .schema_type(Type::String)
            .format(Some(SchemaFormat::KnownFormat(format)))
    };
    AnyOfBuilder::new()
        .item(string(KnownFormat::Date))
        .item(matching(
            "^[0-9]{4}-(0[1-9]|1[0-2])-(0[1-9]|[12][0-9]|3[01])[T ]([01][0-9]|2[0-3]):[0-5][0-9](:[0-5][0-9])?$",
        ))
        .item(string(KnownFormat::DateTime))
}

/// A run id: [`RunId::PATTERN`], [`RunId::LEN`] characters.
fn run_id_schema() -> Object {
    matching(RunId::PATTERN)
        .min_length(Some(RunId::LEN))
        .max_length(Some(RunId::LEN))
        .build()
}

/// `recipient`: an id, or `KIND:ID` with a [`RecipientKind`] (what
/// [`query::parse_recipient`] reads). Ids of up to 19 digits: every one fits a `u64`.
fn recipient_schema() -> Object {
    let kinds = RecipientKind::ALL.map(RecipientKind::as_str).join("|");
    matching(format!("^(({kinds}):)?[0-9]{{1,19}}$")).build()
}

/// `limit` of a JSON listing: 1 to [`MAX_LIMIT`], [`DEFAULT_LIMIT`] unless given.
fn limit_schema() -> Object {
    ObjectBuilder::new()
        .schema_type(Type::Integer)
        .minimum(Some(1))
        .maximum(Some(MAX_LIMIT))
        .default(Some(DEFAULT_LIMIT.into()))
        .build()
}

/// A customer id: any `u64` ([`customer_id`]).
fn customer_id_schema() -> Object {
    ObjectBuilder::new()
        .schema_type(Type::Integer)
        .format(Some(SchemaFormat::Custom("uint64".into())))
        .minimum(Some(0))
        .maximum(Some(u64::MAX as usize))
        .build()
}

/// A job name: [`JOB_NAME`].
fn job_name_schema() -> Object {
    matching(JOB_NAME).build()
}

/// Each parameter schema as a type, for `#[param(value_type = …, inline)]`, which keeps
/// the field's doc comment and whether it is required.
macro_rules! schema_types {
    ($($name:ident => $schema:expr;)*) => {$(
        struct $name;
        impl utoipa::PartialSchema for $name {
            fn schema() -> utoipa::openapi::RefOr<utoipa::openapi::schema::Schema> {
                $schema.into()
            }
        }
        impl ToSchema for $name {}
    )*};
}

schema_types! {
    RunStatusFilter => run_status_schema();
    MessageStateValue => message_state_schema();
    ChannelValue => channel_schema();
    MessageTypeValue => message_type_schema();
    PeriodValue => period_schema();
    Bound => bound_schema();
    RunIdValue => run_id_schema();
    RecipientValue => recipient_schema();
    Limit => limit_schema();
    CustomerId => customer_id_schema();
    JobName => job_name_schema();
}

/// The `{id}` of the run routes.
#[derive(IntoParams)]
#[into_params(parameter_in = Path)]
#[allow(dead_code)]
struct RunPath {
    /// Run id (a ULID).
    #[param(value_type = RunIdValue, inline)]
    id: String,
}

/// The `{name}` of `POST /api/jobs/{name}/run`.
#[derive(IntoParams)]
#[into_params(parameter_in = Path)]
#[allow(dead_code)]
struct JobPath {
    /// Job name: the file jobs/<name>.yaml (or .yml).
    #[param(value_type = JobName, inline)]
    name: String,
}

/// The `{customer_id}` of the portal routes.
#[derive(IntoParams)]
#[into_params(parameter_in = Path)]
#[allow(dead_code)]
struct CustomerPath {
    /// Customer id.
    #[param(value_type = CustomerId, inline)]
    customer_id: u64,
}

/// The `{message_id}` of `POST …/messages/{message_id}/read`.
#[derive(IntoParams)]
#[into_params(parameter_in = Path)]
#[allow(dead_code)]
struct PortalMessagePath {
    /// Message id (RUN-SEQ), as the inbox lists it.
    message_id: String,
}

/// A [`Write`] that hands full chunks to a streamed response body; it fails once the
/// client has gone, which ends the export.
pub(super) struct ChunkWriter {
    tx: tokio::sync::mpsc::Sender<std::io::Result<Bytes>>,
    buf: Vec<u8>,
}

impl ChunkWriter {
    fn send(&mut self) -> std::io::Result<()> {
        let chunk = Bytes::from(std::mem::take(&mut self.buf));
        self.tx
            .blocking_send(Ok(chunk))
            .map_err(|_| std::io::Error::new(std::io::ErrorKind::BrokenPipe, "client went away"))
    }
}

impl Write for ChunkWriter {
    fn write(&mut self, data: &[u8]) -> std::io::Result<usize> {
        self.buf.extend_from_slice(data);
        if self.buf.len() >= CHUNK {
            self.send()?;
        }
        Ok(data.len())
    }

    fn flush(&mut self) -> std::io::Result<()> {
        if self.buf.is_empty() {
            return Ok(());
        }
        self.send()
    }
}

/// A `text/csv` response whose body `write` produces on the blocking pool. An error
/// part-way aborts the body, so a client never mistakes a cut export for a whole one.
pub(super) fn csv_response(
    filename: &str,
    write: impl FnOnce(&mut ChunkWriter) -> Result<u64, String> + Send + 'static,
) -> Response {
    let (tx, rx) = tokio::sync::mpsc::channel::<std::io::Result<Bytes>>(4);
    tokio::task::spawn_blocking(move || {
        let mut w = ChunkWriter {
            tx: tx.clone(),
            buf: Vec::with_capacity(CHUNK),
        };
        match write(&mut w).and_then(|n| w.flush().map(|()| n).map_err(|e| e.to_string())) {
            Ok(rows) => tracing::debug!(rows, "CSV export done."),
            Err(e) => {
                tracing::warn!(error = %e, "CSV export stopped.");
                let _ = tx.blocking_send(Err(std::io::Error::other(e)));
            }
        }
    });
    let stream = futures_util::stream::unfold(rx, |mut rx| async move {
        rx.recv().await.map(|chunk| (chunk, rx))
    });
    (
        [
            (header::CONTENT_TYPE, "text/csv; charset=utf-8".to_string()),
            (
                header::CONTENT_DISPOSITION,
                format!("attachment; filename=\"{filename}\""),
            ),
        ],
        Body::from_stream(stream),
    )
        .into_response()
}

/// Which messages a listing reads.
pub(super) enum Messages {
    /// A run's, in plan order (`crier history recipients`).
    OfRun(RunId, Option<MessageState>),
    /// Across runs, newest first (`crier logs`).
    Filtered(query::MessageFilter),
}

impl Messages {
    fn read<'a>(
        &'a self,
        ledger: &'a Ledger<'a>,
    ) -> Box<dyn Iterator<Item = Result<Message, LedgerError>> + 'a> {
        match self {
            Messages::OfRun(id, state) => ledger.messages_of(*id, *state),
            Messages::Filtered(filter) => query::messages(ledger, filter),
        }
    }
}

/// Messages as a JSON array (at most `limit`) or a streamed CSV.
async fn messages_response(
    state: Shared,
    format: Format,
    limit: usize,
    which: Messages,
    cells: Cells,
) -> Result<Response, ApiError> {
    match format {
        Format::Csv => Ok(csv_response("messages.csv", move |w| {
            let ledger = Ledger::new(state.store.as_ref());
            messages_csv(&ledger, which.read(&ledger), cells, w).map_err(|e| e.to_string())
        })),
        Format::Json => {
            let views = blocking(move || {
                let ledger = Ledger::new(state.store.as_ref());
                which
                    .read(&ledger)
                    .take(limit)
                    .map(|m| m.map(|m| MessageView::from(&m)))
                    .collect::<Result<Vec<_>, _>>()
                    .map_err(ledger_error)
            })
            .await?;
            Ok(Json(views).into_response())
        }
    }
}

// ---------------------------------------------------------------------------------------
// History.

/// Filters of `GET /api/runs` (the same as `crier history`).
#[derive(Debug, Default, Deserialize, IntoParams)]
#[serde(deny_unknown_fields)]
#[into_params(parameter_in = Query)]
struct RunsParams {
    /// `any` (every status but removed; the default) or one status.
    #[param(value_type = Option<RunStatusFilter>, inline)]
    status: Option<String>,
    /// A named period in the configured time zone; not with `from`/`to`.
    #[param(value_type = Option<PeriodValue>, inline)]
    period: Option<String>,
    /// Start of a custom range: YYYY-MM-DD or YYYY-MM-DDTHH:MM (local time) or RFC 3339;
    /// before `to`.
    #[param(value_type = Option<Bound>, inline)]
    from: Option<String>,
    /// End of a custom range (a date includes that whole day).
    #[param(value_type = Option<Bound>, inline)]
    to: Option<String>,
    /// Only runs of this job.
    job: Option<String>,
    /// json (default) or csv.
    #[param(inline)]
    format: Option<Format>,
    /// Most runs in a JSON answer (CSV has every row).
    #[param(value_type = Option<Limit>, inline)]
    limit: Option<usize>,
}

/// Runs, newest first.
#[utoipa::path(
    get,
    path = "/api/runs",
    tag = "history",
    params(RunsParams),
    responses(
        (status = 200, description = "Runs, newest first", content(
            (Vec<RunView> = "application/json"),
            (String = "text/csv")
        )),
        (status = 400, description = "A filter is malformed", body = ErrorBody),
        (status = 401, description = "No or wrong bearer token", body = ErrorBody),
    ),
    security(("bearer" = []))
)]
async fn list_runs(
    State(state): State<Shared>,
    params: Result<Query<RunsParams>, QueryRejection>,
) -> Result<Response, ApiError> {
    let p = query_of(params)?;
    let filter = RunQuery {
        status: p.status.as_deref(),
        period: p.period.as_deref(),
        from: p.from.as_deref(),
        to: p.to.as_deref(),
        job: p.job.as_deref(),
    }
    .filter(Face::Api, state.config.tz, Utc::now())
    .map_err(ApiError::bad_request)?;
    if p.format == Some(Format::Csv) {
        return Ok(csv_response("runs.csv", move |w| {
            let ledger = Ledger::new(state.store.as_ref());
            runs_csv(query::runs(&ledger, &filter), w).map_err(|e| e.to_string())
        }));
    }
    let limit = limit_of(p.limit)?;
    let views = blocking(move || {
        let ledger = Ledger::new(state.store.as_ref());
        query::runs(&ledger, &filter)
            .take(limit)
            .map(|r| r.map(|r| RunView::from(&r)))
            .collect::<Result<Vec<_>, _>>()
            .map_err(ledger_error)
    })
    .await?;
    Ok(Json(views).into_response())
}

/// A run with the message it sent.
#[derive(Debug, Serialize, ToSchema)]
struct RunDetail {
    #[serde(flatten)]
    run: RunView,
    /// The template or message text as used.
    body: String,
    subject: Option<String>,
}

/// One run (also a removed one: status `removed`).
#[utoipa::path(
    get,
    path = "/api/runs/{id}",
    tag = "history",
    params(RunPath),
    responses(
        (status = 200, description = "The run", body = RunDetail),
        (status = 400, description = "Not a run id", body = ErrorBody),
        (status = 401, description = "No or wrong bearer token", body = ErrorBody),
        (status = 404, description = "No such run", body = ErrorBody),
    ),
    security(("bearer" = []))
)]
async fn get_run(
    State(state): State<Shared>,
    id: Result<Path<String>, PathRejection>,
) -> Result<Json<RunDetail>, ApiError> {
    let id = run_id(&path_of(id)?)?;
    blocking(move || {
        let run = Ledger::new(state.store.as_ref())
            .run(id)
            .map_err(ledger_error)?;
        Ok(Json(RunDetail {
            run: RunView::from(&run),
            body: run.body,
            subject: run.subject,
        }))
    })
    .await
}

/// Filters of `GET /api/runs/{id}/messages` (the same as `crier history recipients`).
#[derive(Debug, Default, Deserialize, IntoParams)]
#[serde(deny_unknown_fields)]
#[into_params(parameter_in = Query)]
struct RunMessagesParams {
    /// Only messages in this state.
    #[param(value_type = Option<MessageStateValue>, inline)]
    state: Option<String>,
    /// json (default) or csv.
    #[param(inline)]
    format: Option<Format>,
    /// Most messages in a JSON answer (CSV has every row).
    #[param(value_type = Option<Limit>, inline)]
    limit: Option<usize>,
    /// CSV: every cell as stored (default false: a text cell starting with `=`, `+`, `-`,
    /// `@`, a tab or a CR gets a leading `'`, so a spreadsheet does not run it).
    raw: Option<bool>,
}

/// A run's messages, in plan order.
#[utoipa::path(
    get,
    path = "/api/runs/{id}/messages",
    tag = "history",
    params(RunPath, RunMessagesParams),
    responses(
        (status = 200, description = "The run's messages", content(
            (Vec<MessageView> = "application/json"),
            (String = "text/csv")
        )),
        (status = 400, description = "Not a run id, or a malformed filter", body = ErrorBody),
        (status = 401, description = "No or wrong bearer token", body = ErrorBody),
        (status = 404, description = "No such run", body = ErrorBody),
    ),
    security(("bearer" = []))
)]
async fn run_messages(
    State(state): State<Shared>,
    id: Result<Path<String>, PathRejection>,
    params: Result<Query<RunMessagesParams>, QueryRejection>,
) -> Result<Response, ApiError> {
    let id = run_id(&path_of(id)?)?;
    let p = query_of(params)?;
    let message_state = p
        .state
        .as_deref()
        .map(str::parse::<MessageState>)
        .transpose()
        .map_err(ApiError::bad_request)?;
    let limit = limit_of(p.limit)?;
    let st = state.clone();
    blocking(move || {
        Ledger::new(st.store.as_ref())
            .run(id)
            .map(drop)
            .map_err(ledger_error)
    })
    .await?;
    messages_response(
        state,
        p.format.unwrap_or_default(),
        limit,
        Messages::OfRun(id, message_state),
        Cells::raw(p.raw.unwrap_or_default()),
    )
    .await
}

/// Filters of `GET /api/messages` (the same as `crier logs`).
#[derive(Debug, Default, Deserialize, IntoParams)]
#[serde(deny_unknown_fields)]
#[into_params(parameter_in = Query)]
struct MessagesParams {
    /// Only messages on this channel.
    #[param(value_type = Option<ChannelValue>, inline)]
    channel: Option<String>,
    /// Only messages in this state.
    #[param(value_type = Option<MessageStateValue>, inline)]
    state: Option<String>,
    /// Real messages or send-as-tests.
    #[serde(rename = "type")]
    #[param(value_type = Option<MessageTypeValue>, inline)]
    kind: Option<String>,
    /// A named period in the configured time zone; not with `from`/`to`.
    #[param(value_type = Option<PeriodValue>, inline)]
    period: Option<String>,
    /// Start of a custom range: YYYY-MM-DD or YYYY-MM-DDTHH:MM (local time) or RFC 3339;
    /// before `to`.
    #[param(value_type = Option<Bound>, inline)]
    from: Option<String>,
    /// End of a custom range (a date includes that whole day).
    #[param(value_type = Option<Bound>, inline)]
    to: Option<String>,
    /// An email address, or a phone number valid in `default_region` in any local form
    /// (compared in E.164).
    phone: Option<String>,
    /// A recipient id (`lead:ID` for a lead).
    #[param(value_type = Option<RecipientValue>, inline)]
    recipient: Option<String>,
    /// Only messages of this run (listed even when the run is removed).
    #[param(value_type = Option<RunIdValue>, inline)]
    run: Option<String>,
    /// List the messages of removed runs too (default false).
    include_removed: Option<bool>,
    /// json (default) or csv.
    #[param(inline)]
    format: Option<Format>,
    /// Most messages in a JSON answer (CSV has every row).
    #[param(value_type = Option<Limit>, inline)]
    limit: Option<usize>,
    /// CSV: every cell as stored (default false: a text cell starting with `=`, `+`, `-`,
    /// `@`, a tab or a CR gets a leading `'`, so a spreadsheet does not run it).
    raw: Option<bool>,
}

/// Messages across runs, newest first.
#[utoipa::path(
    get,
    path = "/api/messages",
    tag = "history",
    params(MessagesParams),
    responses(
        (status = 200, description = "Messages, newest first", content(
            (Vec<MessageView> = "application/json"),
            (String = "text/csv")
        )),
        (status = 400, description = "A filter is malformed", body = ErrorBody),
        (status = 401, description = "No or wrong bearer token", body = ErrorBody),
    ),
    security(("bearer" = []))
)]
async fn list_messages(
    State(state): State<Shared>,
    params: Result<Query<MessagesParams>, QueryRejection>,
) -> Result<Response, ApiError> {
    let p = query_of(params)?;
    let config = &state.config;
    let filter = MessageQuery {
        channel: p.channel.as_deref(),
        state: p.state.as_deref(),
        kind: p.kind.as_deref(),
        period: p.period.as_deref(),
        from: p.from.as_deref(),
        to: p.to.as_deref(),
        phone: p.phone.as_deref(),
        recipient: p.recipient.as_deref(),
        run: p.run.as_deref(),
        include_removed: p.include_removed.unwrap_or_default(),
    }
    .filter(
        Face::Api,
        config.tz,
        config.region,
        &config.default_region,
        Utc::now(),
    )
    .map_err(ApiError::bad_request)?;
    let limit = limit_of(p.limit)?;
    messages_response(
        state.clone(),
        p.format.unwrap_or_default(),
        limit,
        Messages::Filtered(filter),
        Cells::raw(p.raw.unwrap_or_default()),
    )
    .await
}

// ---------------------------------------------------------------------------------------
// Control.

/// Options of `POST /api/jobs/{name}/run`.
#[derive(Debug, Default, Deserialize, IntoParams)]
#[serde(deny_unknown_fields)]
#[into_params(parameter_in = Query)]
struct RunJobParams {
    /// Plan without sending and answer with the preview counts.
    dry_run: Option<bool>,
}

/// A run that has started.
#[derive(Debug, Serialize, ToSchema)]
struct Started {
    run_id: String,
    job: String,
    /// Where to follow it.
    url: String,
}

/// What a run would do (`dry_run=true`).
#[derive(Debug, Serialize, ToSchema)]
struct DryRun {
    job: String,
    dry_run: bool,
    /// Each channel with the provider that would carry it.
    channels: Vec<ChannelProvider>,
    recipients: u64,
    to_send: u64,
    /// Messages that would be skipped, by reason.
    skipped: BTreeMap<String, u64>,
    /// SMS parts of the messages to send.
    sms_parts: u64,
    /// SMS messages to send by encoding.
    sms_encodings: BTreeMap<String, u64>,
    /// Source rows that could not be read.
    unreadable: u64,
}

#[derive(Debug, Serialize, ToSchema)]
struct ChannelProvider {
    channel: String,
    provider: String,
}

/// The job file `jobs_dir/<name>.yaml` (or `.yml`); names are plain file stems.
pub(super) fn job_file(dir: &std::path::Path, name: &str) -> Result<PathBuf, ApiError> {
    static PLAIN: std::sync::LazyLock<regex::Regex> =
        std::sync::LazyLock::new(|| regex::Regex::new(JOB_NAME).expect("job name pattern"));
    if !PLAIN.is_match(name) {
        return Err(ApiError::bad_request(format!(
            "`{name}` is not a job name (letters, digits, `-`, `_` and `.`)"
        )));
    }
    ["yaml", "yml"]
        .iter()
        .map(|ext| dir.join(format!("{name}.{ext}")))
        .find(|p| p.is_file())
        .ok_or_else(|| ApiError::not_found(format!("no job `{name}` in the jobs directory")))
}

/// Runs a job now (or previews it with `dry_run=true`).
#[utoipa::path(
    post,
    path = "/api/jobs/{name}/run",
    tag = "control",
    params(JobPath, RunJobParams),
    responses(
        (status = 202, description = "The run exists and is sending", body = Started),
        (status = 200, description = "Dry run: what the run would do", body = DryRun),
        (status = 400, description = "Malformed name or option", body = ErrorBody),
        (status = 401, description = "No or wrong bearer token", body = ErrorBody),
        (status = 404, description = "No such job", body = ErrorBody),
        (status = 409, description = "The job is already sending (a scheduled, API or command-line run)", body = ErrorBody),
        (status = 422, description = "The job is invalid or cannot be sent (e.g. an unknown provider)", body = ErrorBody),
    ),
    security(("bearer" = []))
)]
async fn run_job(
    State(state): State<Shared>,
    name: Result<Path<String>, PathRejection>,
    params: Result<Query<RunJobParams>, QueryRejection>,
) -> Result<Response, ApiError> {
    let name = path_of(name)?;
    let dry_run = query_of(params)?.dry_run.unwrap_or(false);
    let file = job_file(&state.jobs_dir, &name)?;
    let st = state.clone();
    let job = blocking(move || {
        crate::job::load(&file, &st.config, &crate::config::env::from_process)
            .map_err(|d| ApiError::new(StatusCode::UNPROCESSABLE_ENTITY, d.to_string()))
    })
    .await?;

    if dry_run {
        let st = state.clone();
        let p = blocking(move || {
            preview(&st.config, &job, st.store.as_ref(), 0, None).map_err(send_error)
        })
        .await?;
        let owned = |m: BTreeMap<&'static str, u64>| {
            m.into_iter()
                .map(|(k, v)| (k.to_string(), v))
                .collect::<BTreeMap<_, _>>()
        };
        return Ok(Json(DryRun {
            job: name,
            dry_run: true,
            channels: p
                .channels
                .into_iter()
                .map(|(c, provider)| ChannelProvider {
                    channel: c.to_string(),
                    provider,
                })
                .collect(),
            recipients: p.recipients,
            to_send: p.to_send,
            skipped: owned(p.skipped),
            sms_parts: p.parts,
            sms_encodings: owned(p.by_encoding),
            unreadable: p.unreadable.len() as u64,
        })
        .into_response());
    }

    let id = start_run(&state, job, Trigger::Api).await?;
    state
        .metrics
        .api_runs_started
        .fetch_add(1, std::sync::atomic::Ordering::Relaxed);
    tracing::info!(job = %name, run = %id, "Run started through the API.");
    let url = format!("/api/runs/{id}");
    Ok((
        StatusCode::ACCEPTED,
        [(header::LOCATION, url.clone())],
        Json(Started {
            run_id: id.to_string(),
            job: name,
            url,
        }),
    )
        .into_response())
}

/// Starts sending `job` on the blocking pool and answers once its run exists (or with
/// why it never came to exist); the API and the console start runs this way.
pub(super) async fn start_run(
    state: &Shared,
    job: crate::job::Job,
    trigger: Trigger,
) -> Result<RunId, ApiError> {
    start_run_with(state, job, trigger, SendOptions::default()).await
}

/// [`start_run`] with more of the engine's options (the console's "Retry failed").
pub(crate) async fn start_run_with(
    state: &Shared,
    job: crate::job::Job,
    trigger: Trigger,
    options: SendOptions,
) -> Result<RunId, ApiError> {
    let (tx, rx) = tokio::sync::oneshot::channel::<RunId>();
    let tx = Mutex::new(Some(tx));
    let options = SendOptions {
        trigger: Some(trigger),
        // Claimed as this process's worker (PostgreSQL).
        holder: options
            .holder
            .or_else(|| state.worker.as_ref().map(|w| w.holder())),
        on_run: Some(Arc::new(move |run: &Run| {
            if let Some(tx) = tx.lock().unwrap_or_else(|e| e.into_inner()).take() {
                let _ = tx.send(run.id);
            }
        })),
        ..options
    };
    let st = state.clone();
    let task = tokio::task::spawn_blocking(move || {
        let result = send(&job, &st.config, st.store.as_ref(), &options);
        if let Err(e) = &result {
            tracing::error!(job = %job.name, error = %e, "Run started through the server failed.")
        }
        result
    });
    match rx.await {
        Ok(id) => Ok(id),
        // The run never came to exist: say why.
        Err(_) => match task.await {
            Ok(Err(e)) => Err(send_error(e)),
            Ok(Ok(_)) => Err(ApiError::internal("the run ended without being recorded")),
            Err(e) => Err(ApiError::internal(e)),
        },
    }
}

pub(super) fn send_error(e: SendError) -> ApiError {
    match e {
        SendError::Ledger(_) | SendError::Store(_) | SendError::Runtime(_) => ApiError::internal(e),
        SendError::Busy { .. } => ApiError::new(StatusCode::CONFLICT, e.to_string()),
        e => ApiError::new(StatusCode::UNPROCESSABLE_ENTITY, e.to_string()),
    }
}

/// The result of a cancel.
#[derive(Debug, Serialize, ToSchema)]
struct Cancelled {
    run: RunView,
    /// Queued messages that will now never be sent.
    cancelled_messages: u64,
}

/// Cancels a run: every message still queued is cancelled.
#[utoipa::path(
    post,
    path = "/api/runs/{id}/cancel",
    tag = "control",
    params(RunPath),
    responses(
        (status = 200, description = "Cancelled", body = Cancelled),
        (status = 400, description = "Not a run id", body = ErrorBody),
        (status = 401, description = "No or wrong bearer token", body = ErrorBody),
        (status = 404, description = "No such run", body = ErrorBody),
    ),
    security(("bearer" = []))
)]
async fn cancel_run(
    State(state): State<Shared>,
    id: Result<Path<String>, PathRejection>,
) -> Result<Json<Cancelled>, ApiError> {
    let id = run_id(&path_of(id)?)?;
    blocking(move || {
        let ledger = Ledger::new(state.store.as_ref());
        ledger.run(id).map_err(ledger_error)?;
        let n = ledger.cancel(id).map_err(ledger_error)?;
        ledger.flush().map_err(ledger_error)?;
        let run = ledger.run(id).map_err(ledger_error)?;
        tracing::info!(run = %id, cancelled = n, "Run cancelled through the API.");
        Ok(Json(Cancelled {
            run: RunView::from(&run),
            cancelled_messages: n,
        }))
    })
    .await
}

/// Removes a run (a soft delete).
///
/// The run becomes `removed`: it leaves the listings (`GET /api/runs` shows it only with
/// `status=removed`) but is kept for audit, so `GET /api/runs/{id}` and
/// `GET /api/runs/{id}/messages` still answer, with status `removed`. Removing it again
/// changes nothing. Only `crier history delete RUN --purge` deletes a run.
#[utoipa::path(
    delete,
    path = "/api/runs/{id}",
    tag = "control",
    params(RunPath),
    responses(
        (status = 200, description = "Removed (soft): the run, status `removed`, still readable", body = RunView),
        (status = 400, description = "Not a run id", body = ErrorBody),
        (status = 401, description = "No or wrong bearer token", body = ErrorBody),
        (status = 404, description = "No such run", body = ErrorBody),
    ),
    security(("bearer" = []))
)]
async fn delete_run(
    State(state): State<Shared>,
    id: Result<Path<String>, PathRejection>,
) -> Result<Json<RunView>, ApiError> {
    let id = run_id(&path_of(id)?)?;
    blocking(move || {
        let ledger = Ledger::new(state.store.as_ref());
        ledger.run(id).map_err(ledger_error)?;
        let run = ledger.remove(id).map_err(ledger_error)?;
        ledger.flush().map_err(ledger_error)?;
        tracing::info!(run = %id, "Run removed through the API.");
        Ok(Json(RunView::from(&run)))
    })
    .await
}

// ---------------------------------------------------------------------------------------
// The customer-portal inbox.

/// One message of a customer's portal inbox.
#[derive(Debug, Serialize, ToSchema)]
struct PortalMessage {
    /// crier's message id.
    id: String,
    title: Option<String>,
    body: String,
    created_at: String,
    /// When the customer read it; `null` while unread.
    read_at: Option<String>,
}

/// A customer's portal inbox.
#[derive(Debug, Serialize, ToSchema)]
struct PortalInbox {
    customer_id: u64,
    unread: u64,
    /// Oldest first.
    messages: Vec<PortalMessage>,
}

/// A customer's portal inbox, oldest first.
#[utoipa::path(
    get,
    path = "/api/portal/{customer_id}/messages",
    tag = "portal",
    params(CustomerPath),
    responses(
        (status = 200, description = "The inbox (empty for a customer with no messages)", body = PortalInbox),
        (status = 400, description = "Not a customer id", body = ErrorBody),
        (status = 401, description = "No or wrong bearer token", body = ErrorBody),
    ),
    security(("bearer" = []))
)]
async fn portal_inbox(
    State(state): State<Shared>,
    customer: Result<Path<String>, PathRejection>,
) -> Result<Json<PortalInbox>, ApiError> {
    let customer = customer_id(&path_of(customer)?)?;
    blocking(move || {
        let items = Inbox::new(state.store.history())
            .list(customer)
            .map_err(ApiError::internal)?;
        Ok(Json(PortalInbox {
            customer_id: customer,
            unread: items.iter().filter(|i| i.read_at.is_none()).count() as u64,
            messages: items
                .into_iter()
                .map(|i| PortalMessage {
                    id: i.id,
                    title: i.title,
                    body: i.body,
                    created_at: iso(i.created_at),
                    read_at: i.read_at.map(iso),
                })
                .collect(),
        }))
    })
    .await
}

/// A message marked read.
#[derive(Debug, Serialize, ToSchema)]
struct MarkedRead {
    id: String,
    read_at: String,
}

/// Marks a portal message read (reading twice keeps the first time).
#[utoipa::path(
    post,
    path = "/api/portal/{customer_id}/messages/{message_id}/read",
    tag = "portal",
    params(CustomerPath, PortalMessagePath),
    responses(
        (status = 200, description = "Read", body = MarkedRead),
        (status = 400, description = "Not a customer id", body = ErrorBody),
        (status = 401, description = "No or wrong bearer token", body = ErrorBody),
        (status = 404, description = "The customer has no such message", body = ErrorBody),
    ),
    security(("bearer" = []))
)]
async fn portal_read(
    State(state): State<Shared>,
    path: Result<Path<(String, String)>, PathRejection>,
) -> Result<Json<MarkedRead>, ApiError> {
    let (customer, message) = path_of(path)?;
    let customer = customer_id(&customer)?;
    blocking(move || {
        let inbox = Inbox::new(state.store.history());
        if !inbox
            .mark_read(customer, &message, Utc::now().timestamp_millis())
            .map_err(ApiError::internal)?
        {
            return Err(ApiError::not_found(format!(
                "customer {customer} has no message {message} in the portal inbox"
            )));
        }
        state.store.flush().map_err(ApiError::internal)?;
        let read_at = inbox
            .list(customer)
            .map_err(ApiError::internal)?
            .into_iter()
            .find(|i| i.id == message)
            .and_then(|i| i.read_at)
            .unwrap_or_default();
        Ok(Json(MarkedRead {
            id: message,
            read_at: iso(read_at),
        }))
    })
    .await
}

// ---------------------------------------------------------------------------------------
// Open routes.

/// Health of the server's parts.
#[derive(Debug, Serialize, ToSchema)]
struct Health {
    /// `ok` when every part is.
    status: String,
    /// `ok`, or why the store cannot be read.
    store: String,
    /// `ok` under `crier run` while its scheduler is alive; `not running` under
    /// `crier serve` (which has none) or after the scheduler stopped.
    scheduler: String,
    /// `ok` while this `crier run` heartbeats as a worker on a PostgreSQL store, or why
    /// not (the database lost for longer than the lease); `none` when it is no worker.
    worker: String,
}

/// Is the server well? 200 when the store answers, else 503.
#[utoipa::path(
    get,
    path = "/healthz",
    tag = "operations",
    responses(
        (status = 200, description = "Healthy", body = Health),
        (status = 503, description = "The store cannot be read, or this worker lost its database", body = Health),
    )
)]
async fn healthz(State(state): State<Shared>) -> Response {
    let scheduler = match &state.scheduler {
        Some(alive) if alive.load(std::sync::atomic::Ordering::SeqCst) => "ok",
        _ => "not running",
    };
    let worker = match &state.worker {
        None => Ok("none".to_string()),
        Some(w) => w.health().map(|()| "ok".to_string()),
    };
    let store = blocking(move || state.store.history().ping().map_err(ApiError::internal)).await;
    let (code, status, store, worker) = match (store, worker) {
        (Ok(()), Ok(worker)) => (StatusCode::OK, "ok", "ok".to_string(), worker),
        (Ok(()), Err(why)) => (
            StatusCode::SERVICE_UNAVAILABLE,
            "unavailable",
            "ok".to_string(),
            why,
        ),
        (Err(e), worker) => (
            StatusCode::SERVICE_UNAVAILABLE,
            "unavailable",
            e.message,
            worker.unwrap_or_else(|why| why),
        ),
    };
    (
        code,
        Json(Health {
            status: status.into(),
            store,
            scheduler: scheduler.into(),
            worker,
        }),
    )
        .into_response()
}

/// Prometheus metrics (text format).
#[utoipa::path(
    get,
    path = "/metrics",
    tag = "operations",
    responses((status = 200, description = "Prometheus text exposition format", body = String, content_type = "text/plain"))
)]
async fn metrics(State(state): State<Shared>) -> Result<Response, ApiError> {
    let text = blocking(move || {
        let ledger = Ledger::new(state.store.as_ref());
        let mut text = super::metrics::render(&state.metrics, &ledger).map_err(ledger_error)?;
        if let Some(cluster) = state.store.cluster() {
            super::metrics::render_workers(&mut text, cluster).map_err(ApiError::internal)?;
        }
        Ok(text)
    })
    .await?;
    Ok((
        [(
            header::CONTENT_TYPE,
            "text/plain; version=0.0.4; charset=utf-8",
        )],
        text,
    )
        .into_response())
}

/// This document.
#[utoipa::path(
    get,
    path = "/api/openapi.json",
    tag = "operations",
    responses((status = 200, description = "The OpenAPI 3.1 document of this API"))
)]
async fn openapi_json() -> Response {
    static DOC: std::sync::OnceLock<String> = std::sync::OnceLock::new();
    let doc = DOC.get_or_init(|| openapi().to_json().unwrap_or_default());
    ([(header::CONTENT_TYPE, "application/json")], doc.clone()).into_response()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn job_names_are_plain_file_stems_in_the_jobs_directory() {
        let dir = tempfile::tempdir().unwrap();
        std::fs::write(dir.path().join("welcome.yaml"), "x").unwrap();
        std::fs::write(dir.path().join("old.yml"), "x").unwrap();
        assert_eq!(
            job_file(dir.path(), "welcome").unwrap(),
            dir.path().join("welcome.yaml")
        );
        assert_eq!(
            job_file(dir.path(), "old").unwrap(),
            dir.path().join("old.yml")
        );
        for bad in ["", "../welcome", ".hidden", "a/b", "a b", "wel\\come"] {
            let e = job_file(dir.path(), bad).unwrap_err();
            assert_eq!(e.status, StatusCode::BAD_REQUEST, "{bad}");
        }
        assert_eq!(
            job_file(dir.path(), "missing").unwrap_err().status,
            StatusCode::NOT_FOUND
        );
    }

    #[test]
    fn json_listings_are_capped() {
        assert_eq!(limit_of(None).unwrap(), DEFAULT_LIMIT);
        assert_eq!(limit_of(Some(MAX_LIMIT)).unwrap(), MAX_LIMIT);
        assert!(limit_of(Some(0)).is_err());
        assert!(limit_of(Some(MAX_LIMIT + 1)).is_err());
    }
}
