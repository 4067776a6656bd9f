//! The `file` provider: an outbox of JSON lines, one file per channel.
//!
//! The embedded default, so a newcomer runs a real job with no credentials and reads
//! what would have been sent in `data/outbox/sms.jsonl`.

use std::collections::HashMap;
use std::fs::{File, OpenOptions};
use std::io::{BufWriter, Write};
use std::path::{Path, PathBuf};
use std::sync::Mutex;

use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

use super::{BoxFuture, Provider, RoutedMessage, SendOutcome};
use crate::job::Channel;

#[derive(Debug, Clone, Default, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct FileConfig {
    /// Directory of the outbox files (default: `<data_dir>/outbox`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub dir: Option<PathBuf>,
}

/// The outbox: `sms.jsonl`, `email.jsonl`, … in one directory, appended to.
pub struct FileOutbox {
    dir: PathBuf,
    files: Mutex<HashMap<Channel, BufWriter<File>>>,
}

impl FileOutbox {
    pub fn new(dir: &Path) -> FileOutbox {
        FileOutbox {
            dir: dir.to_path_buf(),
            files: Mutex::new(HashMap::new()),
        }
    }

    /// The file messages of `channel` go to.
    pub fn path(&self, channel: Channel) -> PathBuf {
        self.dir.join(format!("{channel}.jsonl"))
    }

    /// Appends the message as one JSON line; its id is crier's own.
    pub fn write(&self, message: &RoutedMessage) -> SendOutcome {
        let mut files = self.files.lock().unwrap_or_else(|e| e.into_inner());
        let result = (|| -> std::io::Result<()> {
            let w = match files.entry(message.channel) {
                std::collections::hash_map::Entry::Occupied(e) => e.into_mut(),
                std::collections::hash_map::Entry::Vacant(e) => {
                    std::fs::create_dir_all(&self.dir)?;
                    let file = OpenOptions::new()
                        .create(true)
                        .append(true)
                        .open(self.dir.join(format!("{}.jsonl", message.channel)))?;
                    e.insert(BufWriter::new(file))
                }
            };
            serde_json::to_writer(&mut *w, message)?;
            w.write_all(b"\n")
        })();
        match result {
            Ok(()) => SendOutcome::Sent {
                provider_id: message.id.clone(),
            },
            Err(e) => SendOutcome::Retry {
                reason: format!("outbox {}: {e}", self.dir.display()),
            },
        }
    }

    /// Writes buffered lines to disk (fsync), before the ledger calls them sent.
    pub fn flush(&self) -> std::io::Result<()> {
        let mut files = self.files.lock().unwrap_or_else(|e| e.into_inner());
        for w in files.values_mut() {
            w.flush()?;
            w.get_ref().sync_data()?;
        }
        Ok(())
    }
}

impl Provider for FileOutbox {
    fn send<'a>(&'a self, message: &'a RoutedMessage) -> BoxFuture<'a, SendOutcome> {
        Box::pin(async move { self.write(message) })
    }

    fn sync(&self) -> Result<(), String> {
        self.flush()
            .map_err(|e| format!("outbox {}: {e}", self.dir.display()))
    }
}
