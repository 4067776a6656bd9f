//! Counters the server exposes at `/metrics` (Prometheus text format), and the rendering
//! of that page.
//!
//! Two sources: what happened in this process (the counters of [`Metrics`], which
//! handlers add to), and what the ledger knows (messages per channel, provider and state,
//! queue depth and run durations, read from the runs' counters, which the ledger keeps in
//! step with the messages, so a scrape reads one record per run, never every message).

use std::fmt::Write as _;
use std::sync::atomic::{AtomicU64, Ordering};

use crate::history::ledger::{Ledger, LedgerError};
use crate::history::query::{self, RunFilter};
use crate::history::{MessageState, RunStatus};

/// Process-wide counters; handlers add, `/metrics` reads.
#[derive(Debug, Default)]
pub struct Metrics {
    /// Delivery reports received, per outcome.
    pub reports_applied: AtomicU64,
    pub reports_duplicate: AtomicU64,
    pub reports_unknown_id: AtomicU64,
    /// Numbers the reports (and `STOP` replies) put on the opt-out list.
    pub reports_opted_out: AtomicU64,
    /// Requests refused: a wrong token or signature, a malformed body.
    pub reports_rejected: AtomicU64,
    /// Sum and count of delivery-report lag (report time minus send time), ms.
    pub report_lag_ms_sum: AtomicU64,
    pub report_lag_count: AtomicU64,
    /// Runs started through `POST /api/jobs/{name}/run`.
    pub api_runs_started: AtomicU64,
}

/// Upper bounds of the run-duration histogram, in seconds.
const DURATION_BUCKETS: [f64; 9] = [1.0, 5.0, 30.0, 60.0, 300.0, 900.0, 1800.0, 3600.0, 21600.0];

fn header(out: &mut String, name: &str, kind: &str, help: &str) {
    let _ = writeln!(out, "# HELP {name} {help}");
    let _ = writeln!(out, "# TYPE {name} {kind}");
}

/// A label value with `\`, `"` and newlines escaped.
fn label(value: &str) -> String {
    value
        .replace('\\', "\\\\")
        .replace('"', "\\\"")
        .replace('\n', "\\n")
}

