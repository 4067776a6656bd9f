//! The history's reads, written once in the SQL that SQLite and PostgreSQL share, and the
//! decoding of their rows: which filter becomes which condition, in which order rows come
//! and how a page continues are decided here, for every backend.
//!
//! Queries use `?` placeholders in order (a backend renumbers them if its engine wants
//! `$1`). Every filter is a written-out condition on an indexed column, never
//! `(? IS NULL OR …)`, so each engine's planner sees the index it should use; the
//! indexes themselves are in each backend's migration.

use super::{HistoryError, Param, Select, SqlRow, StoredRun};
use crate::history::query::{MessageFilter, Range};
use crate::history::{
    Counters, Failover, Message, MessageId, MessageState, MessageType, Millis, RecipientSnapshot,
    Run, RunId, Trigger,
};
use crate::job::Channel;
use crate::recipients::RecipientKind;

/// The columns of `runs`, in the order [`run_from_row`] reads them.
pub const RUN_COLUMNS: &str = "id, job, triggered_by, scheduled_at, channels, provider, body, subject, \
     created_at, started_at, finished_at, planned_all, cancelled, removed, next_seq, \
     n_queued, n_sending, n_sent, n_delivered, n_undelivered, n_failed, n_expired, n_unknown, \
     n_skipped, n_cancelled, retry_of";

/// The columns of `messages`, in the order [`message_from_row`] reads them.
pub const MESSAGE_COLUMNS: &str = "run_id, seq, recipient_kind, recipient_id, address, channel, provider, \
     type, subject, body, encoding, parts, state, reason, attempts, provider_message_id, \
     error_code, error_text, created_at, updated_at, transitions, failovers, \
     location, partner, category, billing_type, recipient_status, html, route, worker";

/// How many columns [`MESSAGE_COLUMNS`] names.
pub const MESSAGE_COLUMN_COUNT: usize = 30;

fn decode(key: impl std::fmt::Display, detail: impl std::fmt::Display) -> HistoryError {
    HistoryError::Decode {
        key: key.to_string(),
        detail: detail.to_string(),
    }
}

fn need<T>(v: Option<T>, key: &str, column: &str) -> Result<T, HistoryError> {
    v.ok_or_else(|| decode(key, format!("{column} is NULL")))
}

/// The text a run's trigger is stored as.
pub fn trigger_label(t: &Trigger) -> &'static str {
    t.label()
}

/// The channels of a run as stored: `sms,email`.
pub fn channels_text(channels: &[Channel]) -> String {
    channels
        .iter()
        .map(|c| c.as_str())
        .collect::<Vec<_>>()
        .join(",")
}

fn channel(s: &str, key: &str) -> Result<Channel, HistoryError> {
    Channel::ALL
        .into_iter()
        .find(|c| c.as_str() == s)
        .ok_or_else(|| decode(key, format!("unknown channel `{s}`")))
}

fn state(s: &str, key: &str) -> Result<MessageState, HistoryError> {
    s.parse().map_err(|e: String| decode(key, e))
}

/// A run row (columns [`RUN_COLUMNS`]).
pub fn stored_run_from_row(row: &dyn SqlRow) -> Result<StoredRun, HistoryError> {
    let key = need(row.text(0)?, "run", "id")?;
    let id: RunId = key.parse().map_err(|e: String| decode(&key, e))?;
    let trigger = match need(row.text(2)?, &key, "triggered_by")?.as_str() {
        "schedule" => Trigger::Schedule {
            at: need(row.int(3)?, &key, "scheduled_at")?,
        },
        "manual" => Trigger::Manual,
        "test" => Trigger::Test,
        "api" => Trigger::Api,
        other => return Err(decode(&key, format!("unknown trigger `{other}`"))),
    };
    let channels = need(row.text(4)?, &key, "channels")?
        .split(',')
        .filter(|c| !c.is_empty())
        .map(|c| channel(c, &key))
        .collect::<Result<_, _>>()?;
    let mut counters = Counters::default();
    for s in MessageState::ALL {
        let n = need(row.int(15 + s.index())?, &key, "counter")?;
        counters.0[s.index()] = u64::try_from(n).map_err(|_| decode(&key, "negative counter"))?;
    }
    Ok(StoredRun {
        run: Run {
            id,
            job: need(row.text(1)?, &key, "job")?,
            trigger,
            channels,
            provider: need(row.text(5)?, &key, "provider")?,
            body: need(row.text(6)?, &key, "body")?,
            subject: row.text(7)?,
            created_at: need(row.int(8)?, &key, "created_at")?,
            started_at: row.int(9)?,
            finished_at: row.int(10)?,
            counters,
            planned_all: row.boolean(11)?,
            cancelled: row.boolean(12)?,
            removed: row.boolean(13)?,
            retry_of: row
                .text(25)?
                .map(|r| r.parse().map_err(|e: String| decode(&key, e)))
                .transpose()?,
        },
        next_seq: need(row.int(14)?, &key, "next_seq")? as u32,
    })
}

