-- crier history, schema version 2 (PostgreSQL): several crier workers on one database.
-- What a message needs to be sent by any worker, and who holds it; the same three
-- columns as SQLite's 002.
ALTER TABLE messages ADD COLUMN html TEXT;    -- the HTML alternative of an email, as rendered
ALTER TABLE messages ADD COLUMN route TEXT;   -- providers still to fail over to, comma-separated
ALTER TABLE messages ADD COLUMN worker TEXT;  -- the worker holding it (claimed), or that last held it
-- The runs not finished: what workers look at to join, sweep and resume.
CREATE INDEX runs_open ON runs (id) WHERE finished_at IS NULL;

-- One row per worker process (`crier run`, `crier send`, `crier serve`): its heartbeat.
-- Times come from the database's clock, so hosts' clocks need not agree.
CREATE TABLE workers (
    id           TEXT PRIMARY KEY,         -- --worker-id (default host-pid)
    host         TEXT NOT NULL,
    pid          BIGINT NOT NULL,
    role         TEXT NOT NULL,            -- run | send | serve
    version      TEXT NOT NULL,            -- crier's version
    started_at   BIGINT NOT NULL,
    heartbeat_at BIGINT NOT NULL,
    state        TEXT NOT NULL             -- alive | stopped | dead
);

-- Named leases: `scheduler` is held by the one worker that fires the schedule.
CREATE TABLE leases (
    name       TEXT PRIMARY KEY,
    holder     TEXT NOT NULL,
    expires_at BIGINT NOT NULL
);

-- The job each run is sending for: one run of a job at a time, across workers.
CREATE TABLE job_runs (
    job        TEXT PRIMARY KEY,
    run_id     TEXT COLLATE "C" NOT NULL,
    worker     TEXT NOT NULL,              -- the worker that started it
    started_at BIGINT NOT NULL
);

-- Shared rate limits (GCRA): the theoretical arrival time of the next message per key
-- (`provider:NAME`, `job:NAME`), in microseconds of the database's clock. Unlogged: a
-- crash of the server forgets it, which only lets the next second start afresh.
CREATE UNLOGGED TABLE rate_limits (
    key    TEXT PRIMARY KEY,
    tat_us BIGINT NOT NULL
);

-- Wake-ups, once per run event (never per message: a NOTIFY takes a database-wide lock
-- at commit): `started:RUN` when a run takes its job, `cancelled:RUN` when it is
-- cancelled. Workers LISTEN on `crier_runs` to join a run or stop at once, and poll as
-- a fallback.
CREATE FUNCTION crier_notify_job_run() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    PERFORM pg_notify('crier_runs', 'started:' || NEW.run_id);
    RETURN NEW;
END $$;
CREATE TRIGGER job_runs_started AFTER INSERT OR UPDATE OF run_id ON job_runs
    FOR EACH ROW EXECUTE FUNCTION crier_notify_job_run();

CREATE FUNCTION crier_notify_cancel() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    PERFORM pg_notify('crier_runs', 'cancelled:' || NEW.id);
    RETURN NEW;
END $$;
CREATE TRIGGER runs_cancelled AFTER UPDATE OF cancelled ON runs
    FOR EACH ROW WHEN (NEW.cancelled AND NOT OLD.cancelled)
    EXECUTE FUNCTION crier_notify_cancel();
