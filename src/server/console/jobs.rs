//! Jobs (`/jobs`): every job file with its schedule, next fires, last run and
//! validation errors; a job's page with **Preview**, **Send as test** and **Send** (a
//! confirmation first). Loading, preview and sending are the engine's functions, called
//! as `crier preview`, `crier send --test` and `POST /api/jobs/{name}/run` call them.

use std::collections::BTreeMap;
use std::path::PathBuf;

use axum::extract::rejection::{PathRejection, QueryRejection};
use axum::extract::{Path, Query, State};
use axum::{Extension, Form};
use chrono::Utc;
use serde::{Deserialize, Serialize};

use super::view::{RunRow, at};
use super::{Console, Ctx, PageResult, fragment, page};
use crate::engine::preview::preview as plan_preview;
use crate::engine::send::{SendOptions, send as engine_send};
use crate::history::Trigger;
use crate::history::ledger::Ledger;
use crate::history::now_ms;
use crate::history::query::{self, RunFilter};
use crate::job::schedule::zoned;
use crate::job::{self, Job};
use crate::server::api::{
    blocking, job_file, ledger_error, path_of, query_of, send_error, start_run,
};
use crate::server::{ApiError, Shared};

/// Every valid job of the jobs directory, and the errors of the invalid ones by file.
pub(super) async fn load_all(
    app: &Shared,
) -> Result<(Vec<Job>, BTreeMap<PathBuf, Vec<String>>), ApiError> {
    let app = app.clone();
    blocking(move || {
        let files = job::job_files(std::slice::from_ref(&app.jobs_dir))
            .map_err(|d| ApiError::internal(d.to_string()))?;
        let (jobs, diags) = job::load_all(&files, &app.config, &crate::config::env::from_process);
        let mut errors: BTreeMap<PathBuf, Vec<String>> = BTreeMap::new();
        for d in diags.0 {
            errors
                .entry(d.file.clone())
                .or_default()
                .push(d.to_string());
        }
        Ok((jobs, errors))
    })
    .await
}

/// The valid jobs only (the dashboard's next firings).
pub(super) async fn load_jobs(app: &Shared) -> Result<Vec<Job>, ApiError> {
    Ok(load_all(app).await?.0)
}

#[derive(Serialize)]
struct JobRow {
    name: String,
    file: String,
    enabled: bool,
    schedule: Option<String>,
    zone: Option<String>,
    next: Vec<String>,
    last_run: Option<RunRow>,
    errors: Vec<String>,
    description: Option<String>,
}

#[derive(Serialize)]
struct JobsPage {
    jobs: Vec<JobRow>,
}

fn row_of(j: &Job) -> JobRow {
    JobRow {
        name: j.name.clone(),
        file: j.file.display().to_string(),
        enabled: j.enabled,
        schedule: j.schedule.as_ref().map(|s| s.describe()),
        zone: j.schedule.as_ref().map(|s| s.tz.to_string()),
        next: match (&j.schedule, j.enabled) {
            (Some(s), true) => s
                .next_times(Utc::now(), 3)
                .into_iter()
                .map(|t| zoned(t, s.tz))
                .collect(),
            _ => Vec::new(),
        },
        last_run: None,
        errors: Vec::new(),
        description: j.description.clone(),
    }
}

pub(super) async fn list(State(c): State<Console>, Extension(ctx): Extension<Ctx>) -> PageResult {
    let (jobs, errors) = load_all(&c.app).await?;
    let mut rows: Vec<JobRow> = jobs.iter().map(row_of).collect();
    for (file, errors) in errors {
        rows.push(JobRow {
            name: file
                .file_stem()
                .and_then(|s| s.to_str())
                .unwrap_or("?")
                .to_string(),
            file: file.display().to_string(),
            enabled: false,
            schedule: None,
            zone: None,
            next: Vec::new(),
            last_run: None,
            errors,
            description: None,
        });
    }
    let app = c.app.clone();
    let tz = app.config.tz;
    let rows = blocking(move || {
        let ledger = Ledger::new(app.store.as_ref());
        let now = now_ms();
        for row in rows.iter_mut().filter(|r| r.errors.is_empty()) {
            let filter = RunFilter {
                job: Some(row.name.clone()),
                ..RunFilter::default()
            };
            row.last_run = query::runs(&ledger, &filter)
                .next()
                .transpose()
                .map_err(ledger_error)?
                .map(|r| RunRow::new(&r, tz, now));
        }
        Ok(rows)
    })
    .await?;
    Ok(page(&ctx, "jobs.html", &JobsPage { jobs: rows }))
}

