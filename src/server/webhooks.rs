//! Delivery-report webhooks under `/webhooks`: each provider's report format, read into
//! one [`Report`] shape and applied to the ledger the same way.
//!
//! Authentication is what each provider allows: Twilio signs its callbacks
//! (`X-Twilio-Signature`, checked with the auth token of the configured Twilio provider
//! over `server.public_url` + path + query and the sorted form parameters); BulkSMS,
//! Clickatell, Vonage and the generic gateway cannot sign, so their URLs carry
//! `server.webhook_token` as a secret path segment, compared in constant time. A refusal
//! says nothing about why.
//!
//! A report finds its message through the ledger's provider-id index, under every
//! configured provider of the webhook's type (messages are keyed by the provider's
//! configured name). All reports of one request become one
//! [`transition`](crate::history::ledger::Ledger::transition) call: the state machine
//! refuses what would move a message backwards, so duplicates and late progress reports
//! change nothing. A report for an id the ledger does not know is logged and
//! acknowledged (the provider would only retry it). Replies of `STOP` and the
//! providers' opted-out statuses put the number on the opt-out list.
//!
//! The email APIs' event webhooks (SendGrid, Mailgun, SES through SNS) live in
//! [`email_webhooks`](super::email_webhooks) and feed the same [`ingest`]: their reports
//! may also name crier's own message id (found when the provider id is not indexed) and
//! why an address is opted out (`bounce`, `complaint`, `unsubscribe`); a `bounce`
//! counts towards `bounces.hard_bounce_limit` as `crier bounces ingest` counts it.
//!
//! Bodies are parsed here from raw bytes, so a malformed one is a 400 with a reason.
//! Status codes follow the providers' retry rules: 2xx acknowledges, a malformed report
//! or a refused credential is a 4xx (BulkSMS drops those rather than retrying), and a
//! store failure is a 5xx so the report comes again. A report is acknowledged only once
//! it is durable: requests that arrive together share one store flush ([`GroupFlush`]).

use std::path::PathBuf;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};

use axum::Router;
use axum::body::Bytes;
use axum::extract::{Path, RawQuery, State};
use axum::http::{HeaderMap, StatusCode, Uri, header};
use axum::response::{IntoResponse, Response};
use axum::routing::{any, post};
use base64::Engine as _;
use hmac::{Hmac, KeyInit, Mac};
use serde_json::Value;
use sha1::Sha1;

use super::{ApiError, Shared, constant_time_eq};
use crate::history::ledger::{Change, Ledger, LedgerError};
use crate::history::{MessageState, Millis, now_ms};
use crate::provider::ProviderConfig;
use crate::provider::http::{DeliveryReports, ReportFormat};
use crate::recipients::optout::{self, OptOuts};
use crate::store::{Store, StoreError};

/// The webhook routes. The token-less forms exist only to refuse with 401.
pub fn routes() -> Router<Shared> {
    Router::new()
        .route("/webhooks/bulksms", any(missing_token))
        .route("/webhooks/bulksms/{token}", post(bulksms))
        .route("/webhooks/clickatell", any(missing_token))
        .route(
            "/webhooks/clickatell/{token}",
            axum::routing::get(clickatell).post(clickatell),
        )
        .route("/webhooks/vonage", any(missing_token))
        .route(
            "/webhooks/vonage/{token}",
            axum::routing::get(vonage).post(vonage),
        )
        .route("/webhooks/twilio", post(twilio))
        .route("/webhooks/http/{provider}", any(missing_token))
        .route(
            "/webhooks/http/{provider}/{token}",
            axum::routing::get(http_gateway).post(http_gateway),
        )
        .merge(super::email_webhooks::routes())
}

/// What a delivery report says became of a message.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Outcome {
    Delivered,
    /// The network could not deliver it (expired, handset error).
    Undelivered,
    /// The provider or carrier refused it.
    Failed,
    /// Still on its way (queued, sent to the carrier): changes nothing.
    Progress,
}

impl Outcome {
    fn state(self) -> Option<MessageState> {
        match self {
            Outcome::Delivered => Some(MessageState::Delivered),
            Outcome::Undelivered => Some(MessageState::Undelivered),
            Outcome::Failed => Some(MessageState::Failed),
            Outcome::Progress => None,
        }
    }
}

/// One delivery report, whatever provider sent it.
#[derive(Debug, Clone, PartialEq)]
pub(crate) struct Report {
    /// The provider's message id.
    pub pid: String,
    pub outcome: Outcome,
    /// The provider's status or error code, and its text (recorded on failures).
    pub code: Option<String>,
    pub text: Option<String>,
    /// The provider's event time, when the report has one.
    pub at: Option<Millis>,
    /// The status means the recipient opted out.
    pub opted_out: bool,
    /// The recipient as the report gives it (for an opt-out of an unknown message).
    pub to: Option<String>,
    /// crier's own message id, where the provider echoes it (email APIs' custom
    /// arguments): the message is found by it when the provider id is not in the index.
    pub crier_id: Option<String>,
    /// Why the address is opted out (`bounce`, `complaint`, `unsubscribe`; default
    /// `provider`).
    pub opt_out_reason: Option<&'static str>,
}

impl Report {
    pub(crate) fn new(pid: String, outcome: Outcome) -> Report {
        Report {
            pid,
            outcome,
            code: None,
            text: None,
            at: None,
            opted_out: false,
            to: None,
            crier_id: None,
            opt_out_reason: None,
        }
    }
}

/// Everything one request carries.
#[derive(Debug, Default, Clone, PartialEq)]
pub(crate) struct Parsed {
    pub reports: Vec<Report>,
    /// Senders of `STOP`-style replies, as the provider wrote them.
    pub stops: Vec<String>,
}

