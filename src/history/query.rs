//! Reading the ledger: runs and messages by status, period, job, channel, address or
//! recipient, newest first, always through an index so no query scans the whole history.
//!
//! Periods are the ones Splynx's history offers (today, yesterday, last 7 days, last 30
//! days, this month, last month, a custom range), computed in the configured time zone:
//! a day is local midnight to local midnight, whatever DST does to its length.

use chrono::{DateTime, Datelike, Days, Months, NaiveDate, NaiveDateTime, NaiveTime, Utc};
use chrono_tz::Tz;

use super::ledger::{Ledger, LedgerError, paged};
use super::store::sql::{self, MessageCursor};
use super::{Message, MessageState, MessageType, Millis, Run, RunId, RunStatus};
use crate::job::Channel;
use crate::job::schedule::resolve_local;
use crate::recipients::RecipientKind;

/// A named period.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Period {
    Today,
    Yesterday,
    Last7Days,
    Last30Days,
    ThisMonth,
    LastMonth,
}

impl Period {
    pub const ALL: [Period; 6] = [
        Period::Today,
        Period::Yesterday,
        Period::Last7Days,
        Period::Last30Days,
        Period::ThisMonth,
        Period::LastMonth,
    ];

    pub fn as_str(self) -> &'static str {
        match self {
            Period::Today => "today",
            Period::Yesterday => "yesterday",
            Period::Last7Days => "last-7-days",
            Period::Last30Days => "last-30-days",
            Period::ThisMonth => "this-month",
            Period::LastMonth => "last-month",
        }
    }

    /// A period by name (any case, `_` for `-`); an error names the bad value, the names
    /// and `face`'s spelling of the custom range.
    pub fn parse(s: &str, face: Face) -> Result<Period, String> {
        let key = s.trim().to_lowercase().replace('_', "-");
        Period::ALL
            .into_iter()
            .find(|p| p.as_str() == key)
            .ok_or_else(|| {
                format!(
                    "unknown period `{s}` (expected {}, or {}/{})",
                    Period::ALL.map(Period::as_str).join(", "),
                    face.name("from"),
                    face.name("to")
                )
            })
    }
}

/// Who is asking, for the names errors use: `--from` on the command line, `` `from` `` in
/// the HTTP API. The rules are the same; only the spelling differs.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Face {
    Cli,
    Api,
}

impl Face {
    /// How this face spells the filter `param`.
    pub fn name(self, param: &str) -> String {
        match self {
            Face::Cli => format!("--{param}"),
            Face::Api => format!("`{param}`"),
        }
    }
}

/// Local midnight starting `day` in `tz`, in millis (the first instant after a gap, if
/// midnight itself does not exist there).
fn midnight(tz: Tz, day: NaiveDate) -> Millis {
    let local = day.and_time(NaiveTime::MIN);
    resolve_local(tz, local)
        .map(|t| t.timestamp_millis())
        .unwrap_or_else(|| local.and_utc().timestamp_millis())
}

/// A half-open range `[from, to)` in millis.
pub type Range = (Millis, Millis);

impl Period {
    /// The period's range in `tz`, as of `now`.
    pub fn range(self, tz: Tz, now: DateTime<Utc>) -> Range {
        let today = now.with_timezone(&tz).date_naive();
        let tomorrow = today + Days::new(1);
        let first = today.with_day(1).unwrap_or(today);
        let (from, to) = match self {
            Period::Today => (today, tomorrow),
            Period::Yesterday => (today - Days::new(1), today),
            Period::Last7Days => (today - Days::new(6), tomorrow),
            Period::Last30Days => (today - Days::new(29), tomorrow),
            Period::ThisMonth => (first, first + Months::new(1)),
            Period::LastMonth => (first - Months::new(1), first),
        };
        (midnight(tz, from), midnight(tz, to))
    }
}

