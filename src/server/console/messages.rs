//! The message logs (`/messages`, the seed's *Logs → SMS*), one message
//! (`/messages/{id}`), and the CSV export of the filtered list.

use axum::Extension;
use axum::extract::rejection::{PathRejection, QueryRejection};
use axum::extract::{Path, Query, State};
use axum::http::StatusCode;
use chrono::Utc;
use serde::{Deserialize, Serialize};

use super::runs::period_choices;
use super::view::MessageRow;
use super::{Console, Ctx, PageResult, page};
use crate::history::export::{Cells, messages_csv};
use crate::history::ledger::Ledger;
use crate::history::query::{self, Face, MessageFilter, MessageQuery};
use crate::history::{MessageId, MessageState, MessageType};
use crate::job::Channel;
use crate::server::ApiError;
use crate::server::api::{blocking, csv_response, ledger_error, path_of, query_of};

/// Messages per page.
const PAGE: usize = 100;

/// The logs' filters, as in the URL (the same as `GET /api/messages`), plus `id`.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct MessagesParams {
    id: Option<String>,
    channel: Option<String>,
    state: Option<String>,
    #[serde(rename = "type")]
    kind: Option<String>,
    period: Option<String>,
    from: Option<String>,
    to: Option<String>,
    phone: Option<String>,
    recipient: Option<String>,
    run: Option<String>,
    include_removed: Option<String>,
    page: Option<usize>,
}

fn given(s: &Option<String>) -> Option<&str> {
    s.as_deref().map(str::trim).filter(|s| !s.is_empty())
}

impl MessagesParams {
    fn filter(&self, c: &Console) -> Result<MessageFilter, String> {
        let config = &c.app.config;
        MessageQuery {
            channel: given(&self.channel),
            state: given(&self.state),
            kind: given(&self.kind),
            period: given(&self.period),
            from: given(&self.from),
            to: given(&self.to),
            phone: given(&self.phone),
            recipient: given(&self.recipient),
            run: given(&self.run),
            include_removed: given(&self.include_removed).is_some(),
        }
        .filter(
            Face::Api,
            config.tz,
            config.region,
            &config.default_region,
            Utc::now(),
        )
    }

    /// This query string (without `page`), for links.
    fn query(&self) -> String {
        let mut q = form_urlencoded::Serializer::new(String::new());
        for (k, v) in [
            ("id", &self.id),
            ("channel", &self.channel),
            ("state", &self.state),
            ("type", &self.kind),
            ("period", &self.period),
            ("from", &self.from),
            ("to", &self.to),
            ("phone", &self.phone),
            ("recipient", &self.recipient),
            ("run", &self.run),
            ("include_removed", &self.include_removed),
        ] {
            if let Some(v) = given(v) {
                q.append_pair(k, v);
            }
        }
        q.finish()
    }
}

#[derive(Serialize)]
struct MessagesPage {
    messages: Vec<MessageRow>,
    error: Option<String>,
    f: Form,
    channels: Vec<&'static str>,
    states: Vec<&'static str>,
    kinds: Vec<&'static str>,
    periods: Vec<super::runs::Choice>,
    query: String,
    page: usize,
    prev: Option<String>,
    next: Option<String>,
}

/// The filter values as typed, to fill the form again.
#[derive(Serialize, Default)]
struct Form {
    id: String,
    channel: String,
    state: String,
    kind: String,
    period: String,
    from: String,
    to: String,
    phone: String,
    recipient: String,
    run: String,
    include_removed: bool,
}