/// What applying one request did: the response body, and (summed) `/metrics`'
/// `crier_delivery_reports_total` under the same names.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq, serde::Serialize)]
pub(crate) struct Applied {
    pub applied: u64,
    /// Reports that changed nothing: duplicates, late or progress reports.
    pub duplicate: u64,
    pub unknown_id: u64,
    pub opted_out: u64,
}

// ---------------------------------------------------------------------------------------
// Handlers

async fn missing_token(State(state): State<Shared>) -> Response {
    state
        .metrics
        .reports_rejected
        .fetch_add(1, Ordering::Relaxed);
    refuse(StatusCode::UNAUTHORIZED)
}

pub(super) fn refuse(status: StatusCode) -> Response {
    let text = if status == StatusCode::UNAUTHORIZED {
        "unauthorized"
    } else {
        "forbidden"
    };
    (status, axum::Json(serde_json::json!({ "error": text }))).into_response()
}

/// Checks the URL token: `None` when it is right, else the refusal to send (also when
/// none is configured).
pub(super) fn check_token(state: &Shared, presented: &str) -> Option<Response> {
    let ok = state
        .config
        .server
        .webhook_token
        .as_ref()
        .is_some_and(|t| constant_time_eq(t.expose().as_bytes(), presented.as_bytes()));
    if ok {
        None
    } else {
        state
            .metrics
            .reports_rejected
            .fetch_add(1, Ordering::Relaxed);
        tracing::warn!("Refused a delivery report with a wrong webhook token.");
        Some(refuse(StatusCode::FORBIDDEN))
    }
}

/// A 400 with its reason, counted.
pub(super) fn malformed(state: &Shared, provider: &str, reason: String) -> Response {
    state
        .metrics
        .reports_rejected
        .fetch_add(1, Ordering::Relaxed);
    tracing::info!(provider, reason = %reason, "Refused a malformed delivery report.");
    ApiError::bad_request(reason).into_response()
}

/// The configured names of every provider of `type_name`.
fn providers_of(state: &Shared, type_name: &str) -> Vec<String> {
    state
        .config
        .providers
        .iter()
        .filter(|(_, p)| p.type_name() == type_name)
        .map(|(name, _)| name.clone())
        .collect()
}

async fn bulksms(State(state): State<Shared>, Path(token): Path<String>, body: Bytes) -> Response {
    if let Some(r) = check_token(&state, &token) {
        return r;
    }
    match parse_bulksms(&body) {
        Ok(parsed) => {
            let providers = providers_of(&state, "bulksms");
            ingest(state, "bulksms", providers, parsed).await
        }
        Err(reason) => malformed(&state, "bulksms", reason),
    }
}

async fn clickatell(
    State(state): State<Shared>,
    Path(token): Path<String>,
    RawQuery(query): RawQuery,
    body: Bytes,
) -> Response {
    if let Some(r) = check_token(&state, &token) {
        return r;
    }
    match parse_clickatell(&body, query.as_deref()) {
        Ok(parsed) => {
            let providers = providers_of(&state, "clickatell");
            ingest(state, "clickatell", providers, parsed).await
        }
        Err(reason) => malformed(&state, "clickatell", reason),
    }
}

async fn vonage(
    State(state): State<Shared>,
    Path(token): Path<String>,
    RawQuery(query): RawQuery,
    body: Bytes,
) -> Response {
    if let Some(r) = check_token(&state, &token) {
        return r;
    }
    match parse_vonage(&body, query.as_deref()) {
        Ok(parsed) => {
            let providers = providers_of(&state, "vonage");
            ingest(state, "vonage", providers, parsed).await
        }
        Err(reason) => malformed(&state, "vonage", reason),
    }
}

async fn http_gateway(
    State(state): State<Shared>,
    Path((provider, token)): Path<(String, String)>,
    RawQuery(query): RawQuery,
    body: Bytes,
) -> Response {
    if let Some(r) = check_token(&state, &token) {
        return r;
    }
    let mapping = match state.config.providers.get(&provider) {
        Some(ProviderConfig::Http(c)) => c.delivery_reports.as_deref().cloned(),
        _ => None,
    };
    let Some(mapping) = mapping else {
        state
            .metrics
            .reports_rejected
            .fetch_add(1, Ordering::Relaxed);
        return ApiError::not_found(format!(
            "no http provider `{provider}` with delivery_reports is configured"
        ))
        .into_response();
    };
    match parse_http(&mapping, &body, query.as_deref()) {
        Ok(parsed) => ingest(state, "http", vec![provider], parsed).await,
        Err(reason) => malformed(&state, "http", reason),
    }
}

async fn twilio(
    State(state): State<Shared>,
    uri: Uri,
    headers: HeaderMap,
    body: Bytes,
) -> Response {
    let params = match twilio_params(&body) {
        Ok(params) => params,
        Err(reason) => return malformed(&state, "twilio", reason),
    };
    let Some(presented) = headers
        .get("x-twilio-signature")
        .and_then(|v| v.to_str().ok())
    else {
        state
            .metrics
            .reports_rejected
            .fetch_add(1, Ordering::Relaxed);
        tracing::warn!("Refused a Twilio callback without a signature.");
        return refuse(StatusCode::UNAUTHORIZED);
    };
    let url = format!(
        "{}{}",
        state.config.server.public_url,
        uri.path_and_query().map(|pq| pq.as_str()).unwrap_or("/")
    );
    // The provider whose auth token signed it: messages are looked up under its name.
    let signer = state.config.providers.iter().find_map(|(name, p)| match p {
        ProviderConfig::Twilio(c) => {
            let expected = twilio_signature(c.auth_token.expose(), &url, &params);
            constant_time_eq(expected.as_bytes(), presented.trim().as_bytes()).then(|| name.clone())
        }
        _ => None,
    });
    let Some(provider) = signer else {
        state
            .metrics
            .reports_rejected
            .fetch_add(1, Ordering::Relaxed);
        tracing::warn!("Refused a Twilio callback whose signature does not match.");
        return refuse(StatusCode::FORBIDDEN);
    };
    match parse_twilio(&params) {
        Ok(parsed) => {
            let response = ingest(state, "twilio", vec![provider], parsed).await;
            if response.status().is_success() {
                // An empty TwiML answer: nothing to reply to an inbound message.
                return (
                    [(header::CONTENT_TYPE, "text/xml")],
                    "<?xml version=\"1.0\" encoding=\"UTF-8\"?><Response/>",
                )
                    .into_response();
            }
            response
        }
        Err(reason) => malformed(&state, "twilio", reason),
    }
}