/// Parses a `--from`/`--to` bound: a date (`2026-11-01`) or a local date and time
/// (`2026-11-01T08:00`). A date as `to` includes that whole day.
pub fn parse_bound(s: &str, tz: Tz, is_end: bool) -> Result<Millis, String> {
    let s = s.trim();
    if let Ok(day) = NaiveDate::parse_from_str(s, "%Y-%m-%d") {
        let day = if is_end { day + Days::new(1) } else { day };
        return Ok(midnight(tz, day));
    }
    for format in [
        "%Y-%m-%dT%H:%M:%S",
        "%Y-%m-%dT%H:%M",
        "%Y-%m-%d %H:%M:%S",
        "%Y-%m-%d %H:%M",
    ] {
        if let Ok(t) = NaiveDateTime::parse_from_str(s, format) {
            return resolve_local(tz, t)
                .map(|t| t.timestamp_millis())
                .ok_or_else(|| format!("`{s}` does not exist in {tz}"));
        }
    }
    if let Ok(t) = DateTime::parse_from_rfc3339(s) {
        return Ok(t.timestamp_millis());
    }
    Err(format!(
        "`{s}` is not a date (expected YYYY-MM-DD or YYYY-MM-DDTHH:MM)"
    ))
}

/// The range of `period` or `from`/`to` (both optional; none means all time); errors
/// spell the filters as `face` does.
pub fn resolve_range(
    period: Option<&str>,
    from: Option<&str>,
    to: Option<&str>,
    face: Face,
    tz: Tz,
    now: DateTime<Utc>,
) -> Result<Option<Range>, String> {
    match (period, from, to) {
        (Some(_), Some(_), _) | (Some(_), _, Some(_)) => Err(format!(
            "give {} or {}/{}, not both",
            face.name("period"),
            face.name("from"),
            face.name("to")
        )),
        (Some(p), None, None) => Ok(Some(Period::parse(p, face)?.range(tz, now))),
        (None, None, None) => Ok(None),
        (None, from, to) => {
            let start = from
                .map(|f| parse_bound(f, tz, false))
                .transpose()?
                .unwrap_or(Millis::MIN);
            let end = to
                .map(|t| parse_bound(t, tz, true))
                .transpose()?
                .unwrap_or(Millis::MAX);
            if start >= end {
                return Err(format!(
                    "{} {} is not before {} {}",
                    face.name("from"),
                    from.unwrap_or_default(),
                    face.name("to"),
                    to.unwrap_or_default()
                ));
            }
            Ok(Some((start, end)))
        }
    }
}

/// Which runs to list.
#[derive(Debug, Clone, Default)]
pub struct RunFilter {
    /// `None`: any status except `removed`.
    pub status: Option<RunStatus>,
    pub range: Option<Range>,
    pub job: Option<String>,
}

impl RunFilter {
    fn accepts(&self, run: &Run) -> bool {
        let status = run.status();
        match self.status {
            Some(s) => s == status,
            None => status != RunStatus::Removed,
        }
    }
}

/// Runs matching `filter`, newest first.
pub fn runs<'a>(
    ledger: &'a Ledger<'a>,
    filter: &'a RunFilter,
) -> Box<dyn Iterator<Item = Result<Run, LedgerError>> + 'a> {
    let h = ledger.history();
    Box::new(
        paged(move |last: Option<&Run>, limit| {
            let cursor = last.map(|r| (r.created_at, r.id));
            h.select_runs(&sql::runs(
                filter.range,
                filter.job.as_deref(),
                cursor,
                limit,
            ))
            .map_err(LedgerError::from)
        })
        .filter(move |r| r.as_ref().map_or(true, |r| filter.accepts(r))),
    )
}

/// Which messages to list (`crier logs`).
#[derive(Debug, Clone, Default)]
pub struct MessageFilter {
    pub channel: Option<Channel>,
    pub state: Option<MessageState>,
    pub kind: Option<MessageType>,
    pub range: Option<Range>,
    /// Exact address: E.164 phone or email.
    pub address: Option<String>,
    pub recipient: Option<(Option<RecipientKind>, u64)>,
    pub run: Option<RunId>,
    /// Messages of `removed` runs too. Without it they are hidden, as [`RunFilter`] hides
    /// the runs themselves, unless `run` names the run.
    pub include_removed: bool,
}

/// Messages matching `filter`, newest first (within one run, in reverse plan order),
/// read through the narrowest index.
pub fn messages<'a>(
    ledger: &'a Ledger<'a>,
    filter: &'a MessageFilter,
) -> Box<dyn Iterator<Item = Result<Message, LedgerError>> + 'a> {
    let h = ledger.history();
    Box::new(paged(move |last: Option<&Message>, limit| {
        let cursor = last.map(|m| MessageCursor::after(filter, m));
        h.select_messages(&sql::messages(filter, cursor, limit))
            .map_err(LedgerError::from)
    }))
}

