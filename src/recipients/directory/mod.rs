//! The directory: recipients (customers, leads), the opt-out list and stored templates.
//!
//! It is a copy of the billing system's data that `crier import` can always rebuild, so
//! it lives apart from the history (the record that cannot be rebuilt) and may sit in
//! sled (the embedded default) or PostgreSQL. [`Directory`] speaks the domain's
//! operations, never bytes; `sled.rs` and `postgres.rs` are the only files that name
//! their database (the PostgreSQL SQL, migrations and queries, is in `postgres/*.sql`
//! beside it). The rules above the backends stay here and in their callers: what an
//! upsert outcome means, which login wins, how an address is normalised
//! ([`super::optout`]), when a template's `created_at` is kept ([`crate::render::stored`]).
//!
//! [`conformance`] is the one suite every backend passes: the sled one in this crate's
//! unit tests, both from `tests/storage.rs` (which has the PostgreSQL server).

pub mod conformance;
pub mod postgres;
pub mod sled;

use crate::recipients::optout::OptOut;
use crate::recipients::{Recipient, RecipientKind};
use crate::render::stored::StoredTemplate;
use crate::store::{StoreError, Upsert};

/// First id crier allocates itself.
pub const LOCAL_ID_BASE: u64 = 1_000_000_000_000;

pub type RecipientIter<'a> = Box<dyn Iterator<Item = Result<Recipient, StoreError>> + 'a>;
pub type OptOutIter<'a> = Box<dyn Iterator<Item = Result<OptOut, StoreError>> + 'a>;
pub type TemplateIter<'a> = Box<dyn Iterator<Item = Result<StoredTemplate, StoreError>> + 'a>;

/// Recipients, opt-outs and stored templates.
pub trait Directory: Send + Sync {
    /// The recipient with this id, if any.
    fn recipient(&self, kind: RecipientKind, id: u64) -> Result<Option<Recipient>, StoreError>;

    /// The id of the recipient with this portal login, if any.
    fn recipient_id_by_login(
        &self,
        kind: RecipientKind,
        login: &str,
    ) -> Result<Option<u64>, StoreError>;

    /// Inserts or replaces each recipient by `(kind, id)`, in order (a later entry with the
    /// same id wins, and its outcome is measured against the entry before it), keeping
    /// logins findable, as one atomic write. With `write == false` nothing is written and
    /// the outcomes say what would happen.
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

    /// The opt-out entry of this (normalised) address, if it is on the list.
    fn optout(&self, address: &str) -> Result<Option<OptOut>, StoreError>;

    /// Which of these (normalised) addresses are on the list: one question for a batch of
    /// recipients, so a planner on a networked directory makes one round trip, not one
    /// per address.
    fn opted_out_among(
        &self,
        addresses: &[String],
    ) -> Result<std::collections::HashSet<String>, StoreError> {
        let mut out = std::collections::HashSet::new();
        for a in addresses {
            if self.optout(a)?.is_some() {
                out.insert(a.clone());
            }
        }
        Ok(out)
    }

    /// Adds the entries whose address is not on the list yet (the first of repeated
    /// addresses), atomically; returns how many were added.
    fn add_optouts(&self, entries: &[OptOut]) -> Result<usize, StoreError>;

    /// Removes these addresses, atomically; returns how many were on the list.
    fn remove_optouts(&self, addresses: &[String]) -> Result<usize, StoreError>;

    /// Every opt-out entry, in address order.
    fn optouts(&self) -> OptOutIter<'_>;

    /// The stored template with this name, if any.
    fn template(&self, name: &str) -> Result<Option<StoredTemplate>, StoreError>;

    /// Stores `template` under its name, replacing any template of that name.
    fn put_template(&self, template: &StoredTemplate) -> Result<(), StoreError>;

    /// Deletes the template with this name; returns whether it existed.
    fn delete_template(&self, name: &str) -> Result<bool, StoreError>;

    /// Every stored template, by name.
    fn templates(&self) -> TemplateIter<'_>;

    /// Makes every write so far durable before returning (a no-op where each write is
    /// committed durably already).
    fn sync(&self) -> Result<(), StoreError>;

