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
        "the store at {0} is in use by another crier process (stop it, or talk to it once `crier run` serves)"
    )]
    Locked(PathBuf),
    #[error("the store at {path} is corrupt: {detail}")]
    Corrupt { path: PathBuf, detail: String },
    #[error("store I/O at {path}: {source}")]
    Io {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("stored record {key} cannot be read: {detail}")]
    Decode { key: String, detail: String },
}

/// How an upsert changed the store.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Upsert {
    Inserted,
    Updated,
    Unchanged,
}

/// Settings for opening a store.
#[derive(Debug, Clone)]
pub struct StoreConfig {
    /// The directory the store lives in.
    pub path: PathBuf,
    /// Upper bound of the page cache, in bytes.
    pub cache_bytes: u64,
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

    /// The history ledger's key space.
    fn history(&self) -> &dyn Kv;

    /// The opt-out list's key space.
    fn optouts(&self) -> &dyn Kv;

    /// Makes every write so far durable on disk before returning.
    fn flush(&self) -> Result<(), StoreError>;

    /// Where the store lives, for messages.
    fn path(&self) -> &Path;
}

/// First id crier allocates itself.
pub const LOCAL_ID_BASE: u64 = 1_000_000_000_000;

/// Opens (creating if needed) the store described by `config`.
pub fn open(config: &StoreConfig) -> Result<Box<dyn Store>, StoreError> {
    Ok(Box::new(sled_store::SledStore::open(config)?))
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

    /// Runs the whole suite on a fresh store from `make` for each case.
    pub(crate) fn conformance(make: &dyn Fn() -> Box<dyn Store>) {
        kv_ranges_are_ordered_and_batches_atomic(&*make());
        upsert_reports_inserted_updated_unchanged(&*make());
        dry_run_writes_nothing(&*make());
        login_index_follows_login_changes(&*make());
        scans_are_per_kind_and_ordered(&*make());
        allocated_ids_are_fresh(&*make());
    }
}