/// The job `name`, validated, or why not.
pub(super) async fn load_one(c: &Console, name: &str) -> Result<Job, ApiError> {
    let file = job_file(&c.app.jobs_dir, name)?;
    let app = c.app.clone();
    blocking(move || {
        job::load(&file, &app.config, &crate::config::env::from_process)
            .map_err(|d| ApiError::new(axum::http::StatusCode::UNPROCESSABLE_ENTITY, d.to_string()))
    })
    .await
}

#[derive(Serialize)]
struct JobPage {
    job: JobRow,
    channels: Vec<String>,
    provider: Option<String>,
    body: String,
    subject: Option<String>,
    runs: Vec<RunRow>,
}

pub(super) async fn show(
    State(c): State<Console>,
    Extension(ctx): Extension<Ctx>,
    name: Result<Path<String>, PathRejection>,
) -> PageResult {
    let name = path_of(name)?;
    let job = load_one(&c, &name).await?;
    let app = c.app.clone();
    let tz = app.config.tz;
    let job_name = job.name.clone();
    let runs = blocking(move || {
        let ledger = Ledger::new(app.store.as_ref());
        let filter = RunFilter {
            job: Some(job_name),
            ..RunFilter::default()
        };
        let now = now_ms();
        query::runs(&ledger, &filter)
            .take(10)
            .map(|r| r.map(|r| RunRow::new(&r, tz, now)))
            .collect::<Result<Vec<_>, _>>()
            .map_err(ledger_error)
    })
    .await?;
    let data = JobPage {
        channels: job
            .send_to
            .channels()
            .iter()
            .map(|c| c.to_string())
            .collect(),
        provider: job.provider.clone(),
        body: match &job.body {
            job::Body::Inline(m) => m.clone(),
            job::Body::File(p) => format!("template: {}", p.display()),
            job::Body::Stored(n) => format!("stored template: {n}"),
        },
        subject: job.subject.clone(),
        job: row_of(&job),
        runs,
    };
    Ok(page(&ctx, "job.html", &data))
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct PreviewParams {
    recipient: Option<String>,
}

/// One planned message as the preview shows it.
#[derive(Serialize)]
struct Shown {
    recipient_id: u64,
    name: String,
    channel: String,
    address: Option<String>,
    subject: Option<String>,
    body: String,
    parts: usize,
    encoding: Option<&'static str>,
    skip: Option<String>,
}

impl From<&crate::engine::Planned> for Shown {
    fn from(p: &crate::engine::Planned) -> Shown {
        Shown {
            recipient_id: p.recipient.id,
            name: p.recipient.name.clone(),
            channel: p.channel.to_string(),
            address: p.address.clone(),
            subject: p.subject.clone(),
            body: p.body.clone(),
            parts: p.parts,
            encoding: p.encoding.map(|e| e.as_str()),
            skip: p.skip.as_ref().map(|(r, d)| format!("{}: {d}", r.as_str())),
        }
    }
}

#[derive(Serialize)]
pub(super) struct PreviewPage {
    name: String,
    channels: Vec<(String, String)>,
    recipients: u64,
    to_send: u64,
    skipped: Vec<(&'static str, u64)>,
    parts: u64,
    by_encoding: Vec<(&'static str, u64)>,
    unreadable: Vec<String>,
    filtered: u64,
    shown: Vec<Shown>,
    recipient: Option<u64>,
}

/// Messages shown by a preview, and by the confirmation.
const SHOWN: usize = 10;

async fn preview_of(
    c: &Console,
    name: &str,
    recipient: Option<u64>,
    limit: usize,
) -> Result<PreviewPage, ApiError> {
    let job = load_one(c, name).await?;
    preview_job(c, job, recipient, limit).await
}

/// What sending `job` would do (`engine::preview`, as `crier preview` calls it).
pub(super) async fn preview_job(
    c: &Console,
    job: Job,
    recipient: Option<u64>,
    limit: usize,
) -> Result<PreviewPage, ApiError> {
    let app = c.app.clone();
    let name = job.name.clone();
    let p = blocking(move || {
        plan_preview(&app.config, &job, app.store.as_ref(), limit, recipient).map_err(send_error)
    })
    .await?;
    Ok(PreviewPage {
        name,
        channels: p
            .channels
            .iter()
            .map(|(c, provider)| (c.to_string(), provider.clone()))
            .collect(),
        recipients: p.recipients,
        to_send: p.to_send,
        skipped: p.skipped.into_iter().collect(),
        parts: p.parts,
        by_encoding: p.by_encoding.into_iter().collect(),
        unreadable: p.unreadable.into_iter().take(20).collect(),
        filtered: p.filtered,
        shown: p
            .shown
            .iter()
            .chain(p.skipped_shown.iter())
            .map(Shown::from)
            .collect(),
        recipient,
    })
}

pub(super) fn recipient_id(s: Option<&str>) -> Result<Option<u64>, ApiError> {
    match s.map(str::trim).filter(|s| !s.is_empty()) {
        None => Ok(None),
        Some(s) => s
            .parse()
            .map(Some)
            .map_err(|_| ApiError::bad_request(format!("`{s}` is not a recipient id (a number)"))),
    }
}

/// Splynx's *Preview*: counts, skips, SMS parts, the first messages (or one recipient's).
pub(super) async fn preview(
    State(c): State<Console>,
    Extension(ctx): Extension<Ctx>,
    name: Result<Path<String>, PathRejection>,
    params: Result<Query<PreviewParams>, QueryRejection>,
) -> PageResult {
    let name = path_of(name)?;
    let recipient = recipient_id(query_of(params)?.recipient.as_deref())?;
    let data = preview_of(&c, &name, recipient, SHOWN).await?;
    Ok(fragment(&ctx, "preview.html", &data))
}

/// The confirmation before a send: how many, and the first recipients.
pub(super) async fn confirm(
    State(c): State<Console>,
    Extension(ctx): Extension<Ctx>,
    name: Result<Path<String>, PathRejection>,
) -> PageResult {
    let name = path_of(name)?;
    let data = preview_of(&c, &name, None, 20).await?;
    Ok(page(&ctx, "confirm.html", &data))
}

#[derive(Deserialize)]
pub(super) struct TestForm {
    to: String,
    recipient: Option<String>,
    #[allow(dead_code)]
    csrf: Option<String>,
}

#[derive(Serialize)]
struct Tested {
    run: Option<String>,
    to: String,
    sent: u64,
    failed: u64,
    state: Option<String>,
    error: Option<String>,
    at: String,
}

/// *Send as test*: one message to a phone or an email, recorded as `test`.
pub(super) async fn test(
    State(c): State<Console>,
    Extension(ctx): Extension<Ctx>,
    name: Result<Path<String>, PathRejection>,
    Form(f): Form<TestForm>,
) -> PageResult {
    let name = path_of(name)?;
    let job = load_one(&c, &name).await?;
    test_job(&c, &ctx, job, &f.to, f.recipient.as_deref()).await
}

/// Sends one test message of `job` to `to` (`crier send --test`'s engine call).
pub(super) async fn test_job(
    c: &Console,
    ctx: &Ctx,
    job: Job,
    to: &str,
    recipient: Option<&str>,
) -> PageResult {
    let to = to.trim().to_string();
    if to.is_empty() {
        return Err(ApiError::bad_request(
            "give a phone number or an email address to send the test to",
        )
        .into());
    }
    let recipient = recipient_id(recipient)?;
    let name = job.name.clone();
    let app = c.app.clone();
    let options = SendOptions {
        test_to: Some(to.clone()),
        recipient,
        ..SendOptions::default()
    };
    let summary = blocking(move || {
        engine_send(&job, &app.config, app.store.as_ref(), &options).map_err(send_error)
    })
    .await?;
    let run = summary.run.as_ref();
    let state = match run {
        Some(r) => {
            let app = c.app.clone();
            let id = r.id;
            blocking(move || {
                let ledger = Ledger::new(app.store.as_ref());
                Ok(ledger
                    .messages_of(id, None)
                    .next()
                    .transpose()
                    .map_err(ledger_error)?
                    .map(|m| (m.state.to_string(), m.error_text)))
            })
            .await?
        }
        None => None,
    };
    tracing::info!(job = %name, "Test message sent through the console.");
    let data = Tested {
        run: run.map(|r| r.id.to_string()),
        to,
        sent: summary.sent,
        failed: summary.failed + summary.expired + summary.unknown,
        error: state.as_ref().and_then(|(_, e)| e.clone()),
        state: state.map(|(s, _)| s),
        at: at(c.app.config.tz, now_ms()),
    };
    Ok(fragment(ctx, "tested.html", &data))
}

/// *Send*, confirmed: starts the run (as the API does) and opens its page.
pub(super) async fn send(
    State(c): State<Console>,
    Extension(ctx): Extension<Ctx>,
    name: Result<Path<String>, PathRejection>,
) -> PageResult {
    let name = path_of(name)?;
    let job = load_one(&c, &name).await?;
    let id = start_run(&c.app, job, Trigger::Api).await?;
    tracing::info!(job = %name, run = %id, "Run started through the console.");
    Ok(super::see_other(&ctx, &format!("/runs/{id}")))
}
