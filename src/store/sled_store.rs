//! The sled backend: the embedded default, one directory, no server.
//!
//! One tree, `recipients`, holds both the records (`r` + kind + id BE) and the login index
//! (`l` + kind + login → id BE), so a batch that upserts records and moves their logins is
//! a single atomic `apply_batch`. The page cache is bounded by `store.cache_mb`. sled
//! admits one process per directory; a second one gets [`StoreError::Locked`].

use std::collections::HashMap;
use std::path::{Path, PathBuf};

use super::{
    Kv, KvBatch, KvIter, LOCAL_ID_BASE, RECORD, RecipientIter, Store, StoreConfig, StoreError,
    Upsert, decode, kind_byte, login_key, plan_upsert, record_key,
};
use crate::history::store::HistoryStore;
use crate::history::store::sqlite::SqliteHistory;
use crate::recipients::{Recipient, RecipientKind};

pub(super) struct SledStore {
    path: PathBuf,
    /// Dropped by hand (see `Drop`): sled's own drop panics when the disk fails.
    db: std::mem::ManuallyDrop<sled::Db>,
    recipients: sled::Tree,
    meta: sled::Tree,
    history: SqliteHistory,
    optouts: SledKv,
    templates: SledKv,
}

/// One sled tree as a [`Kv`].
struct SledKv {
    path: PathBuf,
    tree: sled::Tree,
}

impl Kv for SledKv {
    fn get(&self, key: &[u8]) -> Result<Option<Vec<u8>>, StoreError> {
        self.tree
            .get(key)
            .map(|v| v.map(|v| v.to_vec()))
            .map_err(|e| map_err(&self.path, e))
    }

    fn range(&self, start: &[u8], end: &[u8], reverse: bool) -> KvIter<'_> {
        let iter = self.tree.range(start.to_vec()..end.to_vec());
        let map = move |item: sled::Result<(sled::IVec, sled::IVec)>| {
            item.map(|(k, v)| (k.to_vec(), v.to_vec()))
                .map_err(|e| map_err(&self.path, e))
        };
        if reverse {
            Box::new(iter.rev().map(map))
        } else {
            Box::new(iter.map(map))
        }
    }

    fn apply(&self, batch: KvBatch) -> Result<(), StoreError> {
        let mut b = sled::Batch::default();
        for (key, value) in batch.ops {
            match value {
                Some(v) => b.insert(key, v),
                None => b.remove(key),
            }
        }
        self.tree.apply_batch(b).map_err(|e| map_err(&self.path, e))
    }
}

impl SledStore {
    pub(super) fn open(config: &StoreConfig) -> Result<SledStore, StoreError> {
        let path = config.path.clone();
        std::fs::create_dir_all(&path).map_err(|error| StoreError::Io {
            path: path.clone(),
            error,
        })?;
        let db = open_guarded(&path, config.cache_bytes)?;
        let recipients = db.open_tree("recipients").map_err(|e| map_err(&path, e))?;
        let meta = db.open_tree("meta").map_err(|e| map_err(&path, e))?;
        let history = SqliteHistory::open(&config.history_path())?;
        let optouts = SledKv {
            path: path.clone(),
            tree: db.open_tree("optouts").map_err(|e| map_err(&path, e))?,
        };
        let templates = SledKv {
            path: path.clone(),
            tree: db.open_tree("templates").map_err(|e| map_err(&path, e))?,
        };
        Ok(SledStore {
            path,
            db: std::mem::ManuallyDrop::new(db),
            recipients,
            meta,
            history,
            optouts,
            templates,
        })
    }

    fn err(&self, e: sled::Error) -> StoreError {
        map_err(&self.path, e)
    }
}

