//! The redb backend: an embedded copy-on-write B-tree with ACID transactions and a page
//! cache that stays within its bound.
//!
//! Offered beside sled (`store.backend: redb`) because sled's memory grows with the data a
//! process touches whatever its cache setting (see the README's benchmarks). Same key
//! layout and record format as sled, in four tables; every batch is one write
//! transaction, committed durably before it returns, so `flush` has nothing left to do.

use std::path::{Path, PathBuf};
use std::sync::Arc;

use redb::{Database, ReadableDatabase, ReadableTable, TableDefinition};

use super::{
    Kv, KvBatch, KvIter, LOCAL_ID_BASE, RECORD, RecipientIter, Store, StoreConfig, StoreError,
    Upsert, decode, kind_byte, login_key, plan_upsert, record_key,
};
use crate::recipients::{Recipient, RecipientKind};

type Table = TableDefinition<'static, &'static [u8], &'static [u8]>;

const RECIPIENTS: Table = TableDefinition::new("recipients");
const META: Table = TableDefinition::new("meta");
const HISTORY: Table = TableDefinition::new("history");
const OPTOUTS: Table = TableDefinition::new("optouts");
const TEMPLATES: Table = TableDefinition::new("templates");
const INBOX: Table = TableDefinition::new("inbox");

pub(super) struct RedbStore {
    path: PathBuf,
    db: Arc<Database>,
    history: RedbKv,
    optouts: RedbKv,
    templates: RedbKv,
    inbox: RedbKv,
}

/// One redb table as a [`Kv`].
struct RedbKv {
    path: PathBuf,
    db: Arc<Database>,
    table: Table,
}

/// The first I/O error of each store this process opened: redb answers every write
/// after one with `PreviousIo`, which alone would not say what went wrong.
static FIRST_IO: std::sync::Mutex<
    std::collections::BTreeMap<PathBuf, (std::io::ErrorKind, String)>,
> = std::sync::Mutex::new(std::collections::BTreeMap::new());

/// A redb error as a [`StoreError`]: an I/O failure (a full or read-only disk) is
/// [`StoreError::Io`], with the OS's own words, never reported as corruption.
fn fail(path: &Path, e: impl Into<redb::Error>) -> StoreError {
    match e.into() {
        redb::Error::Io(error) => {
            if let Ok(mut first) = FIRST_IO.lock() {
                first
                    .entry(path.to_path_buf())
                    .or_insert_with(|| (error.kind(), error.to_string()));
            }
            StoreError::Io {
                path: path.to_path_buf(),
                error,
            }
        }
        // Every write after a failed one: say what that one met.
        redb::Error::PreviousIo => {
            let first = FIRST_IO.lock().ok().and_then(|f| f.get(path).cloned());
            let (kind, text) = first.unwrap_or((std::io::ErrorKind::Other, "I/O error".into()));
            StoreError::Io {
                path: path.to_path_buf(),
                error: std::io::Error::new(
                    kind,
                    format!("{text} (an earlier write failed; the store must be opened again)"),
                ),
            }
        }
        other => StoreError::Corrupt {
            path: path.to_path_buf(),
            detail: other.to_string(),
        },
    }
}

impl RedbStore {
    pub(super) fn open(config: &StoreConfig) -> Result<RedbStore, StoreError> {
        let path = config.path.clone();
        std::fs::create_dir_all(&path).map_err(|error| StoreError::Io {
            path: path.clone(),
            error,
        })?;
        let file = path.join("crier.redb");
        let db = Database::builder()
            .set_cache_size(config.cache_bytes as usize)
            .create(&file)
            .map_err(|e| match e {
                redb::DatabaseError::DatabaseAlreadyOpen => StoreError::Locked(path.clone()),
                other => fail(&path, other),
            })?;
        // Tables must exist before a read transaction may open them.
        let txn = db.begin_write().map_err(|e| fail(&path, e))?;
        for table in [RECIPIENTS, META, HISTORY, OPTOUTS, TEMPLATES, INBOX] {
            txn.open_table(table).map_err(|e| fail(&path, e))?;
        }
        txn.commit().map_err(|e| fail(&path, e))?;
        let db = Arc::new(db);
        let kv = |table| RedbKv {
            path: path.clone(),
            db: db.clone(),
            table,
        };
        Ok(RedbStore {
            history: kv(HISTORY),
            optouts: kv(OPTOUTS),
            templates: kv(TEMPLATES),
            inbox: kv(INBOX),
            path,
            db,
        })
    }
}

