//! `crier serve`: the HTTP server alone, until SIGINT or SIGTERM (then it finishes the
//! requests in progress and flushes the store).

use std::sync::Arc;

use anyhow::Context;

use super::{Outcome, open_store};
use crate::cli::ServeArgs;
use crate::config::Config;
use crate::server::{self, AppState};

pub(super) fn run(config: &Config, args: &ServeArgs) -> anyhow::Result<Outcome> {
    // The server checks delivery reports and runs jobs with every provider's credentials.
    if let Err(missing) = config.require_secrets(|_| true) {
        crate::errln!("{missing}");
        return Ok(Outcome::Failed);
    }
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()?;
    let store: Arc<dyn crate::store::Store> = Arc::from(open_store(config)?);
    // On PostgreSQL: a worker (runs the API starts claim as it), which does not lead.
    let worker = crate::cluster::members::Worker::join(
        store.as_ref(),
        config.cluster,
        crate::cluster::members::Role::Serve,
    )?;
    let listen = args.listen.unwrap_or(config.server.listen);
    if config.server.token.is_none() {
        tracing::warn!("No server.token is configured: every /api request will be refused.");
    }
    // Other commands on this store are carried out here meanwhile.
    let cancel = Arc::new(std::sync::atomic::AtomicBool::new(false));
    let host = crate::control::Host::new(config.clone(), store.clone(), cancel.clone());
    let _control = crate::control::listen(host.clone())?;
    let state = Arc::new(AppState {
        config: config.clone(),
        store: store.clone(),
        metrics: Default::default(),
        jobs_dir: args.jobs.clone(),
        scheduler: None,
        worker: worker.clone(),
    });
    runtime.block_on(async {
        let listener = tokio::net::TcpListener::bind(listen)
            .await
            .with_context(|| format!("cannot listen on {listen}"))?;
        // Tests and scripts read the actual address (`--listen 127.0.0.1:0`).
        crate::outln!("listening on http://{}", listener.local_addr()?);
        tracing::info!(%listen, "Serving.");
        server::serve(listener, state, crate::daemon::shutdown_signal()).await?;
        anyhow::Ok(())
    })?;
    // Runs started through the API go on in the blocking pool: give them a moment to
    // finish; one still sending is cut short like a crash, which the ledger is built for
    // (its in-flight messages read `unknown`, the rest stay `queued`).
    cancel.store(true, std::sync::atomic::Ordering::SeqCst);
    host.wait_idle(std::time::Duration::from_secs(10));
    runtime.shutdown_timeout(std::time::Duration::from_secs(10));
    if let Some(worker) = &worker {
        worker.stop();
    }
    store.flush()?;
    Ok(Outcome::Ok)
}
