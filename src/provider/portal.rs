//! The `portal` provider: the customer-portal inbox, kept in crier's own store.
//!
//! Sending writes the message into the recipient's inbox (the history's `inbox` table,
//! apart from the messages, so purging history never empties a customer's inbox); a portal reads
//! it with `crier portal inbox CUSTOMER` or, later, the HTTP API, and marks it read.

use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

use super::{BoxFuture, Provider, RoutedMessage, SendOutcome};
use crate::history::store::{HistoryError, HistoryStore};

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

/// A customer's portal inbox, kept in the history's `inbox` table.
pub struct Inbox<'a> {
    history: &'a dyn HistoryStore,
}

impl<'a> Inbox<'a> {
    pub fn new(history: &'a dyn HistoryStore) -> Inbox<'a> {
        Inbox { history }
    }

    /// Puts a message into `customer`'s inbox (again: the same id replaces, never doubles).
    pub fn deliver(&self, customer: u64, item: &InboxItem) -> Result<(), HistoryError> {
        self.history.inbox_put(customer, item)
    }

    /// `customer`'s messages, oldest first (message ids sort by time).
    pub fn list(&self, customer: u64) -> Result<Vec<InboxItem>, HistoryError> {
        self.history.inbox_list(customer)
    }

    /// Marks a message read; `false` when `customer` has no such message. Reading twice
    /// keeps the first time.
    pub fn mark_read(&self, customer: u64, message: &str, at: i64) -> Result<bool, HistoryError> {
        self.history.inbox_mark_read(customer, message, at)
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
