//! The `portal` provider: the customer-portal inbox, kept in crier's own store.
//!
//! Sending writes the message into the recipient's inbox (a key space of the store, apart
//! from the history, so purging history never empties a customer's inbox); a portal reads
//! it with `crier portal inbox CUSTOMER` or, later, the HTTP API, and marks it read.

use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

use super::{BoxFuture, Provider, RoutedMessage, SendOutcome};
use crate::store::{Kv, KvBatch, StoreError};

#[derive(Debug, Clone, Default, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct PortalConfig {}

/// One message in a customer's inbox.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct InboxItem {
    /// crier's message id.
    pub id: String,
    pub title: Option<String>,
    pub body: String,
    /// When it arrived, Unix milliseconds.
    pub created_at: i64,
    /// When the customer read it.
    pub read_at: Option<i64>,
}

/// The inbox over its key space: key = customer id (8 bytes, big-endian) + message id.
pub struct Inbox<'a> {
    kv: &'a dyn Kv,
}

impl<'a> Inbox<'a> {
    pub fn new(kv: &'a dyn Kv) -> Inbox<'a> {
        Inbox { kv }
    }

    fn key(customer: u64, message: &str) -> Vec<u8> {
        let mut key = customer.to_be_bytes().to_vec();
        key.extend_from_slice(message.as_bytes());
        key
    }

    fn put(&self, customer: u64, item: &InboxItem) -> Result<(), StoreError> {
        let mut batch = KvBatch::default();
        let value = serde_json::to_vec(item).unwrap_or_default();
        batch.put(Inbox::key(customer, &item.id), value);
        self.kv.apply(batch)
    }

    /// Puts a message into `customer`'s inbox (again: the same id replaces, never doubles).
    pub fn deliver(&self, customer: u64, item: &InboxItem) -> Result<(), StoreError> {
        self.put(customer, item)
    }

    /// `customer`'s messages, oldest first (message ids sort by time).
    pub fn list(&self, customer: u64) -> Result<Vec<InboxItem>, StoreError> {
        let start = customer.to_be_bytes().to_vec();
        let end = match customer.checked_add(1) {
            Some(next) => next.to_be_bytes().to_vec(),
            None => vec![0xff; 9],
        };
        let mut items = Vec::new();
        for entry in self.kv.range(&start, &end, false) {
            let (key, value) = entry?;
            let item = serde_json::from_slice(&value).map_err(|e| StoreError::Decode {
                key: String::from_utf8_lossy(&key[8..]).into_owned(),
                detail: e.to_string(),
            })?;
            items.push(item);
        }
        Ok(items)
    }

    /// Marks a message read; `false` when `customer` has no such message. Reading twice
    /// keeps the first time.
    pub fn mark_read(&self, customer: u64, message: &str, at: i64) -> Result<bool, StoreError> {
        let Some(raw) = self.kv.get(&Inbox::key(customer, message))? else {
            return Ok(false);
        };
        let mut item: InboxItem = serde_json::from_slice(&raw).map_err(|e| StoreError::Decode {
            key: message.to_string(),
            detail: e.to_string(),
        })?;
        if item.read_at.is_none() {
            item.read_at = Some(at);
            self.put(customer, &item)?;
        }
        Ok(true)
    }
}

impl Provider for Inbox<'_> {
    fn send<'a>(&'a self, message: &'a RoutedMessage) -> BoxFuture<'a, SendOutcome> {
        Box::pin(async move {
            let item = InboxItem {
                id: message.id.clone(),
                title: message.subject.clone(),
                body: message.body.clone(),
                created_at: chrono::Utc::now().timestamp_millis(),
                read_at: None,
            };
            match self.deliver(message.recipient_id, &item) {
                Ok(()) => SendOutcome::Sent {
                    provider_id: message.id.clone(),
                },
                Err(e) => SendOutcome::Retry {
                    reason: format!("portal inbox: {e}"),
                },
            }
        })
    }
}
