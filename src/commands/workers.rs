//! `crier workers`: the workers on one PostgreSQL store — who is alive, who holds the
//! scheduler lease, and how many messages each has claimed and is sending.
//!
//! It reads the database directly (no daemon needs to carry it out). On the embedded
//! store there is nothing to list — sled admits one process, which is the only worker —
//! and the command says so and exits 1: a monitoring script that asks who the workers
//! are is pointed at the wrong store, and should hear it rather than parse an empty list.

use serde::Serialize;

use super::{Outcome, open_store, print_table};
use crate::cli::{TableOrJson, WorkersArgs};
use crate::cluster::members::{Lease, WorkerRow, seconds};
use crate::config::Config;
use crate::store::Backend;

#[derive(Serialize)]
struct View {
    workers: Vec<WorkerRow>,
    lease: Option<Lease>,
}

pub(super) fn run(config: &Config, args: &WorkersArgs) -> anyhow::Result<Outcome> {
    if config.store.backend != Backend::Postgres {
        crate::errln!(
            "workers share a PostgreSQL store (store.backend: postgres); the embedded store has one process, this one"
        );
        return Ok(Outcome::Failed);
    }
    let store = open_store(config)?;
    let Some(cluster) = store.cluster() else {
        anyhow::bail!("this store has no workers table");
    };
    let view = View {
        workers: cluster.workers()?,
        lease: cluster.leader()?,
    };
    match args.format {
        TableOrJson::Json => crate::outln!("{}", serde_json::to_string_pretty(&view)?),
        TableOrJson::Table => {
            let rows: Vec<Vec<String>> = view
                .workers
                .iter()
                .map(|w| {
                    vec![
                        w.id.clone(),
                        w.host.clone(),
                        w.pid.to_string(),
                        w.role.clone(),
                        w.state.clone(),
                        if w.leader { "*" } else { "" }.to_string(),
                        seconds(w.heartbeat_age_ms),
                        w.claimed.to_string(),
                        w.sending.to_string(),
                        w.version.clone(),
                    ]
                })
                .collect();
            print_table(
                &[
                    "worker",
                    "host",
                    "pid",
                    "role",
                    "state",
                    "leader",
                    "heartbeat",
                    "claimed",
                    "sending",
                    "version",
                ],
                &rows,
            );
            match &view.lease {
                Some(l) if l.expires_in_ms > 0 => crate::outln!(
                    "scheduler lease: held by {}, expires in {}",
                    l.holder,
                    seconds(l.expires_in_ms)
                ),
                Some(l) => crate::outln!(
                    "scheduler lease: expired {} ago (last held by {}); the next live `crier run` takes it",
                    seconds(-l.expires_in_ms),
                    l.holder
                ),
                None => crate::outln!("scheduler lease: nobody has held it yet"),
            }
        }
    }
    Ok(Outcome::Ok)
}
