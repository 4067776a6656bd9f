//! Which jobs are sending right now in this process, so that the same job never runs
//! twice at once, whoever starts it: the scheduler, the HTTP API, or a `crier send`
//! carried out by the daemon for another process (see [`crate::control`]). The store
//! admits one process, so one process-wide registry covers every sender.
//!
//! [`claim`] is taken by [`super::send::send`] for every real run (not for send-as-test)
//! and released when the run ends; the daemon asks [`holder`] before firing and listens
//! to [`released`] to start a queued firing when another sender's run ends.

use std::collections::BTreeMap;
use std::sync::{Mutex, OnceLock};

use tokio::sync::broadcast;

use crate::history::RunId;

struct Registry {
    /// Job name → its run, once the run exists.
    running: Mutex<BTreeMap<String, Option<RunId>>>,
    released: broadcast::Sender<String>,
}

fn registry() -> &'static Registry {
    static REGISTRY: OnceLock<Registry> = OnceLock::new();
    REGISTRY.get_or_init(|| Registry {
        running: Mutex::new(BTreeMap::new()),
        released: broadcast::channel(64).0,
    })
}

fn running() -> std::sync::MutexGuard<'static, BTreeMap<String, Option<RunId>>> {
    registry().running.lock().unwrap_or_else(|e| e.into_inner())
}

/// A job marked as sending; dropping it releases the job.
#[derive(Debug)]
pub struct Claim {
    job: String,
}

impl Claim {
    /// Records the run the claim is for (it shows in the refusal others get).
    pub fn set_run(&self, run: RunId) {
        running().insert(self.job.clone(), Some(run));
    }
}

impl Drop for Claim {
    fn drop(&mut self) {
        running().remove(&self.job);
        let _ = registry().released.send(self.job.clone());
    }
}

/// Marks `job` as sending, or says which run of it already is (`None`: its run is being
/// created).
pub fn claim(job: &str) -> Result<Claim, Option<RunId>> {
    let mut running = running();
    if let Some(run) = running.get(job) {
        return Err(*run);
    }
    running.insert(job.to_string(), None);
    Ok(Claim {
        job: job.to_string(),
    })
}

/// Is `job` sending, and in which run?
pub fn holder(job: &str) -> Option<Option<RunId>> {
    running().get(job).copied()
}

/// Tells the name of each job whose run ends from now on.
pub fn released() -> broadcast::Receiver<String> {
    registry().released.subscribe()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_job_can_be_claimed_once_until_released() {
        let first = claim("running-test-job").expect("free");
        let mut ends = released();
        assert_eq!(claim("running-test-job").unwrap_err(), None);
        let run = RunId::new();
        first.set_run(run);
        assert_eq!(claim("running-test-job").unwrap_err(), Some(run));
        assert_eq!(holder("running-test-job"), Some(Some(run)));
        // Another job is independent.
        let other = claim("running-test-other").expect("another job is free");
        drop(first);
        assert_eq!(ends.try_recv().ok().as_deref(), Some("running-test-job"));
        assert_eq!(holder("running-test-job"), None);
        let again = claim("running-test-job").expect("free again after release");
        drop((again, other));
    }
}
