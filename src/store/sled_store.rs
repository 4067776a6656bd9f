//! The sled store: the embedded default, one directory, no server.
//!
//! One sled database holds the directory's trees ([`SledDirectory`]); the history is the
//! SQLite file beside it ([`SqliteHistory`]), opened with it as one [`Store`]. The page
//! cache is bounded by `store.cache_mb`. sled
//! admits one process per directory; a second one gets [`StoreError::Locked`].

use std::path::{Path, PathBuf};

use super::{Store, StoreConfig, StoreError};
use crate::history::store::HistoryStore;
use crate::history::store::sqlite::SqliteHistory;
use crate::recipients::directory::Directory;
use crate::recipients::directory::sled::SledDirectory;

pub(super) struct SledStore {
    path: PathBuf,
    /// Dropped by hand (see `Drop`): sled's own drop panics when the disk fails.
    db: std::mem::ManuallyDrop<sled::Db>,
    directory: SledDirectory,
    history: SqliteHistory,
}

impl SledStore {
    pub(super) fn open(config: &StoreConfig) -> Result<SledStore, StoreError> {
        let path = config.path.clone();
        std::fs::create_dir_all(&path).map_err(|error| StoreError::Io {
            path: path.clone(),
            error,
        })?;
        let db = open_guarded(&path, config.cache_bytes)?;
        let history = SqliteHistory::open(&config.history_path())?;
        let directory = SledDirectory::open(&db, &path)?;
        Ok(SledStore {
            path,
            db: std::mem::ManuallyDrop::new(db),
            directory,
            history,
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

/// A sled error as a [`StoreError`] about the store at `path`.
pub(crate) fn map_err(path: &Path, e: sled::Error) -> StoreError {
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

crate::delegate_directory!(SledStore, |s| s.directory);

impl Store for SledStore {
    fn directory(&self) -> &dyn Directory {
        &self.directory
    }

    fn history(&self) -> &dyn HistoryStore {
        &self.history
    }

    fn flush(&self) -> Result<(), StoreError> {
        self.db.flush().map_err(|e| self.err(e))?;
        Ok(())
    }

    fn path(&self) -> &Path {
        &self.path
    }
}
