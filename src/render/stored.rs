//! Stored templates: Splynx's *Templates*, *Save as new* and *load existing*.
//!
//! A template saved under a name, for one channel, that jobs use as
//! `template: stored:NAME`. Saving checks it like `crier validate` does, so a broken
//! template never reaches the store.

use serde::{Deserialize, Serialize};

use crate::history::{Millis, now_ms};
use crate::job::Channel;
use crate::recipients::directory::Directory;
use crate::store::StoreError;

/// One stored template.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct StoredTemplate {
    pub name: String,
    pub channel: Channel,
    pub body: String,
    pub created_at: Millis,
    pub updated_at: Millis,
}

/// Is `name` usable as a template name?
pub fn valid_name(name: &str) -> bool {
    !name.is_empty()
        && name.len() <= 64
        && name
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || matches!(c, '-' | '_' | '.'))
}

/// The stored templates, over the directory's template operations. The rules (a name
/// keeps its `created_at` across saves) live here, once, above the backends.
pub struct Templates<'a> {
    directory: &'a dyn Directory,
}

impl<'a> Templates<'a> {
    pub fn new(directory: &'a dyn Directory) -> Templates<'a> {
        Templates { directory }
    }

    pub fn get(&self, name: &str) -> Result<Option<StoredTemplate>, StoreError> {
        self.directory.template(name)
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
        self.directory.put_template(&t)?;
        Ok(previous.is_some())
    }

    /// Deletes a template; returns whether it existed.
    pub fn delete(&self, name: &str) -> Result<bool, StoreError> {
        self.directory.delete_template(name)
    }

    /// Every template, by name.
    pub fn list(&self) -> impl Iterator<Item = Result<StoredTemplate, StoreError>> + '_ {
        self.directory.templates()
    }
}