/// One raw entry as a range yields it.
type Entry = Result<
    (
        redb::AccessGuard<'static, &'static [u8]>,
        redb::AccessGuard<'static, &'static [u8]>,
    ),
    redb::StorageError,
>;

fn get_in(
    db: &Database,
    path: &Path,
    table: Table,
    key: &[u8],
) -> Result<Option<Vec<u8>>, StoreError> {
    let txn = db.begin_read().map_err(|e| fail(path, e))?;
    let t = txn.open_table(table).map_err(|e| fail(path, e))?;
    let value = t.get(key).map_err(|e| fail(path, e))?;
    Ok(value.map(|v| v.value().to_vec()))
}

/// `start <= key < end` of `table`, in a read transaction the iterator keeps alive.
fn range_in(
    db: &Database,
    path: &Path,
    table: Table,
    start: &[u8],
    end: &[u8],
    reverse: bool,
) -> KvIter<'static> {
    let range = (|| {
        let txn = db.begin_read().map_err(|e| fail(path, e))?;
        let t = txn.open_table(table).map_err(|e| fail(path, e))?;
        t.range(start..end).map_err(|e| fail(path, e))
    })();
    let path = path.to_path_buf();
    let map = move |item: Entry| {
        item.map(|(k, v)| (k.value().to_vec(), v.value().to_vec()))
            .map_err(|e| fail(&path, e))
    };
    match range {
        Err(e) => Box::new(std::iter::once(Err(e))),
        Ok(range) if reverse => Box::new(range.rev().map(map)),
        Ok(range) => Box::new(range.map(map)),
    }
}

impl Kv for RedbKv {
    fn get(&self, key: &[u8]) -> Result<Option<Vec<u8>>, StoreError> {
        get_in(&self.db, &self.path, self.table, key)
    }

    fn range(&self, start: &[u8], end: &[u8], reverse: bool) -> KvIter<'_> {
        range_in(&self.db, &self.path, self.table, start, end, reverse)
    }

    fn apply(&self, batch: KvBatch) -> Result<(), StoreError> {
        let txn = self.db.begin_write().map_err(|e| fail(&self.path, e))?;
        {
            let mut t = txn
                .open_table(self.table)
                .map_err(|e| fail(&self.path, e))?;
            for (key, value) in &batch.ops {
                match value {
                    Some(v) => {
                        t.insert(key.as_slice(), v.as_slice())
                            .map_err(|e| fail(&self.path, e))?;
                    }
                    None => {
                        t.remove(key.as_slice()).map_err(|e| fail(&self.path, e))?;
                    }
                }
            }
        }
        txn.commit().map_err(|e| fail(&self.path, e))
    }
}

impl Store for RedbStore {
    fn recipient(&self, kind: RecipientKind, id: u64) -> Result<Option<Recipient>, StoreError> {
        let key = record_key(kind, id);
        match get_in(&self.db, &self.path, RECIPIENTS, &key)? {
            Some(bytes) => decode(&key, &bytes).map(Some),
            None => Ok(None),
        }
    }

    fn recipient_id_by_login(
        &self,
        kind: RecipientKind,
        login: &str,
    ) -> Result<Option<u64>, StoreError> {
        let value = get_in(&self.db, &self.path, RECIPIENTS, &login_key(kind, login))?;
        Ok(value.and_then(|v| {
            <[u8; 8]>::try_from(v.as_slice())
                .ok()
                .map(u64::from_be_bytes)
        }))
    }

