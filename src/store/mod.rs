//! Durable storage behind one trait, so the engine never knows which database it runs on.
//!
//! [`Store`] is everything crier needs from a database; [`open`] picks the backend. sled
//! is the first (embedded, no server to run) and `sled_store.rs` is the only file that names
//! it, so a PostgreSQL backend is one more file beside it, checked by the same
//! conformance suite (`tests` below runs it against every backend).
//!
//! Keys are laid out for ordered prefix scans: a record kind byte, a recipient kind
//! byte, then the id in big-endian, so a scan of customers never touches leads.

mod sled_store;

use std::path::{Path, PathBuf};

use thiserror::Error;

use crate::recipients::{Recipient, RecipientKind};

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
}

/// How an upsert changed the store.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Upsert {
    Inserted,
    Updated,
    Unchanged,
}

/// Which embedded database holds the store.
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
    /// sled: the default.
    #[default]
    Sled,
}

/// Settings for opening a store.
#[derive(Debug, Clone)]
pub struct StoreConfig {
    /// The directory the store lives in.
    pub path: PathBuf,
    /// Upper bound of the page cache, in bytes.
    pub cache_bytes: u64,
    pub backend: Backend,
}

impl StoreConfig {
    /// The embedded history's file: beside the directory's, in the data dir.
    pub fn history_path(&self) -> PathBuf {
        self.path.with_file_name("history.sqlite3")
    }
}

pub type RecipientIter<'a> = Box<dyn Iterator<Item = Result<Recipient, StoreError>> + 'a>;

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

/// Everything crier keeps between runs.
pub trait Store: Send + Sync {
    /// The recipient with this id, if any.
    fn recipient(&self, kind: RecipientKind, id: u64) -> Result<Option<Recipient>, StoreError>;

    /// The id of the recipient with this portal login, if any.
    fn recipient_id_by_login(
        &self,
        kind: RecipientKind,
        login: &str,
    ) -> Result<Option<u64>, StoreError>;

    /// Inserts or replaces each recipient by `(kind, id)`, in order (a later entry with the
    /// same id wins), keeping the login index in step, as one atomic write. With
    /// `write == false` nothing is written and the outcomes say what would happen.
    fn upsert_recipients(
        &self,
        recipients: &[Recipient],
        write: bool,
    ) -> Result<Vec<Upsert>, StoreError>;

    /// A fresh id for a recipient that arrived with a login but no id. Allocated ids start
    /// at [`LOCAL_ID_BASE`], above the ids billing systems hand out.
    fn allocate_recipient_id(&self, kind: RecipientKind) -> Result<u64, StoreError>;

    /// Every recipient of `kind`, in id order.
    fn recipients(&self, kind: RecipientKind) -> RecipientIter<'_>;

    /// How many recipients of `kind` are stored.
    fn count_recipients(&self, kind: RecipientKind) -> Result<u64, StoreError>;

    /// The history: runs, messages, the portal inbox.
    fn history(&self) -> &dyn crate::history::store::HistoryStore;

    /// The opt-out list's key space.
    fn optouts(&self) -> &dyn Kv;

    /// The stored templates' key space.
    fn templates(&self) -> &dyn Kv;

    /// Makes every write so far durable on disk before returning.
    fn flush(&self) -> Result<(), StoreError>;

    /// Where the store lives, for messages.
    fn path(&self) -> &Path;
}

/// A store opened elsewhere in this process (the daemon's), lent to a command as its own.
pub struct Shared(pub std::sync::Arc<dyn Store>);

impl Store for Shared {
    fn recipient(&self, kind: RecipientKind, id: u64) -> Result<Option<Recipient>, StoreError> {
        self.0.recipient(kind, id)
    }

    fn recipient_id_by_login(
        &self,
        kind: RecipientKind,
        login: &str,
    ) -> Result<Option<u64>, StoreError> {
        self.0.recipient_id_by_login(kind, login)
    }

    fn upsert_recipients(
        &self,
        recipients: &[Recipient],
        write: bool,
    ) -> Result<Vec<Upsert>, StoreError> {
        self.0.upsert_recipients(recipients, write)
    }

    fn allocate_recipient_id(&self, kind: RecipientKind) -> Result<u64, StoreError> {
        self.0.allocate_recipient_id(kind)
    }

    fn recipients(&self, kind: RecipientKind) -> RecipientIter<'_> {
        self.0.recipients(kind)
    }

    fn count_recipients(&self, kind: RecipientKind) -> Result<u64, StoreError> {
        self.0.count_recipients(kind)
    }

    fn history(&self) -> &dyn crate::history::store::HistoryStore {
        self.0.history()
    }

    fn optouts(&self) -> &dyn Kv {
        self.0.optouts()
    }

    fn templates(&self) -> &dyn Kv {
        self.0.templates()
    }

    fn flush(&self) -> Result<(), StoreError> {
        self.0.flush()
    }

    fn path(&self) -> &Path {
        self.0.path()
    }
}

/// Recipient keys, shared by every ordered-key backend: a record kind byte, the
/// recipient kind, then the id big-endian (or the login, for the login index).
pub(super) const RECORD: u8 = b'r';
pub(super) const LOGIN: u8 = b'l';