/// Every message `filter` selects, newest first, for a caller that reads them all (an
/// export): one streamed query where the backend streams ([`HistoryStore::stream_messages`]),
/// else the pages of [`messages`].
///
/// [`HistoryStore::stream_messages`]: crate::history::store::HistoryStore::stream_messages
pub fn export<'a>(
    ledger: &'a Ledger<'a>,
    filter: &'a MessageFilter,
) -> Box<dyn Iterator<Item = Result<Message, LedgerError>> + 'a> {
    let h = ledger.history();
    match h.stream_messages(&sql::messages(filter, None, i64::MAX as usize)) {
        Some(stream) => Box::new(stream.map(|m| m.map_err(LedgerError::from))),
        None => messages(ledger, filter),
    }
}

/// The run filters as people type them (`crier history --status …`, `GET /api/runs?status=…`),
/// parsed in one place so the CLI and the HTTP API cannot disagree.
#[derive(Debug, Clone, Default)]
pub struct RunQuery<'a> {
    /// A [`RunStatus`] (`-` or `_`), or `any`; `None`: every status but `removed`.
    pub status: Option<&'a str>,
    pub period: Option<&'a str>,
    pub from: Option<&'a str>,
    pub to: Option<&'a str>,
    pub job: Option<&'a str>,
}

impl RunQuery<'_> {
    /// The filter, with periods in `tz` as of `now`; an error names the bad value.
    pub fn filter(&self, face: Face, tz: Tz, now: DateTime<Utc>) -> Result<RunFilter, String> {
        Ok(RunFilter {
            status: match self.status {
                Some(s) => parse_run_status(s)?,
                None => None,
            },
            range: resolve_range(self.period, self.from, self.to, face, tz, now)?,
            job: self.job.map(str::to_string),
        })
    }
}

/// The message filters as people type them (`crier logs …`, `GET /api/messages?…`).
#[derive(Debug, Clone, Default)]
pub struct MessageQuery<'a> {
    pub channel: Option<&'a str>,
    pub state: Option<&'a str>,
    /// `message` or `test`.
    pub kind: Option<&'a str>,
    pub period: Option<&'a str>,
    pub from: Option<&'a str>,
    pub to: Option<&'a str>,
    /// A phone number in any local form (compared in E.164), or an email address.
    pub phone: Option<&'a str>,
    /// A recipient id, `lead:ID` for a lead.
    pub recipient: Option<&'a str>,
    pub run: Option<&'a str>,
    /// List the messages of `removed` runs too (`--include-removed`, `include_removed=true`).
    pub include_removed: bool,
}

impl MessageQuery<'_> {
    /// The filter; phones are read in `region` (named `region_name` in errors).
    pub fn filter(
        &self,
        face: Face,
        tz: Tz,
        region: phonenumber::country::Id,
        region_name: &str,
        now: DateTime<Utc>,
    ) -> Result<MessageFilter, String> {
        Ok(MessageFilter {
            channel: self.channel.map(parse_channel).transpose()?,
            state: self.state.map(str::parse::<MessageState>).transpose()?,
            kind: self.kind.map(parse_message_type).transpose()?,
            range: resolve_range(self.period, self.from, self.to, face, tz, now)?,
            address: self
                .phone
                .map(|p| parse_address(p, region, region_name))
                .transpose()?,
            recipient: self.recipient.map(parse_recipient).transpose()?,
            run: self.run.map(str::parse::<RunId>).transpose()?,
            include_removed: self.include_removed,
        })
    }
}

/// The run status filter that takes every status but `removed`.
pub const ANY_STATUS: &str = "any";

/// A run status, or [`ANY_STATUS`] (`None`).
pub fn parse_run_status(s: &str) -> Result<Option<RunStatus>, String> {
    let key = s.trim().to_lowercase().replace('-', "_");
    if key == ANY_STATUS {
        return Ok(None);
    }
    RunStatus::ALL
        .into_iter()
        .find(|r| r.as_str() == key)
        .map(Some)
        .ok_or_else(|| {
            format!(
                "unknown status `{s}` (expected {ANY_STATUS}, {})",
                RunStatus::ALL.map(|r| r.as_str()).join(", ")
            )
        })
}

/// `sms`, `email` or `portal`.
pub fn parse_channel(s: &str) -> Result<Channel, String> {
    Channel::ALL
        .into_iter()
        .find(|ch| ch.as_str() == s.trim().to_lowercase())
        .ok_or_else(|| format!("unknown channel `{s}` (expected sms, email or portal)"))
}

