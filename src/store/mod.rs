//! Durable storage, split by domain, behind traits that speak each domain's operations.
//!
//! Two domains: the [`Directory`] (recipients, opt-outs, stored templates: a copy of the
//! billing system's data that can always be imported again, in
//! `crate::recipients::directory`) and the history (runs, messages, the portal inbox: the
//! record that cannot be rebuilt, in `crate::history::store`). [`Store`] is the bundle a
//! command opens: a directory plus the history. [`open`] picks the backends from
//! `store.backend`: `embedded` (a sled directory and a SQLite history in `data_dir`) or
//! `postgres` (both in one database; the shared plumbing is [`postgres`]).

pub mod postgres;
pub(crate) mod sled_store;

pub use crate::recipients::directory::{Directory, LOCAL_ID_BASE, RecipientIter};
pub use postgres::{PgError, PgSettings};

use std::path::{Path, PathBuf};

use thiserror::Error;

use crate::history::store::HistoryStore;

/// What went wrong underneath.
#[derive(Debug, Error)]
pub enum StoreError {
    #[error(
        "the store at {0} is still in use by another crier process after 3 s (stop it, or talk to it once `crier run` serves)"
    )]
    Locked(PathBuf),
    #[error("the store at {path} is corrupt: {detail}")]
    Corrupt { path: PathBuf, detail: String },
    /// The OS's error (a full or read-only disk): in the message itself, not a source,
    /// so `{:#}` does not print it twice.
    #[error("store I/O at {path}: {error}")]
    Io {
        path: PathBuf,
        error: std::io::Error,
    },
    #[error("stored record {key} cannot be read: {detail}")]
    Decode { key: String, detail: String },
    #[error(transparent)]
    History(#[from] crate::history::store::HistoryError),
    #[error(transparent)]
    Postgres(#[from] PgError),
}

/// How an upsert changed the store.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Upsert {
    Inserted,
    Updated,
    Unchanged,
}

/// Where the store lives: `store.backend`.
#[derive(
    Debug,
    Clone,
    Copy,
    Default,
    PartialEq,
    Eq,
    serde::Serialize,
    serde::Deserialize,
    schemars::JsonSchema,
)]
#[serde(rename_all = "lowercase")]
pub enum Backend {
    /// In `data_dir`, no server: the sled directory (and the history beside it).
    #[default]
    Embedded,
    /// A PostgreSQL database (`store.url`).
    Postgres,
}

impl Backend {
    /// `CRIER_BENCH_BACKEND` for benchmarks (`embedded` when unset).
    pub fn from_env(var: &str) -> Backend {
        match std::env::var(var).as_deref() {
            Ok("postgres") => Backend::Postgres,
            _ => Backend::Embedded,
        }
    }
}

/// Settings for opening a store.
#[derive(Debug, Clone)]
pub struct StoreConfig {
    /// The directory the embedded store lives in.
    pub path: PathBuf,
    /// Upper bound of sled's page cache, in bytes.
    pub cache_bytes: u64,
    pub backend: Backend,
    /// With [`Backend::Postgres`]: the database.
    pub postgres: Option<PgSettings>,
}

impl StoreConfig {
    /// The embedded history's file: beside the directory's, in the data dir.
    pub fn history_path(&self) -> PathBuf {
        self.path.with_file_name("history.sqlite3")
    }
}

/// Everything crier keeps between runs: the directory and the history.
pub trait Store: Directory + Send + Sync {
    /// The directory, as its own trait object (for `OptOuts`, `Templates`, the import).
    fn directory(&self) -> &dyn Directory;

    /// The history: runs, messages, the portal inbox.
    fn history(&self) -> &dyn HistoryStore;

    /// Makes every directory write so far durable before returning (the history's
    /// writes are durable when they return).
    fn flush(&self) -> Result<(), StoreError>;

    /// Where the store lives, for messages.
    fn path(&self) -> &Path;

    /// The coordination of several workers, where the store has it (PostgreSQL).
    fn cluster(&self) -> Option<&crate::cluster::Cluster> {
        None
    }
}

/// A store opened elsewhere in this process (the daemon's), lent to a command as its own.
pub struct Shared(pub std::sync::Arc<dyn Store>);

crate::delegate_directory!(Shared, |s| s.0);

impl Store for Shared {
    fn directory(&self) -> &dyn Directory {
        self
    }

    fn history(&self) -> &dyn HistoryStore {
        self.0.history()
    }

    fn flush(&self) -> Result<(), StoreError> {
        self.0.flush()
    }

    fn path(&self) -> &Path {
        self.0.path()
    }

    fn cluster(&self) -> Option<&crate::cluster::Cluster> {
        self.0.cluster()
    }
}

/// The PostgreSQL bundle: the directory and the history in one database.
pub struct PgStore {
    directory: crate::recipients::directory::postgres::PgDirectory,
    history: crate::history::store::postgres::PgHistory,
    cluster: crate::cluster::Cluster,
    path: PathBuf,
}

crate::delegate_directory!(PgStore, |s| s.directory);

impl Store for PgStore {
    fn directory(&self) -> &dyn Directory {
        &self.directory
    }

