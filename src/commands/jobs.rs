//! `crier jobs`: each job's schedule, zone, next fire times and last run;
//! `crier jobs next JOB --count N`.

use anyhow::bail;
use chrono::Utc;

use super::{Outcome, open_store, print_table};
use crate::cli::{JobsArgs, JobsCommand};
use crate::config::Config;
use crate::history::ledger::Ledger;
use crate::history::query::{self, RunFilter};
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

fn next_times(job: &Job, count: usize) -> Vec<String> {
    let Some(schedule) = &job.schedule else {
        return Vec::new();
    };
    let mut out = Vec::new();
    let mut t = Utc::now();
    while out.len() < count {
        match schedule.next_after(t) {
            Some(next) => {
                out.push(
                    next.with_timezone(&schedule.tz)
                        .format("%Y-%m-%d %H:%M:%S %Z")
                        .to_string(),
                );
                t = next;
            }
            None => break,
        }
    }
    out
}

pub(super) fn run(config: &Config, args: &JobsArgs) -> anyhow::Result<Outcome> {
    let jobs = load(config, args)?;
    match &args.command {
        Some(JobsCommand::Next { job, count }) => {
            let Some(job) = jobs.iter().find(|j| &j.name == job) else {
                bail!("no valid job named `{job}` in {}", args.jobs.display());
            };
            if job.schedule.is_none() {
                bail!("job `{}` has no schedule (it runs on demand)", job.name);
            }
            for t in next_times(job, *count) {
                crate::outln!("{t}");
            }
        }
        None => {
            let store = open_store(config)?;
            let ledger = Ledger::new(store.as_ref());
            let mut rows = Vec::new();
            for job in &jobs {
                let filter = RunFilter {
                    job: Some(job.name.clone()),
                    ..RunFilter::default()
                };
                let last = query::runs(&ledger, &filter).next().transpose()?;
                rows.push(vec![
                    job.name.clone(),
                    match (&job.schedule, job.enabled) {
                        (_, false) => "disabled".into(),
                        (None, _) => "on demand".into(),
                        (Some(s), _) => s.describe(),
                    },
                    next_times(job, 1).pop().unwrap_or_else(|| "-".into()),
                    last.map(|r| format!("{} {}", r.id, r.status()))
                        .unwrap_or_else(|| "never".into()),
                ]);
            }
            print_table(&["job", "schedule", "next", "last run"], &rows);
        }
    }
    Ok(Outcome::Ok)
}
