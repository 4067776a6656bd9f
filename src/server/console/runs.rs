//! History (`/runs`), a run (`/runs/{id}`) with its live progress (SSE snapshots and a
//! polling fallback), its breakdowns, its actions (cancel, remove, export), and the
//! dashboard (`/`).

use std::convert::Infallible;
use std::time::Duration;

use axum::Extension;
use axum::extract::rejection::{PathRejection, QueryRejection};
use axum::extract::{Path, Query, State};
use axum::http::StatusCode;
use axum::response::sse::{Event, KeepAlive, Sse};
use axum::response::{IntoResponse, Response};
use chrono::Utc;
use serde::{Deserialize, Serialize};

use super::view::{self, RunRow};
use super::{Console, Ctx, PageResult, fragment, page};
use crate::history::export::{Cells, messages_csv};
use crate::history::ledger::{Ledger, LedgerError};
use crate::history::query::{self, ANY_STATUS, Face, Period, RunFilter, RunQuery};
use crate::history::report::{self, Field};
use crate::history::{MessageState, Run, RunId, RunStatus, now_ms};
use crate::server::ApiError;
use crate::server::api::{blocking, csv_response, ledger_error, path_of, query_of, run_id};

/// What the event stream remembers once the last snapshot went (no snapshot is empty).
const DONE: &str = "";
/// Runs per page of the history.
const PAGE: usize = 50;
/// How often the live progress is read and sent.
const TICK: Duration = Duration::from_millis(700);

/// The history's filters, as in the URL (the same as `GET /api/runs`).
#[derive(Debug, Default, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub(super) struct RunsParams {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    status: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    period: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    from: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    to: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    job: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    page: Option<usize>,
}

/// An empty form field means "not set".
fn given(s: &Option<String>) -> Option<&str> {
    s.as_deref().map(str::trim).filter(|s| !s.is_empty())
}

#[derive(Serialize)]
pub(super) struct Choice {
    value: &'static str,
    label: &'static str,
}

fn status_choices() -> Vec<Choice> {
    std::iter::once(Choice {
        value: ANY_STATUS,
        label: "Any",
    })
    .chain(RunStatus::ALL.into_iter().map(|s| Choice {
        value: s.as_str(),
        label: view::status_label(s),
    }))
    .collect()
}

pub(super) fn period_choices() -> Vec<Choice> {
    Period::ALL
        .into_iter()
        .map(|p| Choice {
            value: p.as_str(),
            label: match p {
                Period::Today => "Today",
                Period::Yesterday => "Yesterday",
                Period::Last7Days => "Last 7 days",
                Period::Last30Days => "Last 30 days",
                Period::ThisMonth => "This month",
                Period::LastMonth => "Last month",
            },
        })
        .collect()
}

#[derive(Serialize)]
struct RunsPage {
    runs: Vec<RunRow>,
    status: String,
    period: String,
    from: String,
    to: String,
    job: String,
    error: Option<String>,
    statuses: Vec<Choice>,
    periods: Vec<Choice>,
    page: usize,
    prev: Option<String>,
    next: Option<String>,
    any_live: bool,
}

/// The URL of the history with `p`'s filters at page `n`.
fn runs_url(p: &RunsParams, n: usize) -> String {
    let mut q = form_urlencoded::Serializer::new(String::new());
    for (k, v) in [
        ("status", &p.status),
        ("period", &p.period),
        ("from", &p.from),
        ("to", &p.to),
        ("job", &p.job),
    ] {
        if let Some(v) = given(v) {
            q.append_pair(k, v);
        }
    }
    if n > 1 {
        q.append_pair("page", &n.to_string());
    }
    let q = q.finish();
    if q.is_empty() {
        "/runs".into()
    } else {
        format!("/runs?{q}")
    }
}