pub(super) async fn list(
    State(c): State<Console>,
    Extension(ctx): Extension<Ctx>,
    params: Result<Query<MessagesParams>, QueryRejection>,
) -> PageResult {
    let p = query_of(params)?;
    let n = p.page.unwrap_or(1).max(1);
    let tz = c.app.config.tz;
    let query = p.query();
    let (messages, error, more) = match given(&p.id) {
        // A message id opens that one message (Logs' "by id").
        Some(id) => match id.parse::<MessageId>() {
            Err(e) => (Vec::new(), Some(e), false),
            Ok(id) => {
                let app = c.app.clone();
                let found = blocking(move || match Ledger::new(app.store.as_ref()).message(id) {
                    Ok(m) => Ok(vec![MessageRow::new(&m, tz)]),
                    Err(crate::history::ledger::LedgerError::NoSuchMessage(_)) => Ok(vec![]),
                    Err(e) => Err(ledger_error(e)),
                })
                .await?;
                (found, None, false)
            }
        },
        None => match p.filter(&c) {
            Err(e) => (Vec::new(), Some(e), false),
            Ok(filter) => {
                let app = c.app.clone();
                let mut rows = blocking(move || {
                    let ledger = Ledger::new(app.store.as_ref());
                    query::messages(&ledger, &filter)
                        .skip((n - 1) * PAGE)
                        .take(PAGE + 1)
                        .map(|m| m.map(|m| MessageRow::new(&m, tz)))
                        .collect::<Result<Vec<_>, _>>()
                        .map_err(ledger_error)
                })
                .await?;
                let more = rows.len() > PAGE;
                rows.truncate(PAGE);
                (rows, None, more)
            }
        },
    };
    let at = |k: usize| {
        let sep = if query.is_empty() { "" } else { "&" };
        if k > 1 {
            format!("/messages?{query}{sep}page={k}")
        } else {
            format!("/messages?{query}")
        }
    };
    let v = |s: &Option<String>| given(s).unwrap_or_default().to_string();
    let data = MessagesPage {
        messages,
        error,
        f: Form {
            id: v(&p.id),
            channel: v(&p.channel),
            state: v(&p.state),
            kind: v(&p.kind),
            period: v(&p.period),
            from: v(&p.from),
            to: v(&p.to),
            phone: v(&p.phone),
            recipient: v(&p.recipient),
            run: v(&p.run),
            include_removed: given(&p.include_removed).is_some(),
        },
        channels: Channel::ALL.map(Channel::as_str).to_vec(),
        states: MessageState::ALL.map(MessageState::as_str).to_vec(),
        kinds: MessageType::ALL.map(MessageType::as_str).to_vec(),
        periods: period_choices(),
        prev: (n > 1).then(|| at(n - 1)),
        next: more.then(|| at(n + 1)),
        query,
        page: n,
    };
    let mut r = page(&ctx, "messages.html", &data);
    if data.error.is_some() {
        *r.status_mut() = StatusCode::BAD_REQUEST;
    }
    Ok(r)
}

/// The filtered list as CSV (what `GET /api/messages?format=csv` sends).
pub(super) async fn export(
    State(c): State<Console>,
    params: Result<Query<MessagesParams>, QueryRejection>,
) -> PageResult {
    let p = query_of(params)?;
    let filter = p.filter(&c).map_err(ApiError::bad_request)?;
    let app = c.app.clone();
    Ok(csv_response("messages.csv", move |w| {
        let ledger = Ledger::new(app.store.as_ref());
        messages_csv(
            &ledger,
            query::messages(&ledger, &filter),
            Cells::raw(false),
            w,
        )
        .map_err(|e| e.to_string())
    }))
}

#[derive(Serialize)]
struct MessagePage {
    m: MessageRow,
    recipient_name: Option<String>,
}

pub(super) async fn show(
    State(c): State<Console>,
    Extension(ctx): Extension<Ctx>,
    id: Result<Path<String>, PathRejection>,
) -> PageResult {
    let id: MessageId = path_of(id)?.parse().map_err(ApiError::bad_request)?;
    let app = c.app.clone();
    let tz = app.config.tz;
    let data = blocking(move || {
        let m = Ledger::new(app.store.as_ref())
            .message(id)
            .map_err(ledger_error)?;
        let name = app
            .store
            .recipient(m.recipient_kind, m.recipient_id)
            .ok()
            .flatten()
            .map(|r| r.name);
        Ok(MessagePage {
            m: MessageRow::new(&m, tz),
            recipient_name: name,
        })
    })
    .await?;
    Ok(page(&ctx, "message.html", &data))
}