impl Drop for SledStore {
    /// sled 0.34 syncs its file in its own drop and panics if the OS refuses (a disk that
    /// failed under a run: full, or turned read-only), which would turn a clean error exit
    /// into a crash. So the store flushes first and, when that fails, leaves the handle
    /// to the OS: nothing unflushed can be saved then anyway, and the process is ending.
    fn drop(&mut self) {
        // A flush with nothing to write syncs nothing, so ask the OS directly whether the
        // file can still be synced, as sled's drop is about to.
        let synced = self
            .db
            .flush()
            .map(drop)
            .map_err(|e| e.to_string())
            .and_then(|()| {
                std::fs::File::open(self.path.join("db"))
                    .and_then(|f| f.sync_all())
                    .map_err(|e| e.to_string())
            });
        match synced {
            // SAFETY: dropped once, here, and never used again.
            Ok(()) => unsafe { std::mem::ManuallyDrop::drop(&mut self.db) },
            Err(e) => {
                tracing::warn!(path = %self.path.display(), error = %e, "The directory store could not be flushed at close.");
            }
        }
    }
}

/// Opens sled, turning a panic of its recovery (a log damaged by lost writes, after a
/// power cut or a filesystem error, can make it panic instead of returning an error)
/// into [`StoreError::Corrupt`] with the panic's message, so crier reports a corrupt
/// store instead of crashing.
fn open_guarded(path: &Path, cache_bytes: u64) -> Result<sled::Db, StoreError> {
    let message = std::sync::Arc::new(std::sync::Mutex::new(None::<String>));
    let previous = std::panic::take_hook();
    let seen = message.clone();
    std::panic::set_hook(Box::new(move |info| {
        let text = info
            .payload()
            .downcast_ref::<&str>()
            .map(|s| s.to_string())
            .or_else(|| info.payload().downcast_ref::<String>().cloned())
            .unwrap_or_else(|| "a panic".into());
        if let Ok(mut m) = seen.lock() {
            m.get_or_insert(text);
        }
    }));
    let opened = std::panic::catch_unwind(|| {
        sled::Config::new()
            .path(path)
            .cache_capacity(cache_bytes)
            .open()
    });
    std::panic::set_hook(previous);
    match opened {
        Ok(db) => db.map_err(|e| map_err(path, e)),
        Err(_) => Err(StoreError::Corrupt {
            path: path.to_path_buf(),
            detail: format!(
                "sled's recovery failed ({})",
                message
                    .lock()
                    .ok()
                    .and_then(|m| m.clone())
                    .unwrap_or_else(|| "a panic".into())
            ),
        }),
    }
}

fn map_err(path: &Path, e: sled::Error) -> StoreError {
    match e {
        sled::Error::Io(source)
            if source.kind() == std::io::ErrorKind::WouldBlock
                || source.to_string().contains("lock") =>
        {
            StoreError::Locked(path.to_path_buf())
        }
        sled::Error::Io(error) => StoreError::Io {
            path: path.to_path_buf(),
            error: plain_io(error),
        },
        other => StoreError::Corrupt {
            path: path.to_path_buf(),
            detail: other.to_string(),
        },
    }
}

/// sled hands back a stored I/O error as a copy whose text is the original's `Debug`
/// form (`Os { code: 28, kind: StorageFull, message: "No space left on device" }`): the
/// OS error again, so it reads `No space left on device (os error 28)`.
fn plain_io(error: std::io::Error) -> std::io::Error {
    if error.raw_os_error().is_some() {
        return error;
    }
    let text = error.to_string();
    let code = text
        .strip_prefix("Os { code: ")
        .and_then(|rest| rest.split(',').next())
        .and_then(|code| code.parse::<i32>().ok());
    match code {
        Some(code) => std::io::Error::from_raw_os_error(code),
        None => error,
    }
}

impl Store for SledStore {
    fn recipient(&self, kind: RecipientKind, id: u64) -> Result<Option<Recipient>, StoreError> {
        let key = record_key(kind, id);
        match self.recipients.get(key).map_err(|e| self.err(e))? {
            Some(bytes) => decode(&key, &bytes).map(Some),
            None => Ok(None),
        }
    }

