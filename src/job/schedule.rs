//! When a job fires: cron expressions or a one-shot instant, in an IANA time zone.
//!
//! Parsing uses croner, the parser tokio-cron-scheduler itself uses, so `crier validate`
//! and the daemon agree on what an expression means. Crontab semantics: 5 fields, or 6
//! with seconds first, `@daily`-style aliases, and when both day-of-month and day-of-week
//! are restricted either one matching fires (Vixie cron). Local times that do not exist
//! (spring forward) or exist twice (fall back) are resolved without panicking.

use std::time::Duration;

use chrono::{DateTime, LocalResult, NaiveDateTime, NaiveTime, TimeZone, Utc};
use chrono_tz::Tz;
use croner::Cron;
use croner::parser::{CronParser, Seconds};
use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

/// What to do about a fire time that passed while crier was down.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "snake_case")]
pub enum Misfire {
    /// One catch-up run, if within `grace`.
    #[default]
    Run,
    /// Wait for the next fire time.
    Skip,
}

/// What to do when a job fires while its previous run is still going.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "snake_case")]
pub enum Overlap {
    /// Skip this firing (logged and recorded).
    #[default]
    Skip,
    /// Run it after the current one; at most one waits.
    Queue,
}

/// A day of the week, for send windows.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "lowercase")]
pub enum Day {
    Mon,
    Tue,
    Wed,
    Thu,
    Fri,
    Sat,
    Sun,
}

/// The hours messages may go out in.
#[derive(Debug, Clone, PartialEq)]
pub struct Window {
    pub from: NaiveTime,
    pub to: NaiveTime,
    pub days: Vec<Day>,
    pub per_recipient: bool,
}

impl Day {
    fn of(weekday: chrono::Weekday) -> Day {
        use chrono::Weekday::*;
        match weekday {
            Mon => Day::Mon,
            Tue => Day::Tue,
            Wed => Day::Wed,
            Thu => Day::Thu,
            Fri => Day::Fri,
            Sat => Day::Sat,
            Sun => Day::Sun,
        }
    }
}

impl Window {
    /// Whether messages may go out at `now` in zone `tz`. A window whose `to` is before
    /// its `from` runs overnight (`22:00`–`06:00`); its days are the days it opens.
    pub fn contains(&self, now: DateTime<Utc>, tz: Tz) -> bool {
        let local = now.with_timezone(&tz).naive_local();
        let time = local.time();
        let day_open = |d: chrono::NaiveDate| {
            self.days.is_empty() || self.days.contains(&Day::of(chrono::Datelike::weekday(&d)))
        };
        if self.from < self.to {
            day_open(local.date()) && time >= self.from && time < self.to
        } else {
            (day_open(local.date()) && time >= self.from)
                || (local.date().pred_opt().is_some_and(day_open) && time < self.to)
        }
    }

    /// The next instant after `after` at which the window opens.
    pub fn next_open(&self, after: DateTime<Utc>, tz: Tz) -> Option<DateTime<Utc>> {
        let start = after.with_timezone(&tz).date_naive();
        (0..9).find_map(|offset| {
            let date = start + chrono::Duration::days(offset);
            let open = self.days.is_empty()
                || self
                    .days
                    .contains(&Day::of(chrono::Datelike::weekday(&date)));
            if !open {
                return None;
            }
            resolve_local(tz, date.and_time(self.from))
                .map(|t| t.with_timezone(&Utc))
                .filter(|t| *t > after)
        })
    }
}

/// The fire rule.
#[derive(Debug, Clone)]
pub enum When {
    Cron { expr: String, cron: Box<Cron> },
    At(NaiveDateTime),
}

/// A validated `schedule:`.
#[derive(Debug, Clone)]
pub struct Schedule {
    pub when: When,
    pub tz: Tz,
    pub misfire: Misfire,
    pub grace: Duration,
    pub overlap: Overlap,
    pub window: Option<Window>,
}

const ALIASES: [&str; 7] = [
    "@yearly",
    "@annually",
    "@monthly",
    "@weekly",
    "@daily",
    "@midnight",
    "@hourly",
];