/// Applies `parsed` under `providers`, waits until it is durable, and answers.
pub(super) async fn ingest(
    state: Shared,
    kind: &'static str,
    providers: Vec<String>,
    parsed: Parsed,
) -> Response {
    let worker = state.clone();
    let result =
        tokio::task::spawn_blocking(move || apply(&worker, kind, &providers, parsed)).await;
    let (applied, wrote) = match result {
        Ok(Ok(done)) => done,
        Ok(Err(e)) => return ApiError::internal(e).into_response(),
        Err(e) => return ApiError::internal(e).into_response(),
    };
    if wrote && let Err(e) = GroupFlush::of(&state.store).flush(&state.store).await {
        return ApiError::internal(e).into_response();
    }
    axum::Json(applied).into_response()
}

/// Why applying a request failed: the store, never the request.
#[derive(Debug, thiserror::Error)]
enum ApplyError {
    #[error(transparent)]
    Ledger(#[from] LedgerError),
    #[error(transparent)]
    Store(#[from] StoreError),
}

/// Applies one request's reports in one ledger write and its opt-outs in another.
/// Returns the tally and whether anything was written.
fn apply(
    state: &Shared,
    kind: &str,
    providers: &[String],
    mut parsed: Parsed,
) -> Result<(Applied, bool), ApplyError> {
    let store = state.store.as_ref();
    let metrics = &state.metrics;
    let region = state.config.region;
    let ledger = Ledger::new(store);
    let now = now_ms();
    let mut tally = Applied::default();
    // Reports of one request in event order, so a batch cannot move a message backwards.
    parsed.reports.sort_by_key(|r| r.at.unwrap_or(now));
    let mut changes = Vec::new();
    // Per change: when the message was sent (for the lag metric).
    let mut sent_at = Vec::new();
    let mut opt_outs: Vec<(String, &'static str)> = Vec::new();
    // Addresses of hard bounces whose message the ledger does not know: the bounce counts
    // towards `bounces.hard_bounce_limit` though no message records it.
    let mut unrecorded_bounces: Vec<&str> = Vec::new();
    for report in &parsed.reports {
        let mut found = None;
        for p in providers {
            if let Some(m) = ledger.find_by_provider_id(p, &report.pid)? {
                found = Some(m);
                break;
            }
        }
        if found.is_none()
            && let Some(id) = report.crier_id.as_deref().and_then(|i| i.parse().ok())
        {
            found = match ledger.message(id) {
                Ok(m) if providers.contains(&m.provider) => Some(m),
                Ok(_) | Err(LedgerError::NoSuchMessage(_)) => None,
                Err(e) => return Err(e.into()),
            };
        }
        let opt_out_reason = report.opt_out_reason.unwrap_or("provider");
        let Some(message) = found else {
            tally.unknown_id += 1;
            tracing::info!(provider = kind, provider_message_id = %report.pid, "Delivery report for an unknown message id; acknowledged.");
            if report.opted_out
                && let Some(to) = &report.to
            {
                opt_outs.push((to.clone(), opt_out_reason));
                if opt_out_reason == "bounce" {
                    unrecorded_bounces.push(to);
                }
            }
            continue;
        };
        if report.opted_out {
            opt_outs.push((message.address.clone(), opt_out_reason));
        }
        let Some(to) = report.outcome.state() else {
            tally.duplicate += 1;
            continue;
        };
        // Never before the message's last change, never in the future.
        let at = report.at.unwrap_or(now).min(now).max(message.updated_at);
        let error = (to != MessageState::Delivered).then(|| {
            (
                report.code.clone().unwrap_or_else(|| to.as_str().into()),
                report.text.clone().unwrap_or_default(),
            )
        });
        tracing::debug!(provider = kind, message = %message.id, state = %to, "Delivery report.");
        sent_at.push(
            message
                .transitions
                .iter()
                .rev()
                .find(|(s, _)| *s == MessageState::Sent)
                .map(|(_, t)| *t),
        );
        changes.push(Change {
            id: message.id,
            to,
            at,
            provider_message_id: None,
            error,
            reason: None,
            attempt: false,
            failover: None,
            worker: None,
        });
    }
    let mut wrote = false;
    if !changes.is_empty() {
        let results = ledger.transition(&changes)?;
        wrote = true;
        for ((result, change), sent) in results.iter().zip(&changes).zip(&sent_at) {
            match result {
                Ok(()) => {
                    tally.applied += 1;
                    if let Some(sent) = sent {
                        let lag = (change.at - sent).max(0) as u64;
                        metrics.report_lag_ms_sum.fetch_add(lag, Ordering::Relaxed);
                        metrics.report_lag_count.fetch_add(1, Ordering::Relaxed);
                    }
                }
                Err(_) => tally.duplicate += 1,
            }
        }
    }
    for from in &parsed.stops {
        opt_outs.push((from.clone(), "reply"));
    }
    let list = OptOuts::new(store.directory());
    let hard_bounce_limit = state.config.bounces.hard_bounce_limit.max(1) as usize;
    for (raw, reason) in &opt_outs {
        // A hard bounce opts out once the address has bounced `hard_bounce_limit` times,
        // counted as `crier bounces ingest` counts them (this one included).
        if *reason == "bounce" && hard_bounce_limit > 1 {
            let unrecorded = usize::from(unrecorded_bounces.contains(&raw.as_str()));
            if crate::bounces::hard_bounces(&ledger, raw)? + unrecorded < hard_bounce_limit {
                continue;
            }
        }
        let address = if raw.contains('@') {
            optout::normalize(raw, region).ok()
        } else {
            phone_of(raw, region)
        };
        match address {
            Some(address) => {
                let added = list.add(std::slice::from_ref(&address), reason)?;
                if added > 0 {
                    wrote = true;
                    tally.opted_out += added as u64;
                    tracing::info!(
                        provider = kind,
                        reason,
                        "Added an address to the opt-out list."
                    );
                }
            }
            None => tracing::info!(
                provider = kind,
                "An opt-out names no valid phone number or email address; ignored."
            ),
        }
    }
    metrics
        .reports_applied
        .fetch_add(tally.applied, Ordering::Relaxed);
    metrics
        .reports_duplicate
        .fetch_add(tally.duplicate, Ordering::Relaxed);
    metrics
        .reports_unknown_id
        .fetch_add(tally.unknown_id, Ordering::Relaxed);
    metrics
        .reports_opted_out
        .fetch_add(tally.opted_out, Ordering::Relaxed);
    Ok((tally, wrote))
}

/// A provider's rendering of a phone number in E.164: `+…` as is, bare international
/// digits (`27821234567`, as Vonage and BulkSMS write them) with a `+`, anything else read
/// in the configured region.
fn phone_of(raw: &str, region: phonenumber::country::Id) -> Option<String> {
    let raw = raw.trim();
    if !raw.starts_with('+')
        && !raw.starts_with('0')
        && raw.len() >= 8
        && raw.bytes().all(|b| b.is_ascii_digit())
        && let Ok(e164) = optout::normalize(&format!("+{raw}"), region)
    {
        return Some(e164);
    }
    optout::normalize(raw, region)
        .ok()
        .filter(|a| !a.contains('@'))
}

// ---------------------------------------------------------------------------------------
// Durability

/// Group commit: a request's writes are acknowledged only after a store flush that began
/// after them. Requests that arrive while a flush runs share the next one, so a busy
/// server flushes as often as the disk allows and an idle one answers without delay.
///
/// One per store (keyed by its path: one process holds a store), so it needs no field in
/// the server's state.
pub struct GroupFlush {
    /// Tickets handed out: one per request that wrote.
    requested: AtomicU64,
    /// The highest ticket a completed flush covers.
    flushed: tokio::sync::watch::Sender<u64>,
    /// Held by the request that is flushing for everyone.
    leader: tokio::sync::Mutex<()>,
}

static GROUPS: Mutex<Vec<(PathBuf, Arc<GroupFlush>)>> = Mutex::new(Vec::new());

impl GroupFlush {
    /// The group of `store`.
    pub fn of(store: &Arc<dyn Store>) -> Arc<GroupFlush> {
        let mut groups = GROUPS.lock().unwrap_or_else(|e| e.into_inner());
        if let Some((_, g)) = groups.iter().find(|(p, _)| p == store.path()) {
            return g.clone();
        }
        let g = Arc::new(GroupFlush {
            requested: AtomicU64::new(0),
            flushed: tokio::sync::watch::channel(0).0,
            leader: tokio::sync::Mutex::new(()),
        });
        groups.push((store.path().to_path_buf(), g.clone()));
        g
    }

    /// Returns once every write made before the call is durable.
    pub async fn flush(&self, store: &Arc<dyn Store>) -> Result<(), StoreError> {
        let ticket = self.requested.fetch_add(1, Ordering::SeqCst) + 1;
        let mut seen = self.flushed.subscribe();
        loop {
            if *seen.borrow_and_update() >= ticket {
                return Ok(());
            }
            if let Ok(guard) = self.leader.try_lock() {
                if *self.flushed.borrow() >= ticket {
                    return Ok(());
                }
                let target = self.requested.load(Ordering::SeqCst);
                let s = store.clone();
                let result = tokio::task::spawn_blocking(move || s.flush())
                    .await
                    .unwrap_or_else(|e| {
                        Err(StoreError::Io {
                            path: store.path().to_path_buf(),
                            error: std::io::Error::other(e.to_string()),
                        })
                    });
                // Let go before waking the others, so one of them can lead next.
                drop(guard);
                match result {
                    Ok(()) => {
                        self.flushed.send_modify(|f| *f = (*f).max(target));
                        return Ok(());
                    }
                    Err(e) => {
                        // Wake the others: each tries again for itself.
                        self.flushed.send_modify(|_| {});
                        return Err(e);
                    }
                }
            }
            if seen.changed().await.is_err() {
                return Ok(());
            }
        }
    }
}

// ---------------------------------------------------------------------------------------
// Twilio's signature

/// `X-Twilio-Signature` of a request: HMAC-SHA1, keyed by the auth token, over the full
/// URL followed by every form parameter as name and value, sorted by name (and a repeated
/// name's values sorted), in base64.
pub fn twilio_signature(auth_token: &str, url: &str, params: &[(String, String)]) -> String {
    let mut sorted: Vec<&(String, String)> = params.iter().collect();
    sorted.sort();
    // HMAC takes a key of any length.
    let mut mac = Hmac::<Sha1>::new_from_slice(auth_token.as_bytes()).expect("any key length");
    mac.update(url.as_bytes());
    for (name, value) in sorted {
        mac.update(name.as_bytes());
        mac.update(value.as_bytes());
    }
    base64::engine::general_purpose::STANDARD.encode(mac.finalize().into_bytes())
}

// ---------------------------------------------------------------------------------------
// Parsers: bytes in, reports out, a reason on anything malformed.

/// Is a reply an opt-out? The whole text, without case or surrounding punctuation, is one
/// of the keywords carriers honour.
pub(crate) fn is_stop(text: &str) -> bool {
    let word = text
        .trim_matches(|c: char| !c.is_alphanumeric())
        .to_uppercase();
    matches!(
        word.as_str(),
        "STOP"
            | "STOPALL"
            | "STOP ALL"
            | "UNSUBSCRIBE"
            | "CANCEL"
            | "END"
            | "QUIT"
            | "OPTOUT"
            | "OPT OUT"
            | "OPT-OUT"
            | "REVOKE"
    )
}

/// A field as text: strings as they are, numbers printed.
fn text_of(v: &Value) -> Option<String> {
    match v {
        Value::String(s) => Some(s.clone()),
        Value::Number(n) => Some(n.to_string()),
        _ => None,
    }
}

/// A value from a request, for an error message: in backticks, control characters
/// escaped, cut after 40 characters, so a hostile body cannot flood or forge log lines.
fn quoted(value: &str) -> String {
    const MAX: usize = 40;
    let mut shown: String = value
        .chars()
        .take(MAX)
        .collect::<String>()
        .escape_debug()
        .to_string();
    if value.chars().count() > MAX {
        shown.push('…');
    }
    format!("`{shown}`")
}

pub(super) fn field(obj: &Value, name: &str) -> Option<String> {
    obj.get(name).and_then(text_of).filter(|s| !s.is_empty())
}

pub(super) fn json(body: &[u8]) -> Result<Value, String> {
    serde_json::from_slice(body).map_err(|e| format!("the body is not JSON: {e}"))
}

/// A time as providers write it: Unix seconds or milliseconds, RFC 3339, or
/// `YYYY-MM-DD HH:MM:SS` in UTC. `None` when it is none of these.
pub(crate) fn parse_time(s: &str) -> Option<Millis> {
    let s = s.trim();
    if let Ok(n) = s.parse::<i64>() {
        // (`unsigned_abs`: the absolute value of i64::MIN does not fit an i64.)
        return Some(if n.unsigned_abs() >= 100_000_000_000 {
            n
        } else {
            n * 1000
        });
    }
    if let Ok(t) = chrono::DateTime::parse_from_rfc3339(s) {
        return Some(t.timestamp_millis());
    }
    chrono::NaiveDateTime::parse_from_str(s, "%Y-%m-%d %H:%M:%S")
        .ok()
        .map(|t| t.and_utc().timestamp_millis())
}

/// BulkSMS: a JSON array of `Message` (a single object is read as one). `SENT` messages
/// are delivery reports by `status.type`/`subtype`; `RECEIVED` ones are replies.
pub(crate) fn parse_bulksms(body: &[u8]) -> Result<Parsed, String> {
    let root = json(body)?;
    let items = match root {
        Value::Array(items) => items,
        obj @ Value::Object(_) => vec![obj],
        _ => return Err("expected a JSON array of messages".into()),
    };
    let mut parsed = Parsed::default();
    for (i, item) in items.iter().enumerate() {
        if !item.is_object() {
            return Err(format!("item {i}: expected a message object"));
        }
        let kind = field(item, "type").unwrap_or_else(|| "SENT".into());
        if kind.eq_ignore_ascii_case("RECEIVED") {
            if let (Some(from), Some(text)) = (field(item, "from"), field(item, "body"))
                && is_stop(&text)
            {
                parsed.stops.push(from);
            }
            continue;
        }
        let id = field(item, "id").ok_or_else(|| format!("item {i}: no `id`"))?;
        let status = item
            .get("status")
            .filter(|s| s.is_object())
            .ok_or_else(|| format!("item {i}: no `status` object"))?;
        let status_type = field(status, "type")
            .ok_or_else(|| format!("item {i}: no `status.type`"))?
            .to_ascii_uppercase();
        let subtype = field(status, "subtype")
            .filter(|s| s != "null")
            .map(|s| s.to_ascii_uppercase());
        let outcome = match (status_type.as_str(), subtype.as_deref()) {
            ("DELIVERED", _) => Outcome::Delivered,
            ("FAILED", Some("EXPIRED" | "HANDSET_ERROR")) => Outcome::Undelivered,
            ("FAILED", _) => Outcome::Failed,
            _ => Outcome::Progress,
        };
        let mut report = Report::new(id, outcome);
        report.code =
            Some(field(status, "id").unwrap_or_else(|| {
                format!("{status_type}.{}", subtype.as_deref().unwrap_or("null"))
            }));
        report.text = Some(subtype.clone().unwrap_or(status_type.clone()));
        // Blocked: the recipient replied STOP at some point, BulkSMS says.
        report.opted_out = outcome == Outcome::Failed && subtype.as_deref() == Some("BLOCKED");
        report.to = field(item, "to");
        parsed.reports.push(report);
    }
    Ok(parsed)
}

/// The outcome of a Clickatell status: by name (One API), else by code.
fn clickatell_outcome(code: Option<i64>, status: Option<&str>) -> Outcome {
    let by_name = status.and_then(|s| match s.to_ascii_uppercase().as_str() {
        "DEVICE_ACK" | "READ" => Some(Outcome::Delivered),
        "EXPIRED" | "DELIVERY_FAILURE" => Some(Outcome::Undelivered),
        "QUEUED" | "SCHEDULED" | "SENT_TO_SUPPLIER" | "UNKNOWN" | "EMULATED" => {
            Some(Outcome::Progress)
        }
        "STOPPED_BY_USER"
        | "STOPPED_BY_ADMIN"
        | "INSUFFICIENT_ACCOUNT_BALANCE"
        | "VOLUME_LIMIT"
        | "VOLUME_LIMIT_DAILY"
        | "VOLUME_LIMIT_MONTHLY"
        | "RECIPIENT_DOES_NOT_EXIST"
        | "ROUTING_ERROR" => Some(Outcome::Failed),
        _ => None,
    });
    by_name.unwrap_or(match code {
        Some(5 | 6) => Outcome::Delivered,
        Some(20 | 23) => Outcome::Undelivered,
        Some(21 | 22 | 25..=29 | 60 | 61 | 80..=85 | 100) => Outcome::Failed,
        _ => Outcome::Progress,
    })
}

/// One Clickatell status item (One API `messageStatusUpdate[]` entry or a legacy flat
/// callback).
fn clickatell_item(item: &Value, at: &str) -> Result<Report, String> {
    let id = field(item, "messageId")
        .or_else(|| field(item, "apiMessageId"))
        .ok_or_else(|| format!("{at}: no `messageId`"))?;
    let code_text = field(item, "statusCode");
    let code = match &code_text {
        Some(c) => Some(
            c.trim()
                .parse::<i64>()
                .map_err(|_| format!("{at}: `statusCode` {} is not a number", quoted(c)))?,
        ),
        None => None,
    };
    let status = field(item, "status");
    if code.is_none() && status.is_none() {
        return Err(format!("{at}: no `statusCode` or `status`"));
    }
    let outcome = clickatell_outcome(code, status.as_deref());
    let mut report = Report::new(id, outcome);
    report.code = code.map(|c| c.to_string()).or(status.clone());
    report.text = field(item, "statusDescription").or(status.clone());
    report.at = field(item, "timestamp").and_then(|t| parse_time(&t));
    report.opted_out = code == Some(21)
        || status
            .as_deref()
            .is_some_and(|s| s.eq_ignore_ascii_case("STOPPED_BY_USER"));
    report.to = field(item, "to");
    Ok(report)
}

/// Clickatell: a One API envelope (`event.messageStatusUpdate[]`), or a legacy status
/// callback as a JSON body, a form body or a query string.
pub(crate) fn parse_clickatell(body: &[u8], query: Option<&str>) -> Result<Parsed, String> {
    let root = fields_or_json(body, query)?;
    let mut parsed = Parsed::default();
    if let Some(event) = root.get("event") {
        if !event.is_object() {
            return Err("`event` is not an object".into());
        }
        // Other event types are acknowledged and ignored, as Clickatell asks.
        if let Some(updates) = event.get("messageStatusUpdate") {
            let updates = updates
                .as_array()
                .ok_or("`event.messageStatusUpdate` is not an array")?;
            for (i, u) in updates.iter().enumerate() {
                parsed.reports.push(clickatell_item(
                    u,
                    &format!("event.messageStatusUpdate[{i}]"),
                )?);
            }
        }
        return Ok(parsed);
    }
    if root.get("messageId").is_some() || root.get("apiMessageId").is_some() {
        parsed.reports.push(clickatell_item(&root, "callback")?);
        return Ok(parsed);
    }
    Err("neither a One API event (`event`) nor a status callback (`messageId`)".into())
}

/// A body's fields as one JSON object: a JSON object as is, a form body or (with no
/// body) the query string as an object of strings.
fn fields_or_json(body: &[u8], query: Option<&str>) -> Result<Value, String> {
    let trimmed = body.trim_ascii_start();
    if trimmed.is_empty() {
        return match query {
            Some(q) if !q.is_empty() => Ok(form_object(q.as_bytes())),
            _ => Err("the request has no body and no query".into()),
        };
    }
    if trimmed.starts_with(b"{") || trimmed.starts_with(b"[") {
        let v = json(body)?;
        if !v.is_object() {
            return Err("expected a JSON object".into());
        }
        return Ok(v);
    }
    if std::str::from_utf8(body).is_err() {
        return Err("the body is neither JSON nor a UTF-8 form".into());
    }
    Ok(form_object(body))
}

fn form_object(bytes: &[u8]) -> Value {
    Value::Object(
        form_urlencoded::parse(bytes)
            .map(|(k, v)| (k.into_owned(), Value::String(v.into_owned())))
            .collect(),
    )
}

/// Vonage: a DLR (`messageId`, `status`, `err-code`, `message-timestamp`) or an inbound
/// message (`msisdn`, `text`, no `status`), as JSON, a form or a query string.
pub(crate) fn parse_vonage(body: &[u8], query: Option<&str>) -> Result<Parsed, String> {
    let root = fields_or_json(body, query)?;
    let mut parsed = Parsed::default();
    let status = field(&root, "status");
    if status.is_none()
        && let Some(text) = root.get("text").and_then(text_of)
    {
        let from = field(&root, "msisdn").ok_or("an inbound message without `msisdn`")?;
        if is_stop(&text) {
            parsed.stops.push(from);
        }
        return Ok(parsed);
    }
    let id = field(&root, "messageId").ok_or("no `messageId`")?;
    let status = status.ok_or("no `status`")?.to_ascii_lowercase();
    let outcome = match status.as_str() {
        "delivered" => Outcome::Delivered,
        "expired" | "failed" => Outcome::Undelivered,
        "rejected" => Outcome::Failed,
        _ => Outcome::Progress,
    };
    let mut report = Report::new(id, outcome);
    report.code = field(&root, "err-code").or(Some(status.clone()));
    report.text = Some(status);
    report.at = field(&root, "message-timestamp").and_then(|t| parse_time(&t));
    report.to = field(&root, "msisdn");
    parsed.reports.push(report);
    Ok(parsed)
}

/// A Twilio callback's form parameters, in the order sent (the signature covers them).
pub(crate) fn twilio_params(body: &[u8]) -> Result<Vec<(String, String)>, String> {
    if std::str::from_utf8(body).is_err() {
        return Err("the body is not UTF-8".into());
    }
    Ok(form_urlencoded::parse(body)
        .map(|(k, v)| (k.into_owned(), v.into_owned()))
        .collect())
}

/// Twilio: a StatusCallback (`MessageSid`, `MessageStatus`, `ErrorCode`) or an inbound
/// message (`SmsStatus=received`, `Body`, `From`).
pub(crate) fn parse_twilio(params: &[(String, String)]) -> Result<Parsed, String> {
    let get = |name: &str| {
        params
            .iter()
            .find(|(k, _)| k == name)
            .map(|(_, v)| v.as_str())
            .filter(|v| !v.is_empty())
    };
    let mut parsed = Parsed::default();
    let status = get("MessageStatus").or(get("SmsStatus"));
    if status.is_none_or(|s| s.eq_ignore_ascii_case("received")) {
        let Some(from) = get("From") else {
            return Err("no `MessageStatus` and no inbound `From`".into());
        };
        let opt_out = get("OptOutType").is_some_and(|t| t.eq_ignore_ascii_case("STOP"));
        if opt_out || get("Body").is_some_and(is_stop) {
            parsed.stops.push(from.to_string());
        }
        return Ok(parsed);
    }
    let status = status.unwrap_or_default().to_ascii_lowercase();
    let id = get("MessageSid")
        .or(get("SmsSid"))
        .ok_or("no `MessageSid`")?;
    let outcome = match status.as_str() {
        "delivered" | "read" => Outcome::Delivered,
        "undelivered" => Outcome::Undelivered,
        "failed" | "canceled" => Outcome::Failed,
        _ => Outcome::Progress,
    };
    let mut report = Report::new(id.to_string(), outcome);
    let code = get("ErrorCode");
    report.code = Some(code.unwrap_or(&status).to_string());
    report.text = Some(status.clone());
    // 21610: the recipient has unsubscribed (replied STOP to this sender).
    report.opted_out = code == Some("21610");
    report.to = get("To").map(str::to_string);
    // RawDlrDoneDate is the carrier's YYMMDDhhmm (UTC), minute precision.
    report.at = get("RawDlrDoneDate").and_then(|d| {
        chrono::NaiveDateTime::parse_from_str(&format!("{d}00"), "%y%m%d%H%M%S")
            .ok()
            .map(|t| t.and_utc().timestamp_millis())
    });
    parsed.reports.push(report);
    Ok(parsed)
}

/// The generic gateway, by its `delivery_reports` mapping.
pub(crate) fn parse_http(
    mapping: &DeliveryReports,
    body: &[u8],
    query: Option<&str>,
) -> Result<Parsed, String> {
    let items = match mapping.format {
        ReportFormat::Json => match json(body)? {
            Value::Array(items) => items,
            obj @ Value::Object(_) => vec![obj],
            _ => return Err("expected a JSON object or an array of them".into()),
        },
        ReportFormat::Form => {
            if std::str::from_utf8(body).is_err() {
                return Err("the body is not a UTF-8 form".into());
            }
            vec![form_object(body)]
        }
        ReportFormat::Query => vec![form_object(query.unwrap_or("").as_bytes())],
    };
    let lookup = |item: &Value, path: &str| -> Option<String> {
        match mapping.format {
            ReportFormat::Json => crate::provider::http::json_value(item, path),
            _ => field(item, path),
        }
    };
    let mut parsed = Parsed::default();
    for (i, item) in items.iter().enumerate() {
        let at = if items.len() > 1 {
            format!("item {i}: ")
        } else {
            String::new()
        };
        let id = lookup(item, &mapping.message_id)
            .ok_or_else(|| format!("{at}no `{}`", mapping.message_id))?;
        let status =
            lookup(item, &mapping.status).ok_or_else(|| format!("{at}no `{}`", mapping.status))?;
        let is = |list: &[String]| list.iter().any(|v| v.eq_ignore_ascii_case(&status));
        let (outcome, opted_out) = if is(&mapping.delivered) {
            (Outcome::Delivered, false)
        } else if is(&mapping.undelivered) {
            (Outcome::Undelivered, false)
        } else if is(&mapping.failed) {
            (Outcome::Failed, false)
        } else if is(&mapping.opted_out) {
            (Outcome::Failed, true)
        } else {
            (Outcome::Progress, false)
        };
        let mut report = Report::new(id, outcome);
        report.code = mapping
            .error_code
            .as_deref()
            .and_then(|f| lookup(item, f))
            .or(Some(status.clone()));
        report.text = Some(status);
        report.at = mapping
            .time
            .as_deref()
            .and_then(|f| lookup(item, f))
            .and_then(|t| parse_time(&t));
        report.opted_out = opted_out;
        parsed.reports.push(report);
    }
    Ok(parsed)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn twilio_signature_matches_the_published_test_vector() {
        let params: Vec<(String, String)> = [
            ("CallSid", "CA1234567890ABCDE"),
            ("Caller", "+12349013030"),
            ("Digits", "1234"),
            ("From", "+12349013030"),
            ("To", "+18005551212"),
        ]
        .iter()
        .map(|(k, v)| (k.to_string(), v.to_string()))
        .collect();
        let url = "https://mycompany.com/myapp.php?foo=1&bar=2";
        assert_eq!(
            twilio_signature("12345", url, &params),
            "0/KCTR6DLpKmkAf8muzZqo1nDgQ="
        );
        // Order of the posted parameters does not matter; their values do.
        let mut reversed = params.clone();
        reversed.reverse();
        assert_eq!(
            twilio_signature("12345", url, &reversed),
            "0/KCTR6DLpKmkAf8muzZqo1nDgQ="
        );
        let mut tampered = params.clone();
        tampered[2].1 = "1235".into();
        assert_ne!(
            twilio_signature("12345", url, &tampered),
            "0/KCTR6DLpKmkAf8muzZqo1nDgQ="
        );
        assert_ne!(
            twilio_signature("12346", url, &params),
            "0/KCTR6DLpKmkAf8muzZqo1nDgQ="
        );
    }

    #[test]
    fn bulksms_statuses_map_to_outcomes() {
        let body = br#"[
          {"id":"1","type":"SENT","to":"27821234567","status":{"id":"DELIVERED.null","type":"DELIVERED","subtype":null}},
          {"id":"2","type":"SENT","status":{"id":"FAILED.EXPIRED","type":"FAILED","subtype":"EXPIRED"}},
          {"id":"3","type":"SENT","status":{"id":"FAILED.BLOCKED","type":"FAILED","subtype":"BLOCKED"}},
          {"id":"4","type":"SENT","status":{"id":"SENT.null","type":"SENT"}},
          {"id":"5","type":"RECEIVED","from":"27831234567","body":" stop! ","status":{"type":"RECEIVED"}}
        ]"#;
        let p = parse_bulksms(body).unwrap();
        let outcomes: Vec<_> = p.reports.iter().map(|r| r.outcome).collect();
        assert_eq!(
            outcomes,
            [
                Outcome::Delivered,
                Outcome::Undelivered,
                Outcome::Failed,
                Outcome::Progress
            ]
        );
        assert_eq!(p.reports[1].code.as_deref(), Some("FAILED.EXPIRED"));
        assert!(p.reports[2].opted_out && !p.reports[1].opted_out);
        assert_eq!(p.stops, ["27831234567"]);
        assert!(parse_bulksms(b"[]").unwrap().reports.is_empty());
    }

    #[test]
    fn malformed_bodies_have_a_reason() {
        assert!(
            parse_bulksms(b"{not json")
                .unwrap_err()
                .contains("not JSON")
        );
        assert!(parse_bulksms(b"42").unwrap_err().contains("array"));
        assert!(
            parse_bulksms(br#"[{"id":"1","type":"SENT"}]"#)
                .unwrap_err()
                .contains("item 0: no `status`")
        );
        assert!(parse_clickatell(br#"{"foo":1}"#, None).is_err());
        assert!(
            parse_clickatell(br#"{"messageId":"a","statusCode":"x"}"#, None)
                .unwrap_err()
                .contains("not a number")
        );
        assert!(
            parse_vonage(br#"{"status":"delivered"}"#, None)
                .unwrap_err()
                .contains("messageId")
        );
        assert!(parse_vonage(b"", None).is_err());
        assert!(parse_twilio(&[]).is_err());
    }

    #[test]
    fn clickatell_reads_one_api_and_legacy_callbacks() {
        let one = br#"{"integrationId":"i","integrationName":"n","event":{"messageStatusUpdate":[
            {"channel":"sms","timestamp":1700000000000,"statusCode":5,"status":"DEVICE_ACK","messageId":"a"},
            {"channel":"sms","timestamp":1700000001000,"statusCode":21,"status":"STOPPED_BY_USER","messageId":"b"}]}}"#;
        let p = parse_clickatell(one, None).unwrap();
        assert_eq!(p.reports[0].outcome, Outcome::Delivered);
        assert_eq!(p.reports[0].at, Some(1_700_000_000_000));
        assert_eq!(p.reports[1].outcome, Outcome::Failed);
        assert!(p.reports[1].opted_out);
        let legacy = parse_clickatell(
            b"",
            Some("messageId=c&statusCode=23&status=DELIVERY_FAILURE&timestamp=1700000000"),
        )
        .unwrap();
        assert_eq!(legacy.reports[0].outcome, Outcome::Undelivered);
        assert_eq!(legacy.reports[0].at, Some(1_700_000_000_000));
        let other = br#"{"event":{"moMessage":[]}}"#;
        assert!(parse_clickatell(other, None).unwrap().reports.is_empty());
    }

    #[test]
    fn vonage_and_twilio_read_reports_and_replies() {
        let p = parse_vonage(
            br#"{"msisdn":"27821234567","to":"crier","messageId":"v1","status":"delivered","err-code":"0","message-timestamp":"2026-01-02 03:04:05"}"#,
            None,
        )
        .unwrap();
        assert_eq!(p.reports[0].outcome, Outcome::Delivered);
        assert_eq!(
            p.reports[0].at,
            Some(parse_time("2026-01-02T03:04:05Z").unwrap())
        );
        let form = parse_vonage(b"messageId=v2&status=rejected&err-code=6", None).unwrap();
        assert_eq!(form.reports[0].outcome, Outcome::Failed);
        assert_eq!(form.reports[0].code.as_deref(), Some("6"));
        let mo = parse_vonage(b"msisdn=27821234567&to=1&messageId=x&text=STOP", None).unwrap();
        assert_eq!(mo.stops, ["27821234567"]);

        let kv = |pairs: &[(&str, &str)]| -> Vec<(String, String)> {
            pairs
                .iter()
                .map(|(k, v)| (k.to_string(), v.to_string()))
                .collect()
        };
        let p = parse_twilio(&kv(&[
            ("MessageSid", "SM1"),
            ("MessageStatus", "undelivered"),
            ("ErrorCode", "30003"),
        ]))
        .unwrap();
        assert_eq!(p.reports[0].outcome, Outcome::Undelivered);
        assert_eq!(p.reports[0].code.as_deref(), Some("30003"));
        let mo = parse_twilio(&kv(&[
            ("SmsStatus", "received"),
            ("From", "+27821234567"),
            ("Body", "Stop"),
        ]))
        .unwrap();
        assert_eq!(mo.stops, ["+27821234567"]);
    }

    #[test]
    fn stop_words_are_whole_replies() {
        assert!(is_stop("STOP"));
        assert!(is_stop(" stop. "));
        assert!(is_stop("Unsubscribe"));
        assert!(!is_stop("please don't stop"));
        assert!(!is_stop("STOPPED"));
    }

    #[test]
    fn bare_international_digits_read_as_e164() {
        let za = crate::recipients::phone::parse_region("ZA").unwrap();
        assert_eq!(phone_of("27821234567", za).as_deref(), Some("+27821234567"));
        assert_eq!(
            phone_of("082 123 4567", za).as_deref(),
            Some("+27821234567")
        );
        assert_eq!(
            phone_of("+27821234567", za).as_deref(),
            Some("+27821234567")
        );
        assert_eq!(phone_of("ann@example.com", za), None);
    }
}