/// A message row (columns [`MESSAGE_COLUMNS`]).
pub fn message_from_row(row: &dyn SqlRow) -> Result<Message, HistoryError> {
    let run = need(row.text(0)?, "message", "run_id")?;
    let seq = need(row.int(1)?, &run, "seq")?;
    let key = format!("{run}-{seq:06}");
    let id = MessageId {
        run: run.parse().map_err(|e: String| decode(&key, e))?,
        seq: seq as u32,
    };
    let text = |i: usize, column: &str| -> Result<String, HistoryError> {
        need(row.text(i)?, &key, column)
    };
    let int =
        |i: usize, column: &str| -> Result<i64, HistoryError> { need(row.int(i)?, &key, column) };
    let transitions: Vec<(MessageState, Millis)> =
        serde_json::from_str(&text(20, "transitions")?).map_err(|e| decode(&key, e))?;
    let failovers: Vec<Failover> = match row.text(21)? {
        Some(json) => serde_json::from_str(&json).map_err(|e| decode(&key, e))?,
        None => Vec::new(),
    };
    Ok(Message {
        id,
        recipient_kind: text(2, "recipient_kind")?
            .parse::<RecipientKind>()
            .map_err(|e| decode(&key, e))?,
        recipient_id: int(3, "recipient_id")? as u64,
        address: text(4, "address")?,
        channel: channel(&text(5, "channel")?, &key)?,
        provider: text(6, "provider")?,
        kind: match text(7, "type")?.as_str() {
            "test" => MessageType::Test,
            _ => MessageType::Message,
        },
        subject: row.text(8)?,
        body: text(9, "body")?,
        encoding: row.text(10)?,
        parts: int(11, "parts")? as u32,
        state: state(&text(12, "state")?, &key)?,
        reason: row.text(13)?,
        attempts: int(14, "attempts")? as u32,
        provider_message_id: row.text(15)?,
        error_code: row.text(16)?,
        error_text: row.text(17)?,
        created_at: int(18, "created_at")?,
        updated_at: int(19, "updated_at")?,
        transitions,
        failovers,
        snapshot: RecipientSnapshot {
            location: row.text(22)?,
            partner: row.text(23)?,
            category: row.text(24)?,
            billing_type: row.text(25)?,
            status: row.text(26)?,
        },
        html: row.text(27)?,
        route: row
            .text(28)?
            .map(|r| {
                r.split(',')
                    .filter(|p| !p.is_empty())
                    .map(String::from)
                    .collect()
            })
            .unwrap_or_default(),
        worker: row.text(29)?,
    })
}

/// The providers a message may still fail over to, as stored: `a,b`, or NULL.
pub fn route_text(m: &Message) -> Option<String> {
    (!m.route.is_empty()).then(|| m.route.join(","))
}

/// A message's transitions as stored: JSON `[["queued", ms], …]`.
pub fn transitions_json(m: &Message) -> String {
    serde_json::to_string(&m.transitions).unwrap_or_else(|_| "[]".into())
}

/// A message's failovers as stored: JSON, or NULL when it never failed over.
pub fn failovers_json(m: &Message) -> Option<String> {
    (!m.failovers.is_empty()).then(|| serde_json::to_string(&m.failovers).unwrap_or_default())
}

/// The run with this id.
pub fn run(id: RunId) -> Select {
    Select {
        sql: format!("SELECT {RUN_COLUMNS} FROM runs WHERE id = ?"),
        params: vec![Param::Text(id.to_string())],
    }
}

/// The message with this id.
pub fn message(id: MessageId) -> Select {
    Select {
        sql: format!("SELECT {MESSAGE_COLUMNS} FROM messages WHERE run_id = ? AND seq = ?"),
        params: vec![Param::Text(id.run.to_string()), Param::Int(id.seq as i64)],
    }
}

/// The latest message a provider knows by `pid`.
pub fn message_by_provider_id(provider: &str, pid: &str) -> Select {
    Select {
        sql: format!(
            "SELECT {MESSAGE_COLUMNS} FROM messages WHERE provider = ? AND provider_message_id = ? \
             ORDER BY created_at DESC, run_id DESC, seq DESC LIMIT 1"
        ),
        params: vec![Param::Text(provider.into()), Param::Text(pid.into())],
    }
}