pub(super) async fn list(
    State(c): State<Console>,
    Extension(ctx): Extension<Ctx>,
    params: Result<Query<RunsParams>, QueryRejection>,
) -> PageResult {
    let p = query_of(params)?;
    let tz = c.app.config.tz;
    let filter = RunQuery {
        status: given(&p.status),
        period: given(&p.period),
        from: given(&p.from),
        to: given(&p.to),
        job: given(&p.job),
    }
    .filter(Face::Api, tz, Utc::now());
    let n = p.page.unwrap_or(1).max(1);
    let (runs, error, more) = match filter {
        Err(e) => (Vec::new(), Some(e), false),
        Ok(filter) => {
            let app = c.app.clone();
            let mut rows = blocking(move || {
                let ledger = Ledger::new(app.store.as_ref());
                let now = now_ms();
                query::runs(&ledger, &filter)
                    .skip((n - 1) * PAGE)
                    .take(PAGE + 1)
                    .map(|r| r.map(|r| RunRow::new(&r, tz, now)))
                    .collect::<Result<Vec<_>, _>>()
                    .map_err(ledger_error)
            })
            .await?;
            let more = rows.len() > PAGE;
            rows.truncate(PAGE);
            (rows, None, more)
        }
    };
    let data = RunsPage {
        any_live: runs.iter().any(|r| r.live),
        runs,
        status: given(&p.status).unwrap_or(ANY_STATUS).to_string(),
        period: given(&p.period).unwrap_or_default().to_string(),
        from: given(&p.from).unwrap_or_default().to_string(),
        to: given(&p.to).unwrap_or_default().to_string(),
        job: given(&p.job).unwrap_or_default().to_string(),
        error,
        statuses: status_choices(),
        periods: period_choices(),
        page: n,
        prev: (n > 1).then(|| runs_url(&p, n - 1)),
        next: more.then(|| runs_url(&p, n + 1)),
    };
    let mut r = page(&ctx, "runs.html", &data);
    if data.error.is_some() {
        *r.status_mut() = StatusCode::BAD_REQUEST;
    }
    Ok(r)
}

// ---------------------------------------------------------------------------------------
// One run.

/// A tile: one state's count, linking to those messages.
#[derive(Serialize)]
struct Tile {
    state: &'static str,
    count: u64,
    error: bool,
}

/// A run's progress: what the live part of its page shows, a whole snapshot each time.
#[derive(Serialize)]
pub(super) struct Progress {
    run: RunRow,
    tiles: Vec<Tile>,
    /// Messages settled per second since the run started.
    rate: Option<String>,
    eta: Option<String>,
}

fn progress_of(run: &Run, tz: chrono_tz::Tz) -> Progress {
    let now = now_ms();
    let row = RunRow::new(run, tz, now);
    let tiles = MessageState::ALL
        .into_iter()
        .filter(|s| *s != MessageState::Sending || run.counters.get(*s) > 0)
        .map(|s| Tile {
            state: s.as_str(),
            count: run.counters.get(s),
            error: s.is_error(),
        })
        .collect();
    let elapsed = run
        .started_at
        .map(|s| (run.finished_at.unwrap_or(now) - s).max(1));
    let settled = row.done - run.counters.get(MessageState::Skipped);
    let rate = elapsed
        .filter(|_| settled > 0)
        .map(|ms| settled as f64 * 1000.0 / ms as f64);
    let pending = run.counters.pending();
    Progress {
        eta: rate
            .filter(|r| *r > 0.0 && row.live && pending > 0)
            .map(|r| view::duration((pending as f64 / r * 1000.0) as i64)),
        rate: rate.map(|r| format!("{r:.1}")),
        run: row,
        tiles,
    }
}

#[derive(Serialize)]
struct RunPage {
    progress: Progress,
    body: String,
    subject: Option<String>,
    fields: Vec<&'static str>,
}

async fn read_run(c: &Console, id: RunId) -> Result<Run, ApiError> {
    let app = c.app.clone();
    blocking(move || {
        Ledger::new(app.store.as_ref())
            .run(id)
            .map_err(ledger_error)
    })
    .await
}

pub(super) async fn show(
    State(c): State<Console>,
    Extension(ctx): Extension<Ctx>,
    id: Result<Path<String>, PathRejection>,
) -> PageResult {
    let id = run_id(&path_of(id)?)?;
    let run = read_run(&c, id).await?;
    let data = RunPage {
        progress: progress_of(&run, c.app.config.tz),
        body: run.body,
        subject: run.subject,
        fields: Field::ALL.map(Field::as_str).to_vec(),
    };
    Ok(page(&ctx, "run.html", &data))
}

/// The live part alone (the polling fallback).
pub(super) async fn progress(
    State(c): State<Console>,
    Extension(ctx): Extension<Ctx>,
    id: Result<Path<String>, PathRejection>,
) -> PageResult {
    let id = run_id(&path_of(id)?)?;
    let run = read_run(&c, id).await?;
    Ok(fragment(
        &ctx,
        "progress.html",
        &progress_of(&run, c.app.config.tz),
    ))
}

