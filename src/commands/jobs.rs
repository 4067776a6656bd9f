//! `crier jobs`: each job's schedule, zone, next fire times and last run;
//! `crier jobs next JOB --count N`.
//!
//! A table prints instants as people read them ([`zoned`]: offset and abbreviation); JSON
//! prints them in RFC 3339 with the schedule's local offset, so a script gets the exact
//! instant and the wall-clock time in one string.

use anyhow::bail;
use chrono::{DateTime, SecondsFormat, Utc};
use serde::Serialize;

use super::{Outcome, open_store, print_table};
use crate::cli::{JobsArgs, JobsCommand, TableOrJson};
use crate::config::Config;
use crate::history::ledger::Ledger;
use crate::history::query::{self, RunFilter};
use crate::job::schedule::zoned;
use crate::job::{self, Job};

fn load(config: &Config, args: &JobsArgs) -> anyhow::Result<Vec<Job>> {
    let files =
        job::job_files(std::slice::from_ref(&args.jobs)).map_err(|d| anyhow::anyhow!("{d}"))?;
    let (jobs, diags) = job::load_all(&files, config, &crate::config::env::from_process);
    if !diags.is_empty() {
        crate::errln!("{diags}");
    }
    Ok(jobs)
}

/// The job's next `count` fire times after now (fewer if its schedule ends).
fn next_times(job: &Job, count: usize) -> Vec<DateTime<Utc>> {
    job.schedule
        .as_ref()
        .map(|s| s.next_times(Utc::now(), count))
        .unwrap_or_default()
}

/// `2027-03-28T03:00:00+02:00`: the instant, at the schedule's local offset.
fn rfc3339(job: &Job, t: DateTime<Utc>) -> String {
    let tz = job.schedule.as_ref().map_or(chrono_tz::UTC, |s| s.tz);
    t.with_timezone(&tz)
        .to_rfc3339_opts(SecondsFormat::Secs, false)
}

/// `crier jobs next --format json`.
#[derive(Serialize)]
struct NextView<'a> {
    job: &'a str,
    /// The schedule's IANA zone.
    time_zone: String,
    /// RFC 3339 instants, soonest first.
    next: Vec<String>,
}

/// One job of `crier jobs --format json`.
#[derive(Serialize)]
struct JobView<'a> {
    job: &'a str,
    file: String,
    enabled: bool,
    /// The rule (`cron `0 9 * * 1-5` Africa/Johannesburg`), `null` for an on-demand job.
    schedule: Option<String>,
    time_zone: Option<String>,
    /// The next fire time (RFC 3339), `null` when disabled, on demand or past its end.
    next: Option<String>,
    last_run: Option<LastRun>,
}

#[derive(Serialize)]
struct LastRun {
    id: String,
    status: String,
}

fn print_json(value: &impl Serialize) -> anyhow::Result<()> {
    crate::outln!("{}", serde_json::to_string_pretty(value)?);
    Ok(())
}

pub(super) fn run(config: &Config, args: &JobsArgs) -> anyhow::Result<Outcome> {
    let jobs = load(config, args)?;
    match &args.command {
        Some(JobsCommand::Next { job, count }) => {
            let Some(job) = jobs.iter().find(|j| &j.name == job) else {
                bail!("no valid job named `{job}` in {}", args.jobs.display());
            };
            let Some(schedule) = &job.schedule else {
                bail!("job `{}` has no schedule (it runs on demand)", job.name);
            };
            let times = next_times(job, *count);
            match args.format {
                TableOrJson::Table => {
                    for t in times {
                        crate::outln!("{}", zoned(t, schedule.tz));
                    }
                }
                TableOrJson::Json => print_json(&NextView {
                    job: &job.name,
                    time_zone: schedule.tz.to_string(),
                    next: times.into_iter().map(|t| rfc3339(job, t)).collect(),
                })?,
            }
        }
        None => {
            let store = open_store(config)?;
            let ledger = Ledger::new(store.as_ref());
            let mut views = Vec::new();
            for job in &jobs {
                let filter = RunFilter {
                    job: Some(job.name.clone()),
                    ..RunFilter::default()
                };
                let last = query::runs(&ledger, &filter).next().transpose()?;
                let next = job.enabled.then(|| next_times(job, 1).pop()).flatten();
                views.push((job, next, last));
            }
            match args.format {
                TableOrJson::Table => {
                    let rows: Vec<Vec<String>> = views
                        .iter()
                        .map(|(job, next, last)| {
                            vec![
                                job.name.clone(),
                                match (&job.schedule, job.enabled) {
                                    (_, false) => "disabled".into(),
                                    (None, _) => "on demand".into(),
                                    (Some(s), _) => s.describe(),
                                },
                                match (next, &job.schedule) {
                                    (Some(t), Some(s)) => zoned(*t, s.tz),
                                    _ => "-".into(),
                                },
                                last.as_ref()
                                    .map(|r| format!("{} {}", r.id, r.status()))
                                    .unwrap_or_else(|| "never".into()),
                            ]
                        })
                        .collect();
                    print_table(&["job", "schedule", "next", "last run"], &rows);
                }
                TableOrJson::Json => print_json(
                    &views
                        .iter()
                        .map(|(job, next, last)| JobView {
                            job: &job.name,
                            file: job.file.display().to_string(),
                            enabled: job.enabled,
                            schedule: job.schedule.as_ref().map(|s| s.describe()),
                            time_zone: job.schedule.as_ref().map(|s| s.tz.to_string()),
                            next: next.map(|t| rfc3339(job, t)),
                            last_run: last.as_ref().map(|r| LastRun {
                                id: r.id.to_string(),
                                status: r.status().to_string(),
                            }),
                        })
                        .collect::<Vec<_>>(),
                )?,
            }
        }
    }
    Ok(Outcome::Ok)
}