    fn upsert_recipients(
        &self,
        recipients: &[Recipient],
        write: bool,
    ) -> Result<Vec<Upsert>, StoreError> {
        let txn = self.db.begin_write().map_err(|e| fail(&self.path, e))?;
        let mut outcomes = Vec::with_capacity(recipients.len());
        {
            let mut t = txn
                .open_table(RECIPIENTS)
                .map_err(|e| fail(&self.path, e))?;
            for r in recipients {
                // Reads inside the write transaction see this batch's earlier writes.
                let previous = t
                    .get(record_key(r.kind, r.id).as_slice())
                    .map_err(|e| fail(&self.path, e))?
                    .map(|v| v.value().to_vec());
                let plan = plan_upsert(r, previous.as_deref())?;
                outcomes.push(plan.outcome);
                if plan.outcome == Upsert::Unchanged {
                    continue;
                }
                if let Some(old) = plan.drop_login {
                    t.remove(old.as_slice()).map_err(|e| fail(&self.path, e))?;
                }
                if let Some((login, id)) = plan.put_login {
                    t.insert(login.as_slice(), id.as_slice())
                        .map_err(|e| fail(&self.path, e))?;
                }
                t.insert(plan.key.as_slice(), plan.bytes.as_slice())
                    .map_err(|e| fail(&self.path, e))?;
            }
        }
        if write {
            txn.commit().map_err(|e| fail(&self.path, e))?;
        } else {
            txn.abort().map_err(|e| fail(&self.path, e))?;
        }
        Ok(outcomes)
    }

    fn allocate_recipient_id(&self, kind: RecipientKind) -> Result<u64, StoreError> {
        let key = [b'n', kind_byte(kind)];
        let txn = self.db.begin_write().map_err(|e| fail(&self.path, e))?;
        let next = {
            let mut t = txn.open_table(META).map_err(|e| fail(&self.path, e))?;
            let current = t
                .get(key.as_slice())
                .map_err(|e| fail(&self.path, e))?
                .and_then(|v| <[u8; 8]>::try_from(v.value()).ok())
                .map(u64::from_be_bytes)
                .unwrap_or(LOCAL_ID_BASE - 1);
            let next = current + 1;
            t.insert(key.as_slice(), next.to_be_bytes().as_slice())
                .map_err(|e| fail(&self.path, e))?;
            next
        };
        txn.commit().map_err(|e| fail(&self.path, e))?;
        Ok(next)
    }

    fn recipients(&self, kind: RecipientKind) -> RecipientIter<'_> {
        let start = vec![RECORD, kind_byte(kind)];
        let end = vec![RECORD, kind_byte(kind) + 1];
        Box::new(
            range_in(&self.db, &self.path, RECIPIENTS, &start, &end, false).map(|item| {
                let (key, value) = item?;
                decode(&key, &value)
            }),
        )
    }

    fn count_recipients(&self, kind: RecipientKind) -> Result<u64, StoreError> {
        let start = vec![RECORD, kind_byte(kind)];
        let end = vec![RECORD, kind_byte(kind) + 1];
        let mut n = 0;
        for item in range_in(&self.db, &self.path, RECIPIENTS, &start, &end, false) {
            item?;
            n += 1;
        }
        Ok(n)
    }

    fn history(&self) -> &dyn Kv {
        &self.history
    }

    fn optouts(&self) -> &dyn Kv {
        &self.optouts
    }

    fn templates(&self) -> &dyn Kv {
        &self.templates
    }

    fn inbox(&self) -> &dyn Kv {
        &self.inbox
    }

    fn flush(&self) -> Result<(), StoreError> {
        // Every write transaction was committed with immediate durability.
        Ok(())
    }

    fn path(&self) -> &Path {
        &self.path
    }
}

#[cfg(test)]
mod tests {

    #[test]
    fn redb_passes_the_store_conformance_suite() {
        crate::store::tests::conformance(crate::store::Backend::Redb);
    }
}