/// `message` or `test`.
pub fn parse_message_type(s: &str) -> Result<MessageType, String> {
    MessageType::ALL
        .into_iter()
        .find(|t| t.as_str() == s.trim().to_lowercase())
        .ok_or_else(|| format!("unknown type `{s}` (expected message or test)"))
}

/// An email address as given, or a phone number in E.164.
pub fn parse_address(
    s: &str,
    region: phonenumber::country::Id,
    region_name: &str,
) -> Result<String, String> {
    if s.contains('@') {
        return Ok(s.trim().to_string());
    }
    crate::recipients::phone::to_e164(s, region)
        .ok_or_else(|| format!("phone `{s}` is not a valid phone number in region {region_name}"))
}

/// `1042` (any kind) or `lead:7`.
pub fn parse_recipient(s: &str) -> Result<(Option<RecipientKind>, u64), String> {
    let (kind, id) = match s.split_once(':') {
        Some((k, id)) => (Some(k.parse::<RecipientKind>()?), id),
        None => (None, s),
    };
    let id = id
        .trim()
        .parse()
        .map_err(|_| format!("recipient `{s}` is not a recipient id (e.g. 1042 or lead:7)"))?;
    Ok((kind, id))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn utc(s: &str) -> DateTime<Utc> {
        DateTime::parse_from_rfc3339(s).unwrap().with_timezone(&Utc)
    }

    fn iso(ms: Millis) -> String {
        DateTime::from_timestamp_millis(ms).unwrap().to_rfc3339()
    }

    fn range(p: Period, tz: Tz, now: &str) -> (String, String) {
        let (a, b) = p.range(tz, utc(now));
        (iso(a), iso(b))
    }

    #[test]
    fn periods_in_a_zone_without_dst() {
        let jnb = chrono_tz::Africa::Johannesburg;
        // 23:30 UTC on the 31st is already 1 January in Johannesburg.
        let now = "2026-12-31T23:30:00Z";
        assert_eq!(
            range(Period::Today, jnb, now),
            (
                "2026-12-31T22:00:00+00:00".into(),
                "2027-01-01T22:00:00+00:00".into()
            )
        );
        assert_eq!(
            range(Period::Yesterday, jnb, now),
            (
                "2026-12-30T22:00:00+00:00".into(),
                "2026-12-31T22:00:00+00:00".into()
            )
        );
        assert_eq!(
            range(Period::ThisMonth, jnb, now),
            (
                "2026-12-31T22:00:00+00:00".into(),
                "2027-01-31T22:00:00+00:00".into()
            )
        );
        assert_eq!(
            range(Period::LastMonth, jnb, now),
            (
                "2026-11-30T22:00:00+00:00".into(),
                "2026-12-31T22:00:00+00:00".into()
            )
        );
        assert_eq!(
            range(Period::Last7Days, jnb, now),
            (
                "2026-12-25T22:00:00+00:00".into(),
                "2027-01-01T22:00:00+00:00".into()
            )
        );
        assert_eq!(
            range(Period::Last30Days, jnb, now).0,
            "2026-12-02T22:00:00+00:00"
        );
    }

    #[test]
    fn month_ends_and_leap_years() {
        let utc_tz = chrono_tz::UTC;
        assert_eq!(
            range(Period::LastMonth, utc_tz, "2028-03-31T12:00:00Z"),
            (
                "2028-02-01T00:00:00+00:00".into(),
                "2028-03-01T00:00:00+00:00".into()
            )
        );
        assert_eq!(
            range(Period::ThisMonth, utc_tz, "2028-02-29T23:59:59Z"),
            (
                "2028-02-01T00:00:00+00:00".into(),
                "2028-03-01T00:00:00+00:00".into()
            )
        );
        assert_eq!(
            range(Period::LastMonth, utc_tz, "2027-01-15T00:00:00Z"),
            (
                "2026-12-01T00:00:00+00:00".into(),
                "2027-01-01T00:00:00+00:00".into()
            )
        );
    }

    #[test]
    fn a_dst_day_is_23_or_25_hours() {
        let berlin = chrono_tz::Europe::Berlin;
        let (a, b) = Period::Today.range(berlin, utc("2026-03-29T12:00:00Z"));
        assert_eq!(b - a, 23 * 3600 * 1000);
        assert_eq!(iso(a), "2026-03-28T23:00:00+00:00");
        let (a, b) = Period::Yesterday.range(berlin, utc("2026-10-26T12:00:00Z"));
        assert_eq!(b - a, 25 * 3600 * 1000);
    }

    #[test]
    fn midnight_that_does_not_exist_starts_after_the_gap() {
        // Santiago springs forward at 24:00 on 2026-09-05: 2026-09-06 00:00 does not exist.
        let santiago = chrono_tz::America::Santiago;
        let start = midnight(santiago, NaiveDate::from_ymd_opt(2026, 9, 6).unwrap());
        assert_eq!(iso(start), "2026-09-06T04:00:00+00:00");
    }

    #[test]
    fn custom_ranges_and_bad_input() {
        let utc_tz = chrono_tz::UTC;
        let now = utc("2026-11-27T00:00:00Z");
        let (a, b) = resolve_range(
            None,
            Some("2026-11-01"),
            Some("2026-11-02"),
            Face::Cli,
            utc_tz,
            now,
        )
        .unwrap()
        .unwrap();
        assert_eq!(
            (iso(a), iso(b)),
            (
                "2026-11-01T00:00:00+00:00".into(),
                "2026-11-03T00:00:00+00:00".into()
            )
        );
        assert!(
            resolve_range(
                None,
                Some("2026-11-05"),
                Some("2026-11-01"),
                Face::Cli,
                utc_tz,
                now
            )
            .unwrap_err()
            .contains("is not before")
        );
        assert!(resolve_range(None, Some("yesterday-ish"), None, Face::Cli, utc_tz, now).is_err());
        assert!(
            resolve_range(
                Some("today"),
                Some("2026-11-01"),
                None,
                Face::Cli,
                utc_tz,
                now
            )
            .is_err()
        );
        assert!(
            resolve_range(Some("fortnight"), None, None, Face::Cli, utc_tz, now)
                .unwrap_err()
                .contains("unknown period")
        );
        assert_eq!(
            resolve_range(None, None, None, Face::Cli, utc_tz, now).unwrap(),
            None
        );
    }

    #[test]
    fn range_errors_spell_the_filters_as_the_face_does() {
        let now = utc("2026-11-27T00:00:00Z");
        let utc_tz = chrono_tz::UTC;
        let backwards = |face| {
            resolve_range(
                None,
                Some("2026-11-05"),
                Some("2026-11-01"),
                face,
                utc_tz,
                now,
            )
            .unwrap_err()
        };
        assert_eq!(
            backwards(Face::Cli),
            "--from 2026-11-05 is not before --to 2026-11-01"
        );
        assert_eq!(
            backwards(Face::Api),
            "`from` 2026-11-05 is not before `to` 2026-11-01"
        );
        let both = resolve_range(
            Some("today"),
            Some("2026-11-01"),
            None,
            Face::Api,
            utc_tz,
            now,
        );
        assert_eq!(both.unwrap_err(), "give `period` or `from`/`to`, not both");
        let unknown = resolve_range(Some("fortnight"), None, None, Face::Api, utc_tz, now);
        assert!(unknown.unwrap_err().ends_with("or `from`/`to`)"));
        for p in Period::ALL {
            assert_eq!(Period::parse(p.as_str(), Face::Api), Ok(p));
        }
        assert_eq!(
            Period::parse(" Last_7_Days", Face::Cli),
            Ok(Period::Last7Days)
        );
    }

    #[test]
    fn message_queries_parse_every_filter_or_name_the_bad_value() {
        let utc_tz = chrono_tz::UTC;
        let now = utc("2026-11-27T00:00:00Z");
        let za = phonenumber::country::Id::ZA;
        let run = RunId::new();
        let run_text = run.to_string();
        let q = MessageQuery {
            channel: Some("SMS"),
            state: Some("failed"),
            kind: Some("test"),
            period: Some("today"),
            phone: Some("082 123 4567"),
            recipient: Some("lead:7"),
            run: Some(&run_text),
            ..MessageQuery::default()
        };
        let f = q.filter(Face::Cli, utc_tz, za, "ZA", now).unwrap();
        assert_eq!(f.channel, Some(Channel::Sms));
        assert_eq!(f.state, Some(MessageState::Failed));
        assert_eq!(f.kind, Some(MessageType::Test));
        assert_eq!(f.address.as_deref(), Some("+27821234567"));
        assert_eq!(f.recipient, Some((Some(RecipientKind::Lead), 7)));
        assert_eq!(f.run, Some(run));
        assert_eq!(f.range, Some(Period::Today.range(utc_tz, now)));
        let email = MessageQuery {
            phone: Some(" ann@example.com "),
            recipient: Some("1042"),
            ..MessageQuery::default()
        };
        let f = email.filter(Face::Cli, utc_tz, za, "ZA", now).unwrap();
        assert_eq!(f.address.as_deref(), Some("ann@example.com"));
        assert_eq!(f.recipient, Some((None, 1042)));
        for (bad, expected) in [
            (
                MessageQuery {
                    channel: Some("fax"),
                    ..MessageQuery::default()
                },
                "unknown channel `fax`",
            ),
            (
                MessageQuery {
                    kind: Some("spam"),
                    ..MessageQuery::default()
                },
                "unknown type `spam`",
            ),
            (
                MessageQuery {
                    phone: Some("12"),
                    ..MessageQuery::default()
                },
                "phone `12` is not a valid phone number in region ZA",
            ),
            (
                MessageQuery {
                    recipient: Some("x"),
                    ..MessageQuery::default()
                },
                "recipient `x` is not a recipient id",
            ),
            (
                MessageQuery {
                    run: Some("nope"),
                    ..MessageQuery::default()
                },
                "`nope` is not a run id",
            ),
        ] {
            let e = bad.filter(Face::Cli, utc_tz, za, "ZA", now).unwrap_err();
            assert!(e.contains(expected), "{e}");
        }
    }

    #[test]
    fn run_queries_take_any_or_a_status() {
        let now = utc("2026-11-27T00:00:00Z");
        let any = RunQuery {
            status: Some("any"),
            ..RunQuery::default()
        };
        assert_eq!(
            any.filter(Face::Cli, chrono_tz::UTC, now).unwrap().status,
            None
        );
        let q = RunQuery {
            status: Some("sent-with-error"),
            job: Some("welcome"),
            ..RunQuery::default()
        };
        let f = q.filter(Face::Cli, chrono_tz::UTC, now).unwrap();
        assert_eq!(f.status, Some(RunStatus::SentWithError));
        assert_eq!(f.job.as_deref(), Some("welcome"));
        let bad = RunQuery {
            status: Some("done"),
            ..RunQuery::default()
        };
        assert!(
            bad.filter(Face::Cli, chrono_tz::UTC, now)
                .unwrap_err()
                .contains("unknown status `done`")
        );
    }

    #[test]
    fn messages_of_removed_runs_are_hidden_unless_asked_for_or_their_run_is_named() {
        use crate::history::ledger::{NewMessage, NewRun};
        let (_dir, store) = crate::store::scratch();
        let ledger = Ledger::new(store.as_ref());
        let mut runs = Vec::new();
        for job in ["kept", "removed"] {
            let run = ledger
                .create_run(NewRun {
                    job: job.into(),
                    trigger: crate::history::Trigger::Manual,
                    channels: vec![Channel::Sms],
                    provider: "bulksms".into(),
                    body: "x".into(),
                    subject: None,
                })
                .unwrap();
            let message = NewMessage {
                recipient_kind: RecipientKind::Customer,
                recipient_id: 1042,
                address: "+27821234567".into(),
                channel: Channel::Sms,
                provider: "bulksms".into(),
                kind: MessageType::Message,
                subject: None,
                body: format!("from {job}"),
                encoding: None,
                parts: 1,
                state: MessageState::Queued,
                reason: None,
                error: None,
                snapshot: Default::default(),
                html: None,
                route: Vec::new(),
            };
            ledger.plan(run.id, vec![message]).unwrap();
            runs.push(run.id);
        }
        ledger.remove(runs[1]).unwrap();
        let bodies = |q: MessageQuery| -> Vec<String> {
            let za = phonenumber::country::Id::ZA;
            let f = q
                .filter(Face::Cli, chrono_tz::UTC, za, "ZA", Utc::now())
                .unwrap();
            messages(&ledger, &f).map(|m| m.unwrap().body).collect()
        };
        assert_eq!(bodies(MessageQuery::default()), ["from kept"]);
        let by_phone = MessageQuery {
            phone: Some("082 123 4567"),
            ..MessageQuery::default()
        };
        assert_eq!(bodies(by_phone.clone()), ["from kept"]);
        let mut all = bodies(MessageQuery {
            include_removed: true,
            ..by_phone
        });
        all.sort();
        assert_eq!(all, ["from kept", "from removed"]);
        let named = runs[1].to_string();
        let of_run = MessageQuery {
            run: Some(&named),
            ..MessageQuery::default()
        };
        assert_eq!(bodies(of_run), ["from removed"]);
    }
}
