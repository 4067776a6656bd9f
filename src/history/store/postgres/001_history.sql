-- crier history, schema version 1 (PostgreSQL). The same tables and columns as the
-- SQLite migration beside the SQLite backend; the README documents both. Applied in
-- the schema `store.schema` names (search_path). Times are Unix milliseconds, UTC
-- (to_timestamp(created_at / 1000.0)).

-- One mass sending.
CREATE TABLE runs (
    id            TEXT COLLATE "C" PRIMARY KEY,  -- ULID: sorts by creation time
    job           TEXT NOT NULL,           -- the job's name (its file's stem)
    triggered_by  TEXT NOT NULL,           -- schedule | manual | test | api
    scheduled_at  BIGINT,                  -- the fire instant of a scheduled run
    channels      TEXT NOT NULL,           -- sms,email,portal as sent to
    provider      TEXT NOT NULL,
    body          TEXT NOT NULL,           -- the template or message as used
    subject       TEXT,
    created_at    BIGINT NOT NULL,
    started_at    BIGINT,                  -- the first message sent
    finished_at   BIGINT,                  -- nothing left to do
    planned_all   BOOLEAN NOT NULL DEFAULT FALSE,
    cancelled     BOOLEAN NOT NULL DEFAULT FALSE,
    removed       BOOLEAN NOT NULL DEFAULT FALSE,  -- soft-deleted: hidden, kept
    next_seq      BIGINT NOT NULL DEFAULT 0,
    retry_of      TEXT,                    -- the run whose failed messages this one retries
    -- Messages per state, kept in the same transactions as the messages.
    n_queued      BIGINT NOT NULL DEFAULT 0,
    n_sending     BIGINT NOT NULL DEFAULT 0,
    n_sent        BIGINT NOT NULL DEFAULT 0,
    n_delivered   BIGINT NOT NULL DEFAULT 0,
    n_undelivered BIGINT NOT NULL DEFAULT 0,
    n_failed      BIGINT NOT NULL DEFAULT 0,
    n_expired     BIGINT NOT NULL DEFAULT 0,
    n_unknown     BIGINT NOT NULL DEFAULT 0,
    n_skipped     BIGINT NOT NULL DEFAULT 0,
    n_cancelled   BIGINT NOT NULL DEFAULT 0
);
CREATE INDEX runs_created ON runs (created_at, id);
CREATE INDEX runs_job ON runs (job, created_at, id);

-- One recipient on one channel in one run.
CREATE TABLE messages (
    run_id              TEXT COLLATE "C" NOT NULL REFERENCES runs (id),
    seq                 BIGINT NOT NULL,    -- place in the run: id = run_id-seq
    recipient_kind      TEXT NOT NULL,      -- customer | lead
    recipient_id        BIGINT NOT NULL,
    address             TEXT NOT NULL,      -- E.164 phone, email, or portal login
    channel             TEXT NOT NULL,      -- sms | email | portal
    provider            TEXT NOT NULL,      -- the provider it was (last) sent through
    type                TEXT NOT NULL,      -- message | test
    subject             TEXT,
    body                TEXT NOT NULL,
    encoding            TEXT,               -- gsm7 | ucs2 for SMS
    parts               BIGINT NOT NULL,
    state               TEXT NOT NULL,      -- queued sending sent delivered undelivered
                                            -- failed expired unknown skipped cancelled
    reason              TEXT,               -- why skipped: invalid_phone, opted_out, ...
    attempts            BIGINT NOT NULL,
    provider_message_id TEXT,
    error_code          TEXT,
    error_text          TEXT,
    created_at          BIGINT NOT NULL,    -- planned
    updated_at          BIGINT NOT NULL,    -- last change
    dedup_id            BIGINT NOT NULL,    -- BulkSMS deduplication-id, the same per retry
    transitions         TEXT NOT NULL,      -- JSON [["queued", ms], ["sending", ms], ...]
    failovers           TEXT,               -- JSON, providers tried before `provider`
    -- The recipient as it was when the message was planned.
    location            TEXT,
    partner             TEXT,
    category            TEXT,
    billing_type        TEXT,
    recipient_status    TEXT,
    PRIMARY KEY (run_id, seq)
);
-- A state change rewrites the row and, since `state` is indexed, adds an entry to every
-- index whose predicate the new row meets: so each state sits in as few indexes as its
-- queries need. A run's messages by state: those still to send in `messages_pending`
-- (below), the others here.
CREATE INDEX messages_run_state ON messages (run_id, state, seq)
    WHERE state NOT IN ('queued', 'sending');
CREATE INDEX messages_created ON messages (created_at, run_id, seq);
-- The outcomes people look for across runs ("failed in the last 7 days"); the common
-- ones (sent, delivered) are most of any period, read through messages_created.
CREATE INDEX messages_state_created ON messages (state, created_at, run_id, seq)
    WHERE state NOT IN ('queued', 'sending', 'sent', 'delivered');
CREATE INDEX messages_recipient ON messages (recipient_id, created_at);
CREATE INDEX messages_address ON messages (address, created_at);
CREATE INDEX messages_provider_id ON messages (provider, provider_message_id)
    WHERE provider_message_id IS NOT NULL;
-- What senders scan: a run's messages still to send (claims walk it by seq).
CREATE INDEX messages_pending ON messages (run_id, seq)
    WHERE state IN ('queued', 'sending');

-- The customer-portal inbox: what a customer sees in the portal.
CREATE TABLE inbox (
    customer_id BIGINT NOT NULL,
    message_id  TEXT NOT NULL,              -- crier's message id
    title       TEXT,
    body        TEXT NOT NULL,
    created_at  BIGINT NOT NULL,
    read_at     BIGINT,
    PRIMARY KEY (customer_id, message_id)
);

-- Named counters: `dedup`, the last BulkSMS deduplication id handed out.
CREATE TABLE counters (
    name  TEXT PRIMARY KEY,
    value BIGINT NOT NULL
);
