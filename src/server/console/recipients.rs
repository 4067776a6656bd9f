//! Recipients (`/recipients`): search the directory with a job's `where:` filters (read
//! by `where_from_pairs` and compiled by `Filter::compile`, as `crier recipients --where`
//! reads them), the count, and one recipient's page with their opt-out state and the
//! messages sent to them.

use axum::Extension;
use axum::extract::rejection::{PathRejection, QueryRejection};
use axum::extract::{Path, Query, State};
use serde::{Deserialize, Serialize};

use super::view::MessageRow;
use super::{Console, Ctx, PageResult, page};
use crate::history::ledger::Ledger;
use crate::history::query::{self, MessageFilter};
use crate::job::{RecipientSpec, Source};
use crate::recipients::filter::{Filter, where_from_pairs};
use crate::recipients::optout::OptOuts;
use crate::recipients::{Recipient, RecipientKind, source};
use crate::server::ApiError;
use crate::server::api::{blocking, ledger_error, path_of, query_of};

/// Recipients listed per search.
const SHOWN: usize = 100;

/// The filters of the search, as in the URL (`where:` keys).
const KEYS: [&str; 11] = [
    "status",
    "login",
    "name",
    "email",
    "phone",
    "category",
    "location",
    "billing_type",
    "partner",
    "tariff",
    "service",
];

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct SearchParams {
    kind: Option<String>,
    status: Option<String>,
    login: Option<String>,
    name: Option<String>,
    email: Option<String>,
    phone: Option<String>,
    category: Option<String>,
    location: Option<String>,
    billing_type: Option<String>,
    partner: Option<String>,
    tariff: Option<String>,
    service: Option<String>,
}

impl SearchParams {
    fn values(&self) -> [&Option<String>; 11] {
        [
            &self.status,
            &self.login,
            &self.name,
            &self.email,
            &self.phone,
            &self.category,
            &self.location,
            &self.billing_type,
            &self.partner,
            &self.tariff,
            &self.service,
        ]
    }

    /// `KEY=VALUE` pairs, as `crier recipients --where` takes them.
    fn pairs(&self) -> Vec<String> {
        KEYS.iter()
            .zip(self.values())
            .filter_map(|(k, v)| {
                v.as_deref()
                    .map(str::trim)
                    .filter(|v| !v.is_empty())
                    .map(|v| format!("{k}={v}"))
            })
            .collect()
    }
}

fn kind_of(s: Option<&str>) -> Result<RecipientKind, ApiError> {
    match s.map(str::trim).filter(|s| !s.is_empty()) {
        None | Some("customer") => Ok(RecipientKind::Customer),
        Some("lead") => Ok(RecipientKind::Lead),
        Some(other) => Err(ApiError::bad_request(format!(
            "unknown recipient kind `{other}` (expected customer or lead)"
        ))),
    }
}

#[derive(Serialize)]
struct Row {
    kind: &'static str,
    id: u64,
    name: String,
    status: String,
    phone: Option<String>,
    email: Option<String>,
    location: Option<String>,
    partner: Option<String>,
}

impl From<&Recipient> for Row {
    fn from(r: &Recipient) -> Row {
        Row {
            kind: r.kind.as_str(),
            id: r.id,
            name: r.name.clone(),
            status: r.status.as_str().to_string(),
            phone: r.phone.clone(),
            email: r.email.clone(),
            location: r.location.clone(),
            partner: r.partner.clone(),
        }
    }
}

#[derive(Serialize)]
struct SearchPage {
    kind: &'static str,
    fields: Vec<(&'static str, String)>,
    rows: Vec<Row>,
    count: u64,
    error: Option<String>,
}

pub(super) async fn list(
    State(c): State<Console>,
    Extension(ctx): Extension<Ctx>,
    q: Result<Query<SearchParams>, QueryRejection>,
) -> PageResult {
    let p = query_of(q)?;
    let kind = kind_of(p.kind.as_deref())?;
    let fields = KEYS
        .iter()
        .zip(p.values())
        .map(|(k, v)| (*k, v.clone().unwrap_or_default()))
        .collect();
    let region = c.app.config.region;
    let filter = where_from_pairs(&p.pairs()).and_then(|w| {
        Filter::compile(&w, region).map_err(|errors| {
            errors
                .iter()
                .map(|e| format!("{}: {}", e.field, e.message))
                .collect::<Vec<_>>()
                .join("; ")
        })
    });
    let (rows, count, error) = match filter {
        Err(e) => (Vec::new(), 0, Some(e)),
        Ok(filter) => {
            let app = c.app.clone();
            blocking(move || {
                let spec = RecipientSpec {
                    kind,
                    source: Source::Store,
                    filter,
                };
                let mut rows = Vec::new();
                let mut count = 0u64;
                for r in source::resolve(&spec, Some(app.store.as_ref()), region)
                    .map_err(ApiError::internal)?
                {
                    let r = r.map_err(ApiError::internal)?;
                    count += 1;
                    if rows.len() < SHOWN {
                        rows.push(Row::from(&r));
                    }
                }
                Ok((rows, count, None))
            })
            .await?
        }
    };
    Ok(page(
        &ctx,
        "recipients.html",
        &SearchPage {
            kind: kind.as_str(),
            fields,
            rows,
            count,
            error,
        },
    ))
}

#[derive(Serialize)]
struct RecipientPage {
    r: Row,
    tariffs: Vec<String>,
    opted_out: Vec<(String, bool)>,
    messages: Vec<MessageRow>,
}

pub(super) async fn show(
    State(c): State<Console>,
    Extension(ctx): Extension<Ctx>,
    path: Result<Path<(String, String)>, PathRejection>,
) -> PageResult {
    let (kind, id) = path_of(path)?;
    let kind = kind_of(Some(&kind))?;
    let id: u64 = id
        .parse()
        .map_err(|_| ApiError::bad_request(format!("`{id}` is not a recipient id (a number)")))?;
    let app = c.app.clone();
    let tz = app.config.tz;
    let data = blocking(move || {
        let store = app.store.as_ref();
        let r = store
            .recipient(kind, id)
            .map_err(ApiError::internal)?
            .ok_or_else(|| ApiError::not_found(format!("no {} {id}", kind.as_str())))?;
        let optouts = OptOuts::new(store.directory());
        let mut opted_out = Vec::new();
        for address in [r.phone.clone(), r.email.clone()].into_iter().flatten() {
            let out = optouts.contains(&address).map_err(ApiError::internal)?;
            opted_out.push((address, out));
        }
        let ledger = Ledger::new(store);
        let filter = MessageFilter {
            recipient: Some((Some(kind), id)),
            include_removed: true,
            ..MessageFilter::default()
        };
        let messages = query::messages(&ledger, &filter)
            .take(SHOWN)
            .map(|m| m.map(|m| MessageRow::new(&m, tz)))
            .collect::<Result<Vec<_>, _>>()
            .map_err(ledger_error)?;
        Ok(RecipientPage {
            tariffs: r.tariffs.iter().map(|t| t.plan.clone()).collect(),
            r: Row::from(&r),
            opted_out,
            messages,
        })
    })
    .await?;
    Ok(page(&ctx, "recipient.html", &data))
}
