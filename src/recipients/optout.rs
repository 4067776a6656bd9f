//! The opt-out list: addresses that must never be messaged, whatever a job selects.
//!
//! Phone numbers are kept in E.164 and email addresses in lower case, so `082 123 4567`
//! and `+27821234567` are one entry. The engine checks every planned message against it
//! and records a hit as `skipped` with reason `opted_out`. (An SMS reply of STOP arriving
//! by delivery report will add to it once the HTTP API lands.)

use std::cell::RefCell;
use std::collections::HashMap;

use phonenumber::country::Id;
use serde::{Deserialize, Serialize};

use super::phone;
use crate::history::{Millis, now_ms};
use crate::recipients::directory::Directory;
use crate::store::StoreError;

/// One opted-out address.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct OptOut {
    pub address: String,
    pub added_at: Millis,
    /// Where it came from: `cli`, `import`, `reply`, `unsubscribe`, a note.
    pub reason: String,
    /// The run whose message the address unsubscribed from (reason `unsubscribe`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub run: Option<String>,
    /// That message's id, when the history still holds it.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub message: Option<String>,
}

/// Normalises an address: E.164 for phones (read in `region`), lower case for email.
pub fn normalize(address: &str, region: Id) -> Result<String, String> {
    let a = address.trim();
    if a.contains('@') {
        let lower = a.to_lowercase();
        let (user, domain) = lower.split_once('@').unwrap_or_default();
        if user.is_empty() || !domain.contains('.') || lower.contains(char::is_whitespace) {
            return Err(format!("`{a}` is not an email address"));
        }
        Ok(lower)
    } else {
        phone::to_e164(a, region)
            .ok_or_else(|| format!("`{a}` is not a valid phone number or email address"))
    }
}

/// The list, over the directory's opt-out operations.
pub struct OptOuts<'a> {
    directory: &'a dyn Directory,
    /// The answers for the batch of addresses last [`OptOuts::prime`]d: each asked
    /// address, and whether it is on the list.
    primed: RefCell<HashMap<String, bool>>,
}

impl<'a> OptOuts<'a> {
    pub fn new(directory: &'a dyn Directory) -> OptOuts<'a> {
        OptOuts {
            directory,
            primed: RefCell::default(),
        }
    }

    /// Asks the directory about a batch of (normalised) addresses at once and keeps the
    /// answers until the next batch, so [`OptOuts::contains`] on them needs no lookup of
    /// its own. The answers are as fresh as this call: a planner primes each batch of
    /// recipients just before planning it.
    pub fn prime(&self, addresses: Vec<String>) -> Result<(), StoreError> {
        let out = self.directory.opted_out_among(&addresses)?;
        let mut primed = self.primed.borrow_mut();
        primed.clear();
        for a in addresses {
            let listed = out.contains(&a);
            primed.insert(a, listed);
        }
        Ok(())
    }

    /// Is this (normalised) address on the list?
    pub fn contains(&self, address: &str) -> Result<bool, StoreError> {
        if let Some(&listed) = self.primed.borrow().get(address) {
            return Ok(listed);
        }
        Ok(self.directory.optout(address)?.is_some())
    }

    /// Adds normalised addresses in one atomic write; returns how many were new.
    pub fn add(&self, addresses: &[String], reason: &str) -> Result<usize, StoreError> {
        self.add_from(addresses, reason, None, None)
    }

    /// [`OptOuts::add`], recording the run and message the opt-out came from.
    pub fn add_from(
        &self,
        addresses: &[String],
        reason: &str,
        run: Option<String>,
        message: Option<String>,
    ) -> Result<usize, StoreError> {
        let added_at = now_ms();
        let entries: Vec<OptOut> = addresses
            .iter()
            .map(|a| OptOut {
                address: a.clone(),
                added_at,
                reason: reason.to_string(),
                run: run.clone(),
                message: message.clone(),
            })
            .collect();
        self.directory.add_optouts(&entries)
    }

    /// Removes normalised addresses; returns how many were on the list.
    pub fn remove(&self, addresses: &[String]) -> Result<usize, StoreError> {
        self.directory.remove_optouts(addresses)
    }

    /// Every entry, in address order.
    pub fn list(&self) -> impl Iterator<Item = Result<OptOut, StoreError>> + '_ {
        self.directory.optouts()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn one_entry_per_person_whatever_the_spelling() {
        let za = phone::parse_region("ZA").unwrap();
        assert_eq!(normalize("082 123 4567", za).unwrap(), "+27821234567");
        assert_eq!(
            normalize(" Ann@Example.COM ", za).unwrap(),
            "ann@example.com"
        );
        assert!(normalize("12", za).is_err());
        assert!(normalize("ann@", za).is_err());

        let (_dir, store) = crate::store::scratch();
        let list = OptOuts::new(store.directory());
        let a = normalize("082 123 4567", za).unwrap();
        let b = normalize("+27 82 123 4567", za).unwrap();
        assert_eq!(list.add(std::slice::from_ref(&a), "cli").unwrap(), 1);
        assert_eq!(list.add(&[b], "cli").unwrap(), 0, "the same number");
        assert!(list.contains(&a).unwrap());
        assert_eq!(list.list().count(), 1);
        assert_eq!(list.remove(std::slice::from_ref(&a)).unwrap(), 1);
        assert!(!list.contains(&a).unwrap());

        list.add(std::slice::from_ref(&a), "cli").unwrap();
        list.prime(vec![a.clone(), "ann@example.com".into()])
            .unwrap();
        assert!(list.contains(&a).unwrap(), "a primed answer");
        assert!(!list.contains("ann@example.com").unwrap());
        list.remove(std::slice::from_ref(&a)).unwrap();
        assert!(
            list.contains(&a).unwrap(),
            "primed answers hold until the next batch"
        );
        list.prime(vec![a.clone()]).unwrap();
        assert!(!list.contains(&a).unwrap(), "the next batch asks again");
        assert!(
            !list.contains("+27831234567").unwrap(),
            "unprimed: asked on its own"
        );
    }
}