    fn recipient_id_by_login(
        &self,
        kind: RecipientKind,
        login: &str,
    ) -> Result<Option<u64>, StoreError> {
        let value = self
            .recipients
            .get(login_key(kind, login))
            .map_err(|e| self.err(e))?;
        Ok(value.and_then(|v| <[u8; 8]>::try_from(v.as_ref()).ok().map(u64::from_be_bytes)))
    }

    fn upsert_recipients(
        &self,
        recipients: &[Recipient],
        write: bool,
    ) -> Result<Vec<Upsert>, StoreError> {
        let mut batch = sled::Batch::default();
        // What this batch has already written, so repeated ids see their predecessor.
        let mut overlay: HashMap<[u8; 10], Vec<u8>> = HashMap::new();
        let mut outcomes = Vec::with_capacity(recipients.len());
        for r in recipients {
            let key = record_key(r.kind, r.id);
            let previous: Option<Vec<u8>> = match overlay.get(&key) {
                Some(v) => Some(v.clone()),
                None => self
                    .recipients
                    .get(key)
                    .map_err(|e| self.err(e))?
                    .map(|v| v.to_vec()),
            };
            let plan = plan_upsert(r, previous.as_deref())?;
            outcomes.push(plan.outcome);
            if plan.outcome == Upsert::Unchanged {
                continue;
            }
            if let Some(old) = plan.drop_login {
                batch.remove(old);
            }
            if let Some((login, id)) = plan.put_login {
                batch.insert(login, &id);
            }
            batch.insert(&plan.key, plan.bytes.as_slice());
            overlay.insert(plan.key, plan.bytes);
        }
        if write {
            self.recipients
                .apply_batch(batch)
                .map_err(|e| self.err(e))?;
        }
        Ok(outcomes)
    }

    fn allocate_recipient_id(&self, kind: RecipientKind) -> Result<u64, StoreError> {
        let key = [b'n', kind_byte(kind)];
        let next = self
            .meta
            .update_and_fetch(key, |old| {
                let current = old
                    .and_then(|v| <[u8; 8]>::try_from(v).ok())
                    .map(u64::from_be_bytes)
                    .unwrap_or(LOCAL_ID_BASE - 1);
                Some((current + 1).to_be_bytes().to_vec())
            })
            .map_err(|e| self.err(e))?;
        let bytes = next.ok_or_else(|| StoreError::Corrupt {
            path: self.path.clone(),
            detail: "id counter vanished".into(),
        })?;
        <[u8; 8]>::try_from(bytes.as_ref())
            .map(u64::from_be_bytes)
            .map_err(|_| StoreError::Corrupt {
                path: self.path.clone(),
                detail: "id counter is not 8 bytes".into(),
            })
    }

    fn recipients(&self, kind: RecipientKind) -> RecipientIter<'_> {
        let prefix = [RECORD, kind_byte(kind)];
        Box::new(self.recipients.scan_prefix(prefix).map(move |item| {
            let (key, value) = item.map_err(|e| self.err(e))?;
            decode(&key, &value)
        }))
    }

    fn count_recipients(&self, kind: RecipientKind) -> Result<u64, StoreError> {
        let mut n = 0;
        for item in self
            .recipients
            .scan_prefix([RECORD, kind_byte(kind)])
            .keys()
        {
            item.map_err(|e| self.err(e))?;
            n += 1;
        }
        Ok(n)
    }

    fn history(&self) -> &dyn HistoryStore {
        &self.history
    }

    fn optouts(&self) -> &dyn Kv {
        &self.optouts
    }

    fn templates(&self) -> &dyn Kv {
        &self.templates
    }

    fn flush(&self) -> Result<(), StoreError> {
        self.db.flush().map_err(|e| self.err(e))?;
        Ok(())
    }

    fn path(&self) -> &Path {
        &self.path
    }
}

#[cfg(test)]
mod tests {

    #[test]
    fn sled_passes_the_store_conformance_suite() {
        crate::store::tests::conformance(crate::store::Backend::Sled);
    }
}