/// Parses a cron expression as crontab users write it.
pub fn parse_cron(expr: &str) -> Result<Cron, String> {
    let trimmed = expr.trim();
    if trimmed.starts_with('@') {
        if !ALIASES.contains(&trimmed.to_lowercase().as_str()) {
            return Err(format!(
                "unknown alias `{trimmed}` (expected one of {})",
                ALIASES.join(", ")
            ));
        }
    } else {
        let fields = trimmed.split_whitespace().count();
        if fields != 5 && fields != 6 {
            return Err(format!(
                "expected 5 or 6 fields, got `{trimmed}` (e.g. `0 9 1 * *`)"
            ));
        }
    }
    CronParser::builder()
        .seconds(Seconds::Optional)
        .build()
        .parse(trimmed)
        .map_err(|e| format!("invalid cron expression `{trimmed}`: {e}"))
}

/// Parses `2026-12-01T09:00` (seconds optional) as a local date and time.
pub fn parse_at(s: &str) -> Result<NaiveDateTime, String> {
    let s = s.trim();
    NaiveDateTime::parse_from_str(s, "%Y-%m-%dT%H:%M:%S")
        .or_else(|_| NaiveDateTime::parse_from_str(s, "%Y-%m-%dT%H:%M"))
        .or_else(|_| NaiveDateTime::parse_from_str(s, "%Y-%m-%d %H:%M"))
        .map_err(|_| format!("`{s}` is not a local date and time (e.g. `2026-12-01T09:00`)"))
}

/// Parses `08:00` (or `08:00:30`).
pub fn parse_time_of_day(s: &str) -> Result<NaiveTime, String> {
    NaiveTime::parse_from_str(s.trim(), "%H:%M")
        .or_else(|_| NaiveTime::parse_from_str(s.trim(), "%H:%M:%S"))
        .map_err(|_| format!("`{s}` is not a time of day (e.g. `08:00`)"))
}

/// The instant a local time means in `tz`: the earlier one when it occurs twice, the
/// first instant after the gap when it does not occur at all.
pub fn resolve_local(tz: Tz, local: NaiveDateTime) -> Option<DateTime<Tz>> {
    match tz.from_local_datetime(&local) {
        LocalResult::Single(t) => Some(t),
        LocalResult::Ambiguous(earlier, _) => Some(earlier),
        LocalResult::None => {
            // Walk forward to the end of the gap (gaps are at most a few hours).
            let mut probe = local;
            for _ in 0..(26 * 60) {
                probe += chrono::Duration::minutes(1);
                if let Some(t) = tz.from_local_datetime(&probe).earliest() {
                    let floor = t.with_timezone(&Utc).timestamp() / 60 * 60;
                    return DateTime::from_timestamp(floor, 0).map(|u| u.with_timezone(&tz));
                }
            }
            None
        }
    }
}

/// An instant as people read it in `tz`, with the offset, which is unambiguous, and the
/// zone's abbreviation, which is familiar but not (`IST`, `CST`):
/// `2027-03-28 03:00:00 +02:00 CEST`. A zone without an abbreviation shows the offset
/// once (`2027-03-28 03:00:00 +04:00`). Every zoned instant crier prints to people (`jobs`,
/// `validate`, the daemon's log, send-window messages) goes through here.
pub fn zoned(t: DateTime<Utc>, tz: Tz) -> String {
    let local = t.with_timezone(&tz);
    let abbreviation = local.format("%Z").to_string();
    let offset = local.format("%Y-%m-%d %H:%M:%S %:z");
    if abbreviation.starts_with(['+', '-']) {
        offset.to_string()
    } else {
        format!("{offset} {abbreviation}")
    }
}

impl Schedule {
    /// The first fire time strictly after `after`, or `None` if there is none.
    pub fn next_after(&self, after: DateTime<Utc>) -> Option<DateTime<Utc>> {
        // Whole seconds: cron has no finer unit, and croner would carry the fraction.
        let after = DateTime::from_timestamp(after.timestamp(), 0)?;
        match &self.when {
            When::Cron { cron, .. } => cron
                .find_next_occurrence(&after.with_timezone(&self.tz), false)
                .ok()
                .map(|t| t.with_timezone(&Utc)),
            When::At(local) => resolve_local(self.tz, *local)
                .map(|t| t.with_timezone(&Utc))
                .filter(|t| *t > after),
        }
    }

