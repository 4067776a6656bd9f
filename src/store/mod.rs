//! Durable storage, split by domain, behind traits that speak each domain's operations.
//!
//! Two domains: the [`Directory`] (recipients, opt-outs, stored templates: re-importable,
//! in `crate::recipients::directory`) and the history (runs, messages, the portal inbox:
//! today still the ordered key spaces [`Store::history`] and [`Store::inbox`], which the
//! SQL history replaces). [`Store`] is the bundle a command opens: a directory plus the
//! history. [`open`] picks the backend from `store.backend`: `embedded` (sled, one
//! directory in `data_dir`) or `postgres` (the shared plumbing is [`postgres`]).

pub mod postgres;
pub(crate) mod sled_store;

pub use crate::recipients::directory::{Directory, LOCAL_ID_BASE, RecipientIter};
pub use postgres::{PgError, PgSettings};

use std::path::{Path, PathBuf};

use thiserror::Error;

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
    Postgres(#[from] PgError),
    #[error("{0}")]
    Unsupported(String),
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

/// Key-value pairs in key order.
pub type KvIter<'a> = Box<dyn Iterator<Item = Result<(Vec<u8>, Vec<u8>), StoreError>> + 'a>;

/// Writes applied together or not at all.
#[derive(Debug, Default, Clone)]
pub struct KvBatch {
    /// `(key, Some(value))` writes, `(key, None)` deletes, applied in order.
    pub ops: Vec<(Vec<u8>, Option<Vec<u8>>)>,
}

impl KvBatch {
    pub fn put(&mut self, key: Vec<u8>, value: Vec<u8>) {
        self.ops.push((key, Some(value)));
    }

    pub fn delete(&mut self, key: Vec<u8>) {
        self.ops.push((key, None));
    }

    pub fn is_empty(&self) -> bool {
        self.ops.is_empty()
    }
}

/// An ordered key space for modules that lay out their own records and indexes (the
/// history ledger): the backend only promises ordered scans and atomic batches.
pub trait Kv: Send + Sync {
    fn get(&self, key: &[u8]) -> Result<Option<Vec<u8>>, StoreError>;

    /// Pairs with `start <= key < end`, ascending, or descending with `reverse`.
    fn range(&self, start: &[u8], end: &[u8], reverse: bool) -> KvIter<'_>;

    /// Applies every operation of `batch` atomically.
    fn apply(&self, batch: KvBatch) -> Result<(), StoreError>;
}

/// Everything crier keeps between runs: the directory, and the history's key spaces.
pub trait Store: Directory + Send + Sync {
    /// The directory, as its own trait object (for `OptOuts`, `Templates`, the import).
    fn directory(&self) -> &dyn Directory;

    /// The history ledger's key space.
    fn history(&self) -> &dyn Kv;

    /// The customer-portal inbox's key space.
    fn inbox(&self) -> &dyn Kv;

    /// Makes every write so far durable on disk before returning.
    fn flush(&self) -> Result<(), StoreError>;

    /// Where the store lives, for messages.
    fn path(&self) -> &Path;
}

/// A store opened elsewhere in this process (the daemon's), lent to a command as its own.
pub struct Shared(pub std::sync::Arc<dyn Store>);

crate::delegate_directory!(Shared, |s| s.0);

impl Store for Shared {
    fn directory(&self) -> &dyn Directory {
        self
    }

    fn history(&self) -> &dyn Kv {
        self.0.history()
    }

    fn inbox(&self) -> &dyn Kv {
        self.0.inbox()
    }

    fn flush(&self) -> Result<(), StoreError> {
        self.0.flush()
    }

    fn path(&self) -> &Path {
        self.0.path()
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
        // The PostgreSQL directory is `PgDirectory::open`; the bundle waits for the SQL
        // history (issue 13), so nothing is half-written to a database until it lands.
        Backend::Postgres => {
            return Err(StoreError::Unsupported(
                "store.backend `postgres`: the PostgreSQL history is not available yet in this build (use `backend: embedded`)".into(),
            ));
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
    //! The history key spaces of the sled store (the directory has its own suite,
    //! `crate::recipients::directory::conformance`).

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
    fn kv_ranges_are_ordered_and_batches_atomic() {
        let (_dir, store) = scratch();
        let kv = store.history();
        let mut batch = KvBatch::default();
        for k in [
            b"a2".to_vec(),
            b"a1".to_vec(),
            b"b1".to_vec(),
            b"a3".to_vec(),
        ] {
            batch.put(k.clone(), k);
        }
        batch.delete(b"a3".to_vec());
        kv.apply(batch).unwrap();
        let keys = |reverse| -> Vec<Vec<u8>> {
            kv.range(b"a", b"b", reverse)
                .map(|r| r.unwrap().0)
                .collect()
        };
        assert_eq!(keys(false), vec![b"a1".to_vec(), b"a2".to_vec()]);
        assert_eq!(keys(true), vec![b"a2".to_vec(), b"a1".to_vec()]);
        assert_eq!(kv.get(b"b1").unwrap(), Some(b"b1".to_vec()));
        assert_eq!(kv.get(b"a3").unwrap(), None);
    }

    #[test]
    fn flushed_writes_survive_reopening() {
        let dir = tempfile::tempdir().unwrap();
        {
            let store = open(&config(dir.path())).unwrap();
            store
                .upsert_recipients(&[recipient(RecipientKind::Customer, 9, "x")], true)
                .unwrap();
            let mut batch = KvBatch::default();
            batch.put(b"k".to_vec(), b"v".to_vec());
            store.history().apply(batch).unwrap();
            let mut batch = KvBatch::default();
            batch.put(b"k".to_vec(), b"inbox".to_vec());
            store.inbox().apply(batch).unwrap();
            store.flush().unwrap();
        }
        let store = open(&config(dir.path())).unwrap();
        assert_eq!(
            store
                .recipient_id_by_login(RecipientKind::Customer, "x")
                .unwrap(),
            Some(9)
        );
        assert_eq!(store.history().get(b"k").unwrap(), Some(b"v".to_vec()));
        // Each key space is its own: the same key holds different values.
        assert_eq!(store.inbox().get(b"k").unwrap(), Some(b"inbox".to_vec()));
    }

    #[test]
    fn postgres_bundle_is_refused_until_the_sql_history_lands() {
        let mut c = config(std::path::Path::new("/nonexistent"));
        c.backend = Backend::Postgres;
        let err = open(&c).err().expect("refused").to_string();
        assert!(
            err.contains("PostgreSQL history is not available yet"),
            "{err}"
        );
    }
}