/// The `/metrics` page.
pub fn render(metrics: &Metrics, ledger: &Ledger) -> Result<String, LedgerError> {
    use std::collections::BTreeMap;
    // (channels, provider, state) -> messages, over every run the ledger holds.
    let mut messages: BTreeMap<(String, String, &'static str), u64> = BTreeMap::new();
    let mut runs_by_status: BTreeMap<&'static str, u64> = BTreeMap::new();
    let mut pending = 0u64;
    let mut buckets = [0u64; DURATION_BUCKETS.len()];
    let (mut duration_sum, mut duration_count) = (0f64, 0u64);
    let visible = RunFilter::default();
    let removed = RunFilter {
        status: Some(RunStatus::Removed),
        ..RunFilter::default()
    };
    for run in query::runs(ledger, &visible).chain(query::runs(ledger, &removed)) {
        let run = run?;
        *runs_by_status.entry(run.status().as_str()).or_default() += 1;
        let channels = run
            .channels
            .iter()
            .map(|c| c.as_str())
            .collect::<Vec<_>>()
            .join("+");
        for state in MessageState::ALL {
            let n = run.counters.get(state);
            if n > 0 {
                *messages
                    .entry((channels.clone(), run.provider.clone(), state.as_str()))
                    .or_default() += n;
            }
        }
        pending += run.counters.pending();
        if let (Some(a), Some(b)) = (run.started_at, run.finished_at) {
            let secs = (b - a).max(0) as f64 / 1000.0;
            duration_sum += secs;
            duration_count += 1;
            for (bucket, bound) in buckets.iter_mut().zip(DURATION_BUCKETS) {
                if secs <= bound {
                    *bucket += 1;
                }
            }
        }
    }

    let mut out = String::new();
    header(
        &mut out,
        "crier_messages",
        "gauge",
        "Messages in the ledger by channel (a run's channels joined with +), provider and state.",
    );
    for ((channel, provider, state), n) in &messages {
        let _ = writeln!(
            out,
            "crier_messages{{channel=\"{}\",provider=\"{}\",state=\"{state}\"}} {n}",
            label(channel),
            label(provider)
        );
    }
    header(
        &mut out,
        "crier_queue_depth",
        "gauge",
        "Messages waiting to be sent (queued or sending).",
    );
    let _ = writeln!(out, "crier_queue_depth {pending}");
    header(
        &mut out,
        "crier_runs",
        "gauge",
        "Runs in the ledger by status.",
    );
    for status in RunStatus::ALL {
        let n = runs_by_status.get(status.as_str()).copied().unwrap_or(0);
        let _ = writeln!(out, "crier_runs{{status=\"{status}\"}} {n}");
    }
    header(
        &mut out,
        "crier_run_duration_seconds",
        "histogram",
        "Duration of finished runs, first message to last.",
    );
    for (bound, n) in DURATION_BUCKETS.iter().zip(buckets) {
        let _ = writeln!(
            out,
            "crier_run_duration_seconds_bucket{{le=\"{bound}\"}} {n}"
        );
    }
    let _ = writeln!(
        out,
        "crier_run_duration_seconds_bucket{{le=\"+Inf\"}} {duration_count}"
    );
    let _ = writeln!(out, "crier_run_duration_seconds_sum {duration_sum}");
    let _ = writeln!(out, "crier_run_duration_seconds_count {duration_count}");

    let get = |c: &AtomicU64| c.load(Ordering::Relaxed);
    header(
        &mut out,
        "crier_api_runs_started_total",
        "counter",
        "Runs started through the HTTP API since the server started.",
    );
    let _ = writeln!(
        out,
        "crier_api_runs_started_total {}",
        get(&metrics.api_runs_started)
    );
    header(
        &mut out,
        "crier_send_retries_total",
        "counter",
        "Send attempts beyond the first, in every run of this process, since it started.",
    );
    let _ = writeln!(
        out,
        "crier_send_retries_total {}",
        crate::engine::send::stats::RETRIES.load(std::sync::atomic::Ordering::Relaxed)
    );
    header(
        &mut out,
        "crier_rate_limit_waits_total",
        "counter",
        "Messages that waited for a rate limit (the job's or a provider's), since the process started.",
    );
    let _ = writeln!(
        out,
        "crier_rate_limit_waits_total {}",
        crate::engine::send::stats::RATE_LIMIT_WAITS.load(std::sync::atomic::Ordering::Relaxed)
    );
    header(
        &mut out,
        "crier_delivery_reports_total",
        "counter",
        "Delivery-report webhooks since the server started: the counts of their responses (applied, duplicate, unknown_id, opted_out), and the requests refused (rejected).",
    );
    for (outcome, c) in [
        ("applied", &metrics.reports_applied),
        ("duplicate", &metrics.reports_duplicate),
        ("unknown_id", &metrics.reports_unknown_id),
        ("opted_out", &metrics.reports_opted_out),
        ("rejected", &metrics.reports_rejected),
    ] {
        let _ = writeln!(
            out,
            "crier_delivery_reports_total{{outcome=\"{outcome}\"}} {}",
            get(c)
        );
    }
    header(
        &mut out,
        "crier_delivery_report_lag_seconds",
        "summary",
        "Delivery-report time minus send time.",
    );
    let _ = writeln!(
        out,
        "crier_delivery_report_lag_seconds_sum {}",
        get(&metrics.report_lag_ms_sum) as f64 / 1000.0
    );
    let _ = writeln!(
        out,
        "crier_delivery_report_lag_seconds_count {}",
        get(&metrics.report_lag_count)
    );
    Ok(out)
}

/// A per-worker gauge: its name, its help, its value for a worker.
type Gauge = (
    &'static str,
    &'static str,
    fn(&crate::cluster::members::WorkerRow) -> String,
);

/// The workers on a PostgreSQL store, appended to the `/metrics` page: how many are in
/// each state, and per live worker whether it leads, its heartbeat's age and what it
/// holds. (Stopped and dead workers are counted, not listed: their ids would pile up as
/// label values.)
pub fn render_workers(
    out: &mut String,
    cluster: &crate::cluster::Cluster,
) -> Result<(), crate::cluster::members::ClusterError> {
    let workers = cluster.workers()?;
    header(
        out,
        "crier_workers",
        "gauge",
        "Workers on the store by state.",
    );
    for state in ["alive", "stopped", "dead"] {
        let n = workers.iter().filter(|w| w.state == state).count();
        let _ = writeln!(out, "crier_workers{{state=\"{state}\"}} {n}");
    }
    let alive: Vec<_> = workers.iter().filter(|w| w.state == "alive").collect();
    let gauges: [Gauge; 4] = [
        (
            "crier_worker_leader",
            "1 for the live worker holding the scheduler lease, else 0.",
            |w| u8::from(w.leader).to_string(),
        ),
        (
            "crier_worker_heartbeat_age_seconds",
            "Since each live worker's last heartbeat, by the database's clock.",
            |w| format!("{}", w.heartbeat_age_ms as f64 / 1000.0),
        ),
        (
            "crier_worker_claimed_messages",
            "Messages of unfinished runs each live worker has claimed and not yet started sending.",
            |w| w.claimed.to_string(),
        ),
        (
            "crier_worker_sending_messages",
            "Messages each live worker is sending (in flight at the provider).",
            |w| w.sending.to_string(),
        ),
    ];
    for (name, help, value) in gauges {
        header(out, name, "gauge", help);
        for w in &alive {
            let _ = writeln!(out, "{name}{{worker=\"{}\"}} {}", label(&w.id), value(w));
        }
    }
    Ok(())
}