    fn history(&self) -> &dyn HistoryStore {
        &self.history
    }

    fn flush(&self) -> Result<(), StoreError> {
        Ok(())
    }

    fn path(&self) -> &Path {
        &self.path
    }

    fn cluster(&self) -> Option<&crate::cluster::Cluster> {
        Some(&self.cluster)
    }
}

/// How long [`open`] waits for another process (or a just-closed handle whose
/// background threads are still finishing) to let go of the store.
pub const LOCK_WAIT: std::time::Duration = std::time::Duration::from_secs(3);

/// Opens (creating if needed) the store described by `config`, waiting up to
/// [`LOCK_WAIT`] while it is locked, as SQLite's busy timeout does: a `crier history`
/// started as a `crier send` ends should not fail.
pub fn open(config: &StoreConfig) -> Result<Box<dyn Store>, StoreError> {
    let deadline = std::time::Instant::now() + LOCK_WAIT;
    loop {
        match open_once(config) {
            Err(StoreError::Locked(_)) if std::time::Instant::now() < deadline => {
                std::thread::sleep(std::time::Duration::from_millis(50));
            }
            other => return other,
        }
    }
}

fn open_once(config: &StoreConfig) -> Result<Box<dyn Store>, StoreError> {
    Ok(match config.backend {
        Backend::Embedded => Box::new(sled_store::SledStore::open(config)?),
        Backend::Postgres => {
            let settings = config.postgres.as_ref().ok_or(PgError::BadUrl)?;
            // One pool and one client runtime for both domains.
            let pg = postgres::Pg::connect(settings)?;
            Box::new(PgStore {
                path: PathBuf::from(format!("postgres://{}", pg.server())),
                directory: crate::recipients::directory::postgres::PgDirectory::on(pg.clone())?,
                history: crate::history::store::postgres::PgHistory::on(pg.clone())?,
                cluster: crate::cluster::Cluster::on(pg),
            })
        }
    })
}

/// The history alone, for commands that only read it (`crier history`, `crier logs`):
/// the embedded SQLite file, or the PostgreSQL tables. It takes no lock a daemon holds
/// (sled allows one process; SQLite in WAL mode lets readers in beside its writer), so
/// these commands read directly while `crier run` sends.
pub fn open_history(config: &StoreConfig) -> Result<Box<dyn HistoryStore>, StoreError> {
    Ok(match config.backend {
        Backend::Embedded => Box::new(crate::history::store::sqlite::SqliteHistory::open(
            &config.history_path(),
        )?),
        Backend::Postgres => {
            let settings = config.postgres.as_ref().ok_or(PgError::BadUrl)?;
            Box::new(crate::history::store::postgres::PgHistory::open(settings)?)
        }
    })
}

/// A scratch sled store in a fresh temp dir, for unit tests (the dir goes with it).
#[cfg(test)]
pub(crate) fn scratch() -> (tempfile::TempDir, Box<dyn Store>) {
    let dir = tempfile::tempdir().expect("temp dir");
    let store = open(&StoreConfig {
        path: dir.path().join("store"),
        cache_bytes: 8 << 20,
        backend: Backend::Embedded,
        postgres: None,
    })
    .expect("open a scratch store");
    (dir, store)
}

#[cfg(test)]
pub(crate) mod tests {
    //! The embedded bundle (each domain has its own conformance suite:
    //! `crate::recipients::directory::conformance`, `crate::history::store::conformance`).

    use super::*;
    use crate::recipients::{Recipient, RecipientKind};

    pub(crate) fn recipient(kind: RecipientKind, id: u64, login: &str) -> Recipient {
        crate::recipients::directory::conformance::recipient(kind, id, login)
    }

    fn config(dir: &std::path::Path) -> StoreConfig {
        StoreConfig {
            path: dir.join("store"),
            cache_bytes: 8 << 20,
            backend: Backend::Embedded,
            postgres: None,
        }
    }

    #[test]
    fn both_domains_survive_reopening_in_their_own_files() {
        let dir = tempfile::tempdir().unwrap();
        {
            let store = open(&config(dir.path())).unwrap();
            store
                .upsert_recipients(&[recipient(RecipientKind::Customer, 9, "x")], true)
                .unwrap();
            crate::history::ledger::Ledger::new(store.as_ref())
                .create_run_with_id(
                    crate::history::RunId(7),
                    crate::history::ledger::NewRun {
                        job: "j".into(),
                        trigger: crate::history::Trigger::Manual,
                        channels: vec![],
                        provider: "outbox".into(),
                        body: String::new(),
                        subject: None,
                    },
                    1,
                )
                .unwrap();
            store.flush().unwrap();
        }
        assert!(dir.path().join("store").is_dir());
        assert!(dir.path().join("history.sqlite3").is_file());
        let store = open(&config(dir.path())).unwrap();
        assert_eq!(
            store
                .recipient_id_by_login(RecipientKind::Customer, "x")
                .unwrap(),
            Some(9)
        );
        let ledger = crate::history::ledger::Ledger::new(store.as_ref());
        assert_eq!(ledger.run(crate::history::RunId(7)).unwrap().job, "j");
    }
}