pub(super) fn kind_byte(kind: RecipientKind) -> u8 {
    match kind {
        RecipientKind::Customer => b'c',
        RecipientKind::Lead => b'l',
    }
}

pub(super) fn record_key(kind: RecipientKind, id: u64) -> [u8; 10] {
    let mut key = [0u8; 10];
    key[0] = RECORD;
    key[1] = kind_byte(kind);
    key[2..].copy_from_slice(&id.to_be_bytes());
    key
}

pub(super) fn login_key(kind: RecipientKind, login: &str) -> Vec<u8> {
    let mut key = Vec::with_capacity(2 + login.len());
    key.push(LOGIN);
    key.push(kind_byte(kind));
    key.extend_from_slice(login.as_bytes());
    key
}

/// Format of stored recipient records: one version byte, then postcard. postcard is
/// compact (a record is about a third of its JSON), which keeps sled's pages and cache
/// small; the version byte lets a later layout be read next to this one.
const RECORD_V1: u8 = 1;

pub(super) fn encode(r: &Recipient) -> Result<Vec<u8>, StoreError> {
    let mut bytes = vec![RECORD_V1];
    postcard::to_io(r, &mut bytes).map_err(|e| StoreError::Decode {
        key: format!("{}/{}", r.kind, r.id),
        detail: e.to_string(),
    })?;
    Ok(bytes)
}

pub(super) fn decode(key: &[u8], bytes: &[u8]) -> Result<Recipient, StoreError> {
    let fail = |detail: String| StoreError::Decode {
        key: String::from_utf8_lossy(key).into_owned(),
        detail,
    };
    match bytes.split_first() {
        Some((&RECORD_V1, rest)) => postcard::from_bytes(rest).map_err(|e| fail(e.to_string())),
        Some((v, _)) => Err(fail(format!("unknown record version {v}"))),
        None => Err(fail("empty record".into())),
    }
}

/// What one recipient upsert writes, decided from the record stored before it. Every
/// backend applies the same plan, so they agree on outcomes and on the login index.
pub(super) struct UpsertPlan {
    pub outcome: Upsert,
    pub key: [u8; 10],
    pub bytes: Vec<u8>,
    /// A login index entry that no longer points at this recipient.
    pub drop_login: Option<Vec<u8>>,
    /// The login index entry to write: key and id.
    pub put_login: Option<(Vec<u8>, [u8; 8])>,
}

pub(super) fn plan_upsert(
    r: &Recipient,
    previous: Option<&[u8]>,
) -> Result<UpsertPlan, StoreError> {
    let key = record_key(r.kind, r.id);
    let bytes = encode(r)?;
    let outcome = match previous {
        None => Upsert::Inserted,
        Some(old) if old == bytes.as_slice() => Upsert::Unchanged,
        Some(_) => Upsert::Updated,
    };
    let old_login = match previous {
        Some(old) if outcome == Upsert::Updated => decode(&key, old)?.login,
        _ => None,
    };
    Ok(UpsertPlan {
        outcome,
        key,
        drop_login: old_login
            .filter(|old| Some(old) != r.login.as_ref())
            .map(|old| login_key(r.kind, &old)),
        put_login: r
            .login
            .as_ref()
            .map(|login| (login_key(r.kind, login), r.id.to_be_bytes())),
        bytes,
    })
}

/// First id crier allocates itself.
pub const LOCAL_ID_BASE: u64 = 1_000_000_000_000;

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
        Backend::Sled => Box::new(sled_store::SledStore::open(config)?),
    })
}

/// A scratch sled store in a fresh temp dir, for unit tests (the dir goes with it).
#[cfg(test)]
pub(crate) fn scratch() -> (tempfile::TempDir, Box<dyn Store>) {
    let dir = tempfile::tempdir().expect("temp dir");
    let store = open(&StoreConfig {
        path: dir.path().join("store"),
        cache_bytes: 8 << 20,
        backend: Backend::Sled,
    })
    .expect("open a scratch store");
    (dir, store)
}

#[cfg(test)]
pub(crate) mod tests {
    //! The conformance suite: every backend must pass every function here.

    use super::*;
    use crate::recipients::Status;

    pub(crate) fn recipient(kind: RecipientKind, id: u64, login: &str) -> Recipient {
        Recipient {
            kind,
            id,
            login: Some(login.into()),
            status: Status::Active,
            name: format!("Customer {id}"),
            email: None,
            billing_email: None,
            phone: None,
            phone_raw: None,
            category: None,
            location: None,
            billing_type: None,
            partner: None,
            tariffs: vec![],
            timezone: None,
            attrs: Default::default(),
        }
    }

    fn upsert_reports_inserted_updated_unchanged(store: &dyn Store) {
        let a = recipient(RecipientKind::Customer, 1, "a");
        let mut a2 = a.clone();
        a2.name = "Renamed".into();
        let outcomes = store
            .upsert_recipients(&[a.clone(), a.clone(), a2.clone()], true)
            .unwrap();
        assert_eq!(
            outcomes,
            vec![Upsert::Inserted, Upsert::Unchanged, Upsert::Updated]
        );
        assert_eq!(
            store.recipient(RecipientKind::Customer, 1).unwrap(),
            Some(a2)
        );
    }