    /// Recipients per [`Directory::upsert_recipients`] an import writes: what this engine
    /// writes fastest. Measured on 1,000,000 rows: sled is fastest near 512 (a smaller
    /// batch keeps its tree work under one epoch guard short; 4096 was a fifth slower).
    fn import_batch(&self) -> usize {
        512
    }
}

/// Implements [`Directory`] for a type by handing every call to the directory that
/// `$field` names (a store bundle, a shared handle).
#[macro_export]
#[doc(hidden)]
macro_rules! delegate_directory {
    ($ty:ty, |$s:ident| $field:expr) => {
        impl $crate::recipients::directory::Directory for $ty {
            fn recipient(
                &self,
                kind: $crate::recipients::RecipientKind,
                id: u64,
            ) -> Result<Option<$crate::recipients::Recipient>, $crate::store::StoreError> {
                let $s = self;
                $field.recipient(kind, id)
            }
            fn recipient_id_by_login(
                &self,
                kind: $crate::recipients::RecipientKind,
                login: &str,
            ) -> Result<Option<u64>, $crate::store::StoreError> {
                let $s = self;
                $field.recipient_id_by_login(kind, login)
            }
            fn upsert_recipients(
                &self,
                recipients: &[$crate::recipients::Recipient],
                write: bool,
            ) -> Result<Vec<$crate::store::Upsert>, $crate::store::StoreError> {
                let $s = self;
                $field.upsert_recipients(recipients, write)
            }
            fn allocate_recipient_id(
                &self,
                kind: $crate::recipients::RecipientKind,
            ) -> Result<u64, $crate::store::StoreError> {
                let $s = self;
                $field.allocate_recipient_id(kind)
            }
            fn recipients(
                &self,
                kind: $crate::recipients::RecipientKind,
            ) -> $crate::recipients::directory::RecipientIter<'_> {
                let $s = self;
                $field.recipients(kind)
            }
            fn count_recipients(
                &self,
                kind: $crate::recipients::RecipientKind,
            ) -> Result<u64, $crate::store::StoreError> {
                let $s = self;
                $field.count_recipients(kind)
            }
            fn optout(
                &self,
                address: &str,
            ) -> Result<Option<$crate::recipients::optout::OptOut>, $crate::store::StoreError> {
                let $s = self;
                $field.optout(address)
            }
            fn opted_out_among(
                &self,
                addresses: &[String],
            ) -> Result<std::collections::HashSet<String>, $crate::store::StoreError> {
                let $s = self;
                $field.opted_out_among(addresses)
            }
            fn add_optouts(
                &self,
                entries: &[$crate::recipients::optout::OptOut],
            ) -> Result<usize, $crate::store::StoreError> {
                let $s = self;
                $field.add_optouts(entries)
            }
            fn remove_optouts(
                &self,
                addresses: &[String],
            ) -> Result<usize, $crate::store::StoreError> {
                let $s = self;
                $field.remove_optouts(addresses)
            }
            fn optouts(&self) -> $crate::recipients::directory::OptOutIter<'_> {
                let $s = self;
                $field.optouts()
            }
            fn template(
                &self,
                name: &str,
            ) -> Result<Option<$crate::render::stored::StoredTemplate>, $crate::store::StoreError>
            {
                let $s = self;
                $field.template(name)
            }
            fn put_template(
                &self,
                template: &$crate::render::stored::StoredTemplate,
            ) -> Result<(), $crate::store::StoreError> {
                let $s = self;
                $field.put_template(template)
            }
            fn delete_template(&self, name: &str) -> Result<bool, $crate::store::StoreError> {
                let $s = self;
                $field.delete_template(name)
            }
            fn templates(&self) -> $crate::recipients::directory::TemplateIter<'_> {
                let $s = self;
                $field.templates()
            }
            fn sync(&self) -> Result<(), $crate::store::StoreError> {
                let $s = self;
                $field.sync()
            }
            fn import_batch(&self) -> usize {
                let $s = self;
                $field.import_batch()
            }
        }
    };
}