    /// The next `count` fire times after `after` (fewer if the schedule ends), soonest
    /// first: `crier jobs` and the console's jobs page list these.
    pub fn next_times(&self, after: DateTime<Utc>, count: usize) -> Vec<DateTime<Utc>> {
        let mut out = Vec::new();
        let mut t = after;
        while out.len() < count {
            match self.next_after(t) {
                Some(next) => {
                    out.push(next);
                    t = next;
                }
                None => break,
            }
        }
        out
    }

    /// A human-readable form of the rule.
    pub fn describe(&self) -> String {
        match &self.when {
            When::Cron { expr, .. } => format!("cron `{expr}` {}", self.tz),
            When::At(local) => format!("at {} {}", local.format("%Y-%m-%dT%H:%M"), self.tz),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn zoned_instants_show_the_offset_and_the_abbreviation() {
        let t = |s: &str| DateTime::parse_from_rfc3339(s).unwrap().with_timezone(&Utc);
        let berlin = chrono_tz::Europe::Berlin;
        assert_eq!(
            zoned(t("2027-03-28T01:00:00Z"), berlin),
            "2027-03-28 03:00:00 +02:00 CEST"
        );
        assert_eq!(
            zoned(t("2027-03-28T00:59:59Z"), berlin),
            "2027-03-28 01:59:59 +01:00 CET"
        );
        // `IST` is India's, Ireland's and Israel's: the offset tells them apart.
        assert_eq!(
            zoned(t("2027-01-15T12:00:00Z"), chrono_tz::Asia::Kolkata),
            "2027-01-15 17:30:00 +05:30 IST"
        );
        assert_eq!(
            zoned(t("2027-01-15T12:00:00Z"), chrono_tz::UTC),
            "2027-01-15 12:00:00 +00:00 UTC"
        );
        // No abbreviation in the zone database: the offset once, not twice.
        assert_eq!(
            zoned(t("2027-01-15T12:00:00Z"), chrono_tz::Asia::Dubai),
            "2027-01-15 16:00:00 +04:00"
        );
    }

    fn cron_schedule(expr: &str, tz: Tz) -> Schedule {
        Schedule {
            when: When::Cron {
                expr: expr.into(),
                cron: Box::new(parse_cron(expr).unwrap()),
            },
            tz,
            misfire: Misfire::Run,
            grace: Duration::from_secs(3600),
            overlap: Overlap::Skip,
            window: None,
        }
    }

    fn utc(s: &str) -> DateTime<Utc> {
        DateTime::parse_from_rfc3339(s).unwrap().with_timezone(&Utc)
    }

    #[test]
    fn field_count_and_aliases_are_checked() {
        assert_eq!(
            parse_cron("0 9 * *").unwrap_err(),
            "expected 5 or 6 fields, got `0 9 * *` (e.g. `0 9 1 * *`)"
        );
        assert!(parse_cron("0 0 9 * * * 2027").is_err());
        assert!(parse_cron("@daily").is_ok());
        assert!(
            parse_cron("@fortnightly")
                .unwrap_err()
                .contains("unknown alias")
        );
        assert!(
            parse_cron("0 25 * * *")
                .unwrap_err()
                .contains("invalid cron")
        );
    }

    #[test]
    fn next_fire_in_a_zone() {
        let s = cron_schedule("0 9 1 * *", chrono_tz::Africa::Johannesburg);
        // 09:00 SAST is 07:00 UTC.
        assert_eq!(
            s.next_after(utc("2026-11-27T10:00:00Z")),
            Some(utc("2026-12-01T07:00:00Z"))
        );
        let with_seconds = cron_schedule("30 0 9 * * *", chrono_tz::UTC);
        assert_eq!(
            with_seconds.next_after(utc("2026-11-27T10:00:00Z")),
            Some(utc("2026-11-28T09:00:30Z"))
        );
    }

    #[test]
    fn day_of_month_or_day_of_week_fires_vixie_style() {
        // The 1st of the month OR any Monday.
        let s = cron_schedule("0 9 1 * mon", chrono_tz::UTC);
        assert_eq!(
            s.next_after(utc("2026-11-27T10:00:00Z")),
            Some(utc("2026-11-30T09:00:00Z"))
        );
    }

    #[test]
    fn one_shot_resolves_gaps_and_overlaps() {
        let berlin = chrono_tz::Europe::Berlin;
        // 2026-03-29 02:30 does not exist in Berlin: fires at the end of the gap, 03:00 CEST.
        let gap = resolve_local(berlin, parse_at("2026-03-29T02:30").unwrap()).unwrap();
        assert_eq!(gap.with_timezone(&Utc), utc("2026-03-29T01:00:00Z"));
        // 2026-10-25 02:30 happens twice: the first (CEST) one.
        let twice = resolve_local(berlin, parse_at("2026-10-25T02:30").unwrap()).unwrap();
        assert_eq!(twice.with_timezone(&Utc), utc("2026-10-25T00:30:00Z"));
    }
}

#[cfg(test)]
mod windows {
    use super::*;

    fn window(from: &str, to: &str, days: &[Day]) -> Window {
        Window {
            from: parse_time_of_day(from).unwrap(),
            to: parse_time_of_day(to).unwrap(),
            days: days.to_vec(),
            per_recipient: false,
        }
    }

    fn utc(s: &str) -> DateTime<Utc> {
        DateTime::parse_from_rfc3339(s).unwrap().with_timezone(&Utc)
    }

    #[test]
    fn office_hours_on_weekdays_in_the_jobs_zone() {
        let tz = chrono_tz::Africa::Johannesburg;
        let w = window(
            "08:00",
            "20:00",
            &[Day::Mon, Day::Tue, Day::Wed, Day::Thu, Day::Fri],
        );
        // Friday 27 November 2026, 09:00 SAST = 07:00Z.
        assert!(w.contains(utc("2026-11-27T07:00:00Z"), tz));
        // 20:00 SAST is closed (the end is exclusive); 07:59 too.
        assert!(!w.contains(utc("2026-11-27T18:00:00Z"), tz));
        assert!(!w.contains(utc("2026-11-27T05:59:00Z"), tz));
        // Saturday is closed; it next opens Monday 08:00 SAST.
        assert!(!w.contains(utc("2026-11-28T10:00:00Z"), tz));
        assert_eq!(
            w.next_open(utc("2026-11-27T18:30:00Z"), tz),
            Some(utc("2026-11-30T06:00:00Z"))
        );
    }

    #[test]
    fn an_overnight_window_belongs_to_the_day_it_opens() {
        let tz = chrono_tz::Europe::Berlin;
        let w = window("22:00", "06:00", &[Day::Fri]);
        // Friday 23:00 and Saturday 05:00 (Berlin, CET) are inside; Saturday 23:00 not.
        assert!(w.contains(utc("2026-11-27T22:00:00Z"), tz));
        assert!(w.contains(utc("2026-11-28T04:00:00Z"), tz));
        assert!(!w.contains(utc("2026-11-28T22:00:00Z"), tz));
        assert_eq!(
            w.next_open(utc("2026-11-28T10:00:00Z"), tz),
            Some(utc("2026-12-04T21:00:00Z"))
        );
    }
}

#[cfg(test)]
mod fire_times {
    //! Fire times on a table: what ops expect from crontab, across DST.
    use super::*;

    fn schedule(expr: &str, tz: Tz) -> Schedule {
        Schedule {
            when: When::Cron {
                expr: expr.into(),
                cron: Box::new(parse_cron(expr).unwrap()),
            },
            tz,
            misfire: Misfire::Run,
            grace: Duration::from_secs(3600),
            overlap: Overlap::Skip,
            window: None,
        }
    }

    /// The next `n` fire times after `start` (UTC, RFC 3339), as UTC strings.
    fn next(expr: &str, tz: Tz, start: &str, n: usize) -> Vec<String> {
        let s = schedule(expr, tz);
        let mut t = DateTime::parse_from_rfc3339(start)
            .unwrap()
            .with_timezone(&Utc);
        (0..n)
            .map(|_| {
                t = s.next_after(t).unwrap();
                t.format("%Y-%m-%dT%H:%M:%SZ").to_string()
            })
            .collect()
    }

    #[test]
    fn table() {
        use chrono_tz::{Africa, America, Europe};
        let cases: &[(&str, Tz, &str, &[&str])] = &[
            // Berlin spring forward (02:00 → 03:00 on 29 March): 02:30 does not exist,
            // so it fires once just after the gap (03:00 CEST), then 02:30 as usual.
            (
                "30 2 * * *",
                Europe::Berlin,
                "2026-03-28T12:00:00Z",
                &["2026-03-29T01:00:00Z", "2026-03-30T00:30:00Z"],
            ),
            // Berlin fall back (03:00 → 02:00 on 25 October): 02:30 happens twice and
            // fires once, at the first (CEST); the day after at 02:30 CET.
            (
                "30 2 * * *",
                Europe::Berlin,
                "2026-10-24T12:00:00Z",
                &["2026-10-25T00:30:00Z", "2026-10-26T01:30:00Z"],
            ),
            // The offset changes with the season: 09:00 local is 07:00 UTC in summer,
            // 08:00 UTC in winter (tokio-cron-scheduler's issue #107 keeps the old one).
            (
                "0 9 * * *",
                Europe::Berlin,
                "2026-10-24T12:00:00Z",
                &["2026-10-25T08:00:00Z", "2026-10-26T08:00:00Z"],
            ),
            (
                "0 9 * * *",
                Europe::Berlin,
                "2026-03-28T12:00:00Z",
                &["2026-03-29T07:00:00Z", "2026-03-30T07:00:00Z"],
            ),
            // New York: spring forward 8 March 2026 (02:00 → 03:00), fall back 1 November.
            (
                "15 2 * * *",
                America::New_York,
                "2026-03-07T12:00:00Z",
                &["2026-03-08T07:00:00Z", "2026-03-09T06:15:00Z"],
            ),
            (
                "30 1 * * *",
                America::New_York,
                "2026-10-31T12:00:00Z",
                &["2026-11-01T05:30:00Z", "2026-11-02T06:30:00Z"],
            ),
            // No DST in Johannesburg: always UTC+2.
            (
                "0 9 1 * *",
                Africa::Johannesburg,
                "2026-11-27T00:00:00Z",
                &["2026-12-01T07:00:00Z", "2027-01-01T07:00:00Z"],
            ),
            // 6 fields: seconds first.
            (
                "30 0 9 * * *",
                Africa::Johannesburg,
                "2026-11-27T00:00:00Z",
                &["2026-11-27T07:00:30Z", "2026-11-28T07:00:30Z"],
            ),
            // Month ends: the 31st skips short months.
            (
                "0 8 31 * *",
                Africa::Johannesburg,
                "2027-01-31T12:00:00Z",
                &["2027-03-31T06:00:00Z", "2027-05-31T06:00:00Z"],
            ),
            // Leap day: only in leap years.
            (
                "0 0 29 2 *",
                Africa::Johannesburg,
                "2026-01-01T00:00:00Z",
                &["2028-02-28T22:00:00Z", "2032-02-28T22:00:00Z"],
            ),
            // Vixie: day-of-month 1 OR Monday.
            (
                "0 9 1 * mon",
                Africa::Johannesburg,
                "2026-11-27T00:00:00Z",
                &[
                    "2026-11-30T07:00:00Z",
                    "2026-12-01T07:00:00Z",
                    "2026-12-07T07:00:00Z",
                ],
            ),
            // Aliases.
            (
                "@weekly",
                Africa::Johannesburg,
                "2026-11-27T00:00:00Z",
                &["2026-11-28T22:00:00Z", "2026-12-05T22:00:00Z"],
            ),
            // Hourly through the fall-back hour: 02:00 local occurs twice (00:00Z CEST,
            // 01:00Z CET) and fired at the first, so the repeated hour does not fire
            // again; a mass-messaging job never sends twice for one local time.
            (
                "@hourly",
                Europe::Berlin,
                "2026-10-25T00:10:00Z",
                &["2026-10-25T02:00:00Z", "2026-10-25T03:00:00Z"],
            ),
        ];
        for (expr, tz, start, want) in cases {
            assert_eq!(
                &next(expr, *tz, start, want.len()),
                want,
                "`{expr}` in {tz} after {start}"
            );
        }
    }
}