    fn dry_run_writes_nothing(store: &dyn Store) {
        let b = recipient(RecipientKind::Customer, 2, "b");
        assert_eq!(
            store.upsert_recipients(&[b], false).unwrap(),
            vec![Upsert::Inserted]
        );
        assert_eq!(store.recipient(RecipientKind::Customer, 2).unwrap(), None);
        assert_eq!(
            store
                .recipient_id_by_login(RecipientKind::Customer, "b")
                .unwrap(),
            None
        );
    }

    fn login_index_follows_login_changes(store: &dyn Store) {
        let c = recipient(RecipientKind::Lead, 3, "old");
        store
            .upsert_recipients(std::slice::from_ref(&c), true)
            .unwrap();
        assert_eq!(
            store
                .recipient_id_by_login(RecipientKind::Lead, "old")
                .unwrap(),
            Some(3)
        );
        let mut moved = c;
        moved.login = Some("new".into());
        store.upsert_recipients(&[moved], true).unwrap();
        assert_eq!(
            store
                .recipient_id_by_login(RecipientKind::Lead, "old")
                .unwrap(),
            None
        );
        assert_eq!(
            store
                .recipient_id_by_login(RecipientKind::Lead, "new")
                .unwrap(),
            Some(3)
        );
        // Customers and leads do not share logins.
        assert_eq!(
            store
                .recipient_id_by_login(RecipientKind::Customer, "new")
                .unwrap(),
            None
        );
    }

    fn scans_are_per_kind_and_ordered(store: &dyn Store) {
        let recs: Vec<_> = [300u64, 5, 70_000, 1 << 33]
            .into_iter()
            .map(|id| recipient(RecipientKind::Customer, id, &format!("l{id}")))
            .collect();
        store.upsert_recipients(&recs, true).unwrap();
        store
            .upsert_recipients(&[recipient(RecipientKind::Lead, 6, "lead6")], true)
            .unwrap();
        let ids: Vec<u64> = store
            .recipients(RecipientKind::Customer)
            .map(|r| r.unwrap().id)
            .collect();
        assert_eq!(ids, vec![5, 300, 70_000, 1 << 33]);
        assert_eq!(store.count_recipients(RecipientKind::Customer).unwrap(), 4);
        assert_eq!(store.count_recipients(RecipientKind::Lead).unwrap(), 1);
    }

    fn allocated_ids_are_fresh(store: &dyn Store) {
        let a = store.allocate_recipient_id(RecipientKind::Lead).unwrap();
        let b = store.allocate_recipient_id(RecipientKind::Lead).unwrap();
        assert!(a >= LOCAL_ID_BASE);
        assert!(b > a);
    }

    fn kv_ranges_are_ordered_and_batches_atomic(store: &dyn Store) {
        let kv = store.optouts();
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

    fn config(dir: &std::path::Path, backend: Backend) -> StoreConfig {
        StoreConfig {
            path: dir.join("store"),
            cache_bytes: 8 << 20,
            backend,
        }
    }

    fn flushed_writes_survive_reopening(backend: Backend) {
        let dir = tempfile::tempdir().unwrap();
        {
            let store = open(&config(dir.path(), backend)).unwrap();
            store
                .upsert_recipients(&[recipient(RecipientKind::Customer, 9, "x")], true)
                .unwrap();
            let mut batch = KvBatch::default();
            batch.put(b"k".to_vec(), b"v".to_vec());
            store.optouts().apply(batch).unwrap();
            let mut batch = KvBatch::default();
            batch.put(b"k".to_vec(), b"template".to_vec());
            store.templates().apply(batch).unwrap();
            store.flush().unwrap();
        }
        let store = open(&config(dir.path(), backend)).unwrap();
        assert_eq!(
            store
                .recipient_id_by_login(RecipientKind::Customer, "x")
                .unwrap(),
            Some(9)
        );
        assert_eq!(store.optouts().get(b"k").unwrap(), Some(b"v".to_vec()));
        // Each key space is its own: the same key holds different values.
        assert_eq!(
            store.templates().get(b"k").unwrap(),
            Some(b"template".to_vec())
        );
    }

    /// Runs the whole suite against `backend`, on a fresh store for each case.
    pub(crate) fn conformance(backend: Backend) {
        let dirs = std::cell::RefCell::new(Vec::new());
        let make = || -> Box<dyn Store> {
            let dir = tempfile::tempdir().unwrap();
            let store = open(&config(dir.path(), backend)).unwrap();
            dirs.borrow_mut().push(dir);
            store
        };
        kv_ranges_are_ordered_and_batches_atomic(&*make());
        upsert_reports_inserted_updated_unchanged(&*make());
        dry_run_writes_nothing(&*make());
        login_index_follows_login_changes(&*make());
        scans_are_per_kind_and_ordered(&*make());
        allocated_ids_are_fresh(&*make());
        flushed_writes_survive_reopening(backend);
    }
}