/// ` AND state = '…'`: the state written into the query, not bound, so the planner
/// knows it and picks the partial index holding it (PostgreSQL keeps the states senders
/// scan, the other states of a run, and the rare outcomes each in an index of their own;
/// see its migration). States are a closed set of plain words: nothing to escape.
fn state_is(state: MessageState) -> String {
    format!(" AND state = '{}'", state.as_str())
}

/// A page of a run's messages (those in `state`, or all), in plan order, after `after`.
pub fn messages_of(
    run: RunId,
    state: Option<MessageState>,
    after: Option<u32>,
    limit: usize,
) -> Select {
    let mut s = Select {
        sql: format!("SELECT {MESSAGE_COLUMNS} FROM messages WHERE run_id = ?"),
        params: vec![Param::Text(run.to_string())],
    };
    if let Some(state) = state {
        s.sql.push_str(&state_is(state));
    }
    if let Some(after) = after {
        s.sql.push_str(" AND seq > ?");
        s.params.push(Param::Int(after as i64));
    }
    s.sql.push_str(" ORDER BY seq LIMIT ?");
    s.params.push(Param::Int(limit as i64));
    s
}

/// Where a page of runs newest first continues: below this `(created_at, id)`.
pub type RunCursor = (Millis, RunId);

/// A page of runs newest first, created within `range`, of `job` if given.
pub fn runs(
    range: Option<Range>,
    job: Option<&str>,
    before: Option<RunCursor>,
    limit: usize,
) -> Select {
    let mut s = Select {
        sql: format!("SELECT {RUN_COLUMNS} FROM runs WHERE TRUE"),
        params: Vec::new(),
    };
    if let Some(job) = job {
        s.sql.push_str(" AND job = ?");
        s.params.push(Param::Text(job.into()));
    }
    if let Some((lo, hi)) = range {
        s.sql.push_str(" AND created_at >= ? AND created_at < ?");
        s.params.extend([Param::Int(lo), Param::Int(hi)]);
    }
    if let Some((at, id)) = before {
        s.sql.push_str(" AND (created_at, id) < (?, ?)");
        s.params
            .extend([Param::Int(at), Param::Text(id.to_string())]);
    }
    s.sql.push_str(" ORDER BY created_at DESC, id DESC LIMIT ?");
    s.params.push(Param::Int(limit as i64));
    s
}

/// Where a page of messages newest first continues: below this message.
#[derive(Debug, Clone, Copy)]
pub enum MessageCursor {
    /// Within one run, by sequence number.
    Seq(u32),
    /// Across runs, by `(created_at, run_id, seq)`.
    Time(Millis, MessageId),
}

impl MessageCursor {
    /// The cursor that continues after `m` in `filter`'s order.
    pub fn after(filter: &MessageFilter, m: &Message) -> MessageCursor {
        match filter.run {
            Some(_) => MessageCursor::Seq(m.id.seq),
            None => MessageCursor::Time(m.created_at, m.id),
        }
    }
}

/// A page of the messages `filter` selects, newest first: within one run by sequence
/// number, otherwise by `(created_at, run_id, seq)`.
pub fn messages(filter: &MessageFilter, before: Option<MessageCursor>, limit: usize) -> Select {
    let mut s = Select {
        sql: format!("SELECT {MESSAGE_COLUMNS} FROM messages WHERE TRUE"),
        params: Vec::new(),
    };
    let mut cond = |sql: &str, param: Param| {
        s.sql.push_str(sql);
        s.params.push(param);
    };
    if let Some(run) = filter.run {
        cond(" AND run_id = ?", Param::Text(run.to_string()));
    }
    if let Some(address) = &filter.address {
        cond(" AND address = ?", Param::Text(address.clone()));
    }
    if let Some((kind, id)) = filter.recipient {
        cond(" AND recipient_id = ?", Param::Int(id as i64));
        if let Some(kind) = kind {
            cond(" AND recipient_kind = ?", Param::Text(kind.as_str().into()));
        }
    }
    if let Some(channel) = filter.channel {
        cond(" AND channel = ?", Param::Text(channel.as_str().into()));
    }
    if let Some(kind) = filter.kind {
        cond(" AND type = ?", Param::Text(kind.as_str().into()));
    }
    if let Some((lo, hi)) = filter.range {
        cond(" AND created_at >= ?", Param::Int(lo));
        cond(" AND created_at < ?", Param::Int(hi));
    }
    if let Some(state) = filter.state {
        s.sql.push_str(&state_is(state));
    }
    if !filter.include_removed && filter.run.is_none() {
        s.sql
            .push_str(" AND run_id NOT IN (SELECT id FROM runs WHERE removed)");
    }
    let by_seq = filter.run.is_some();
    match before {
        Some(MessageCursor::Seq(seq)) if by_seq => {
            s.sql.push_str(" AND seq < ?");
            s.params.push(Param::Int(seq as i64));
        }
        Some(MessageCursor::Time(at, id)) if !by_seq => {
            s.sql.push_str(" AND (created_at, run_id, seq) < (?, ?, ?)");
            s.params.extend([
                Param::Int(at),
                Param::Text(id.run.to_string()),
                Param::Int(id.seq as i64),
            ]);
        }
        _ => {}
    }
    s.sql.push_str(if by_seq {
        " ORDER BY seq DESC LIMIT ?"
    } else {
        " ORDER BY created_at DESC, run_id DESC, seq DESC LIMIT ?"
    });
    s.params.push(Param::Int(limit as i64));
    s
}

