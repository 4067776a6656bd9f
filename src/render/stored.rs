//! Stored templates: Splynx's *Templates*, *Save as new* and *load existing*.
//!
//! A template saved under a name, for one channel, that jobs use as
//! `template: stored:NAME`. Saving checks it like `crier validate` does, so a broken
//! template never reaches the store.

use serde::{Deserialize, Serialize};

use crate::history::{Millis, now_ms};
use crate::job::Channel;
use crate::store::{Kv, KvBatch, StoreError};

/// One stored template.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct StoredTemplate {
    pub name: String,
    pub channel: Channel,
    pub body: String,
    pub created_at: Millis,
    pub updated_at: Millis,
}

fn key(name: &str) -> Vec<u8> {
    let mut k = b"t".to_vec();
    k.extend_from_slice(name.as_bytes());
    k
}

/// Is `name` usable as a template name?
pub fn valid_name(name: &str) -> bool {
    !name.is_empty()
        && name.len() <= 64
        && name
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || matches!(c, '-' | '_' | '.'))
}

/// The stored templates, over the store's template key space.
pub struct Templates<'a> {
    kv: &'a dyn Kv,
}

impl<'a> Templates<'a> {
    pub fn new(kv: &'a dyn Kv) -> Templates<'a> {
        Templates { kv }
    }

    fn decode(k: &[u8], v: &[u8]) -> Result<StoredTemplate, StoreError> {
        serde_json::from_slice(v).map_err(|e| StoreError::Decode {
            key: String::from_utf8_lossy(k).into_owned(),
            detail: e.to_string(),
        })
    }

    pub fn get(&self, name: &str) -> Result<Option<StoredTemplate>, StoreError> {
        let k = key(name);
        match self.kv.get(&k)? {
            Some(v) => Self::decode(&k, &v).map(Some),
            None => Ok(None),
        }
    }

    /// Saves (or replaces) a template; returns whether it replaced one.
    pub fn save(&self, name: &str, channel: Channel, body: &str) -> Result<bool, StoreError> {
        let previous = self.get(name)?;
        let now = now_ms();
        let t = StoredTemplate {
            name: name.to_string(),
            channel,
            body: body.to_string(),
            created_at: previous.as_ref().map_or(now, |p| p.created_at),
            updated_at: now,
        };
        let mut batch = KvBatch::default();
        batch.put(key(name), serde_json::to_vec(&t).unwrap_or_default());
        self.kv.apply(batch)?;
        Ok(previous.is_some())
    }

    /// Deletes a template; returns whether it existed.
    pub fn delete(&self, name: &str) -> Result<bool, StoreError> {
        let existed = self.get(name)?.is_some();
        let mut batch = KvBatch::default();
        batch.delete(key(name));
        self.kv.apply(batch)?;
        Ok(existed)
    }

    /// Every template, by name.
    pub fn list(&self) -> impl Iterator<Item = Result<StoredTemplate, StoreError>> + '_ {
        self.kv.range(b"t", b"u", false).map(|item| {
            let (k, v) = item?;
            Self::decode(&k, &v)
        })
    }
}