/// Server-Sent Events: a `progress` event with the whole live part every tick while the
/// run sends, then a last one and `done`. A lost event costs nothing: the next is whole.
pub(super) async fn events(
    State(c): State<Console>,
    Extension(ctx): Extension<Ctx>,
    id: Result<Path<String>, PathRejection>,
) -> Result<Response, super::PageError> {
    let id = run_id(&path_of(id)?)?;
    read_run(&c, id).await?;
    let stream =
        futures_util::stream::unfold(Some((c, ctx, None::<String>)), move |st| async move {
            let (c, ctx, last) = st?;
            loop {
                let run = match read_run(&c, id).await {
                    Ok(run) => run,
                    Err(_) => {
                        return Some((
                            Ok::<_, Infallible>(Event::default().event("done").data("gone")),
                            None,
                        ));
                    }
                };
                let p = progress_of(&run, c.app.config.tz);
                let live = p.run.live;
                let html = super::render_text(&ctx, "progress.html", &p);
                if last.as_deref() == Some(DONE) {
                    return Some((Ok(Event::default().event("done").data("done")), None));
                }
                if !live {
                    // The last snapshot; `done` follows on the next poll of the stream.
                    let event = Event::default().event("progress").data(html);
                    return Some((Ok(event), Some((c, ctx, Some(DONE.into())))));
                }
                if last.as_deref() != Some(html.as_str()) {
                    let event = Event::default().event("progress").data(html.clone());
                    return Some((Ok(event), Some((c, ctx, Some(html)))));
                }
                tokio::time::sleep(TICK).await;
            }
        });
    Ok(Sse::new(stream)
        .keep_alive(KeepAlive::default())
        .into_response())
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct BreakdownParams {
    by: Option<String>,
}

#[derive(Serialize)]
struct BreakdownRow {
    value: String,
    total: u64,
    sent: u64,
    delivered: u64,
    failed: u64,
    unknown: u64,
    skipped: u64,
    pending: u64,
}

#[derive(Serialize)]
struct BreakdownPage {
    id: String,
    by: &'static str,
    fields: Vec<&'static str>,
    rows: Vec<BreakdownRow>,
    skipped: Vec<(String, u64)>,
    chart: String,
}

/// Outcomes by a recipient field, skips by reason, and the sends over time.
pub(super) async fn breakdown(
    State(c): State<Console>,
    Extension(ctx): Extension<Ctx>,
    id: Result<Path<String>, PathRejection>,
    params: Result<Query<BreakdownParams>, QueryRejection>,
) -> PageResult {
    let id = run_id(&path_of(id)?)?;
    let by: Field = query_of(params)?
        .by
        .as_deref()
        .unwrap_or("location")
        .parse()
        .map_err(ApiError::bad_request)?;
    let app = c.app.clone();
    let data = blocking(move || {
        let store = app.store.as_ref();
        let ledger = Ledger::new(store);
        let run = ledger.run(id).map_err(ledger_error)?;
        let rows = report::breakdown(ledger.messages_of(id, None), by, |kind, rid| {
            store.recipient(kind, rid).ok().flatten()
        })
        .map_err(ledger_error)?;
        let skipped =
            report::skipped_by_reason(ledger.messages_of(id, Some(MessageState::Skipped)))
                .map_err(ledger_error)?;
        let from = run.started_at.unwrap_or(run.created_at);
        let to = run.finished_at.unwrap_or_else(now_ms).max(from + 1000) + 1;
        let series =
            report::timeline(ledger.messages_of(id, None), (from, to), 30).map_err(ledger_error)?;
        Ok(BreakdownPage {
            id: id.to_string(),
            by: by.as_str(),
            fields: Field::ALL.map(Field::as_str).to_vec(),
            rows: rows
                .into_iter()
                .map(|(value, c)| BreakdownRow {
                    value,
                    total: c.total(),
                    sent: c.get(MessageState::Sent)
                        + c.get(MessageState::Delivered)
                        + c.get(MessageState::Undelivered),
                    delivered: c.get(MessageState::Delivered),
                    failed: c.get(MessageState::Failed) + c.get(MessageState::Expired),
                    unknown: c.get(MessageState::Unknown),
                    skipped: c.get(MessageState::Skipped),
                    pending: c.pending(),
                })
                .collect(),
            skipped,
            chart: super::chart::lines(
                &series,
                &["sent", "delivered", "failed"],
                &view::at(app.config.tz, from),
                &view::at(app.config.tz, to),
            ),
        })
    })
    .await?;
    Ok(fragment(&ctx, "breakdown.html", &data))
}

/// Changes a run through the ledger (`change` on the existing run, then a flush), then
/// shows its page: the console's cancel and remove.
async fn change_run(
    c: &Console,
    ctx: &Ctx,
    id: Result<Path<String>, PathRejection>,
    change: fn(&Ledger, RunId) -> Result<(), LedgerError>,
) -> PageResult {
    let id = run_id(&path_of(id)?)?;
    let app = c.app.clone();
    blocking(move || {
        let ledger = Ledger::new(app.store.as_ref());
        ledger.run(id).map_err(ledger_error)?;
        change(&ledger, id).map_err(ledger_error)?;
        ledger.flush().map_err(ledger_error)
    })
    .await?;
    Ok(super::see_other(ctx, &format!("/runs/{id}")))
}

pub(super) async fn cancel(
    State(c): State<Console>,
    Extension(ctx): Extension<Ctx>,
    id: Result<Path<String>, PathRejection>,
) -> PageResult {
    change_run(&c, &ctx, id, |ledger, id| {
        let n = ledger.cancel(id)?;
        tracing::info!(run = %id, cancelled = n, "Run cancelled through the console.");
        Ok(())
    })
    .await
}

/// *Retry failed*: a new run of the job that sends this run's failed and expired
/// messages again (the engine's `retry_failed`, as `crier send JOB --retry-failed RUN`),
/// then its page.
pub(super) async fn retry(
    State(c): State<Console>,
    Extension(ctx): Extension<Ctx>,
    id: Result<Path<String>, PathRejection>,
) -> PageResult {
    let id = run_id(&path_of(id)?)?;
    let old = read_run(&c, id).await?;
    let job = super::jobs::load_one(&c, &old.job).await?;
    let options = crate::engine::send::SendOptions {
        retry_failed: Some(id),
        ..Default::default()
    };
    let new =
        crate::server::api::start_run_with(&c.app, job, crate::history::Trigger::Api, options)
            .await?;
    tracing::info!(run = %new, retry_of = %id, "Failed messages retried through the console.");
    Ok(super::see_other(&ctx, &format!("/runs/{new}")))
}

pub(super) async fn remove(
    State(c): State<Console>,
    Extension(ctx): Extension<Ctx>,
    id: Result<Path<String>, PathRejection>,
) -> PageResult {
    change_run(&c, &ctx, id, |ledger, id| {
        ledger.remove(id)?;
        tracing::info!(run = %id, "Run removed through the console.");
        Ok(())
    })
    .await
}

/// The run's messages as CSV (what `GET /api/runs/{id}/messages?format=csv` sends).
pub(super) async fn export(
    State(c): State<Console>,
    id: Result<Path<String>, PathRejection>,
) -> PageResult {
    let id = run_id(&path_of(id)?)?;
    read_run(&c, id).await?;
    let app = c.app.clone();
    Ok(csv_response(&format!("run-{id}.csv"), move |w| {
        let ledger = Ledger::new(app.store.as_ref());
        messages_csv(&ledger, ledger.messages_of(id, None), Cells::raw(false), w)
            .map_err(|e| e.to_string())
    }))
}

// ---------------------------------------------------------------------------------------
// The dashboard.

#[derive(Serialize)]
struct NextFire {
    job: String,
    at: String,
}

#[derive(Serialize)]
struct Dashboard {
    live: Vec<RunRow>,
    recent: Vec<RunRow>,
    next: Vec<NextFire>,
    chart: String,
    days: u32,
}

/// Days the dashboard's chart covers.
const DAYS: u32 = 30;

pub(super) async fn dashboard(
    State(c): State<Console>,
    Extension(ctx): Extension<Ctx>,
) -> PageResult {
    let app = c.app.clone();
    let tz = app.config.tz;
    let jobs = super::jobs::load_jobs(&app).await?;
    let mut next: Vec<(chrono::DateTime<Utc>, String)> = jobs
        .iter()
        .filter(|j| j.enabled)
        .filter_map(|j| {
            j.schedule
                .as_ref()
                .and_then(|s| s.next_after(Utc::now()))
                .map(|t| (t, j.name.clone()))
        })
        .collect();
    next.sort();
    let data = blocking(move || {
        let ledger = Ledger::new(app.store.as_ref());
        let now = now_ms();
        let any = RunFilter::default();
        let recent = query::runs(&ledger, &any)
            .take(10)
            .map(|r| r.map(|r| RunRow::new(&r, tz, now)))
            .collect::<Result<Vec<_>, _>>()
            .map_err(ledger_error)?;
        let processing = RunFilter {
            status: Some(RunStatus::Processing),
            ..RunFilter::default()
        };
        let live = query::runs(&ledger, &processing)
            .take(20)
            .map(|r| r.map(|r| RunRow::new(&r, tz, now)))
            .collect::<Result<Vec<_>, _>>()
            .map_err(ledger_error)?;
        let today = Utc::now();
        let month = RunFilter {
            range: Some(Period::Last30Days.range(tz, today)),
            ..RunFilter::default()
        };
        let days =
            report::per_day(query::runs(&ledger, &month), tz, today, DAYS).map_err(ledger_error)?;
        Ok((recent, live, days))
    })
    .await?;
    let (recent, live, days) = data;
    let chart = super::chart::stacked_days(&days);
    Ok(page(
        &ctx,
        "dashboard.html",
        &Dashboard {
            live,
            recent,
            next: next
                .into_iter()
                .take(5)
                .map(|(t, job)| NextFire {
                    job,
                    at: crate::job::schedule::zoned(t, tz),
                })
                .collect(),
            chart,
            days: DAYS,
        },
    ))
}