/// A run's messages counted by state: rows `(state, count)`.
pub fn state_counts(run: RunId) -> Select {
    Select {
        sql: "SELECT state, COUNT(*) FROM messages WHERE run_id = ? GROUP BY state".into(),
        params: vec![Param::Text(run.to_string())],
    }
}

/// A page of every run, in id order, after `after`.
pub fn all_runs_after(after: Option<RunId>, limit: usize) -> Select {
    let mut s = Select {
        sql: format!("SELECT {RUN_COLUMNS} FROM runs"),
        params: Vec::new(),
    };
    if let Some(after) = after {
        s.sql.push_str(" WHERE id > ?");
        s.params.push(Param::Text(after.to_string()));
    }
    s.sql.push_str(" ORDER BY id LIMIT ?");
    s.params.push(Param::Int(limit as i64));
    s
}

/// How many of a run's messages are numbered at or beyond its next sequence number (a
/// consistent history has none): one row `('beyond', count)`.
pub fn beyond_next_seq(run: RunId) -> Select {
    Select {
        sql: "SELECT 'beyond', COUNT(*) FROM messages JOIN runs ON runs.id = messages.run_id \
              WHERE messages.run_id = ? AND messages.seq >= runs.next_seq"
            .into(),
        params: vec![Param::Text(run.to_string())],
    }
}

/// Turns the shared dialect's `?` placeholders into PostgreSQL's `$1`, `$2`, … (the
/// queries here hold no `?` inside a string literal).
pub fn numbered(sql: &str) -> String {
    let mut out = String::with_capacity(sql.len() + 16);
    let mut n = 0;
    for c in sql.chars() {
        if c == '?' {
            n += 1;
            out.push('$');
            out.push_str(&n.to_string());
        } else {
            out.push(c);
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn placeholders_are_numbered_in_order() {
        assert_eq!(
            numbered("SELECT a FROM t WHERE b = ? AND (c, d) < (?, ?)"),
            "SELECT a FROM t WHERE b = $1 AND (c, d) < ($2, $3)"
        );
    }

    #[test]
    fn every_filter_is_a_condition_with_its_value() {
        let run = RunId::new();
        let filter = MessageFilter {
            state: Some(MessageState::Failed),
            range: Some((10, 20)),
            ..Default::default()
        };
        let s = messages(&filter, None, 50);
        assert!(s.sql.contains("state = 'failed'"), "{}", s.sql);
        assert!(s.sql.contains("NOT IN (SELECT id FROM runs WHERE removed)"));
        assert_eq!(s.sql.matches('?').count(), s.params.len());
        let scoped = MessageFilter {
            run: Some(run),
            ..Default::default()
        };
        let s = messages(&scoped, Some(MessageCursor::Seq(7)), 10);
        assert!(
            s.sql.ends_with("seq < ? ORDER BY seq DESC LIMIT ?"),
            "{}",
            s.sql
        );
        assert!(!s.sql.contains("removed"));
        assert_eq!(s.sql.matches('?').count(), s.params.len());
    }

    #[test]
    fn column_lists_match_their_counts() {
        assert_eq!(MESSAGE_COLUMNS.split(',').count(), MESSAGE_COLUMN_COUNT);
        assert_eq!(RUN_COLUMNS.split(',').count(), 16 + MessageState::ALL.len());
    }
}
