//! A job's recipients, from the store or straight from a CSV file, filtered.
//!
//! Both sources yield the same [`Recipient`]s through the same filter, as a stream, so
//! the engine's memory does not grow with the number of recipients.

use std::path::Path;

use phonenumber::country::Id;

use super::import::{Delimiter, ImportError, Lines, open_csv};
use super::row;
use super::{Recipient, RecipientKind};
use crate::job::{RecipientSpec, Source};
use crate::store::{Store, StoreError};

/// Why a recipient could not be read.
#[derive(Debug, thiserror::Error)]
pub enum SourceError {
    #[error(transparent)]
    Store(#[from] StoreError),
    #[error(transparent)]
    Csv(#[from] ImportError),
    #[error("{file}: line {line}: {message}")]
    Row {
        file: String,
        line: u64,
        message: String,
    },
}

pub type Recipients<'a> = Box<dyn Iterator<Item = Result<Recipient, SourceError>> + 'a>;

/// `items` in batches of up to `n`, in order: a planner asks the directory about a
/// batch at once (its opt-outs) instead of once per recipient.
pub fn batches<'a>(
    mut items: Recipients<'a>,
    n: usize,
) -> impl Iterator<Item = Vec<Result<Recipient, SourceError>>> + 'a {
    std::iter::from_fn(move || {
        let batch: Vec<_> = items.by_ref().take(n).collect();
        (!batch.is_empty()).then_some(batch)
    })
}

/// Recipients a planner takes at a time (see [`batches`]).
pub const PLAN_BATCH: usize = 512;

/// Every recipient `spec` selects. A CSV row that is not a recipient is an `Err` item;
/// the caller decides whether that stops it.
pub fn resolve<'a>(
    spec: &'a RecipientSpec,
    store: Option<&'a dyn Store>,
    region: Id,
) -> Result<Recipients<'a>, SourceError> {
    let all: Recipients<'a> = match &spec.source {
        Source::Store => {
            let store = store.ok_or_else(|| {
                SourceError::Store(StoreError::Decode {
                    key: "recipients".into(),
                    detail: "no store is open".into(),
                })
            })?;
            Box::new(
                store
                    .recipients(spec.kind)
                    .map(|r| r.map_err(SourceError::from)),
            )
        }
        Source::Csv(path) => csv_rows(path, spec.kind, region)?,
    };
    Ok(Box::new(all.filter(move |r| match r {
        Ok(r) => spec.filter.matches(r),
        Err(_) => true,
    })))
}

fn csv_rows<'a>(
    path: &Path,
    kind: RecipientKind,
    region: Id,
) -> Result<Recipients<'a>, SourceError> {
    let (reader, header) = open_csv(path, Delimiter::Auto)?;
    let file = path.display().to_string();
    let mut lines = Lines::default();
    lines.advance(&header.record);
    Ok(Box::new(reader.into_records().map(move |record| {
        let record = record.map_err(|e| SourceError::Row {
            file: file.clone(),
            line: e.position().map(|p| p.line()).unwrap_or(0),
            message: e.to_string(),
        })?;
        let line = lines.start(&record);
        lines.advance(&record);
        match row::parse(&header, &record, kind, region) {
            Ok(parsed) => Ok(parsed.recipient),
            Err(errors) => Err(SourceError::Row {
                file: file.clone(),
                line,
                message: errors
                    .iter()
                    .map(ToString::to_string)
                    .collect::<Vec<_>>()
                    .join("; "),
            }),
        }
    })))
}
