-- The directory, version 1 (src/recipients/directory/postgres.rs): a copy of the billing
-- system's recipients, the opt-out list and the stored templates. All of it can be
-- imported again; the delivery history lives in its own tables.

-- Customers and leads. `id` is the billing system's id (crier allocates ids from
-- 1000000000000 up for rows that came with a login only). Enumerations are stored as
-- crier names them in YAML: status new|active|inactive|blocked, category
-- individual|business, billing_type recurring|prepaid_custom|prepaid_daily.
CREATE TABLE recipients (
    kind          text   NOT NULL CHECK (kind IN ('customer', 'lead')),
    id            bigint NOT NULL,
    login         text,
    status        text   NOT NULL,
    name          text   NOT NULL,
    email         text,
    billing_email text,
    -- E.164 (`+27821234567`), or NULL when the imported value was missing or invalid.
    phone         text,
    -- The phone number exactly as imported.
    phone_raw     text,
    category      text,
    location      text,
    billing_type  text,
    partner       text,
    -- [{"service": "internet"|"voice"|"recurring"|"bundles"|null, "plan": "Fiber 100"}, ...]
    tariffs       jsonb  NOT NULL DEFAULT '[]',
    -- IANA zone, for per-recipient send windows.
    timezone      text,
    -- Every imported column crier has no field for: {"balance": "-12.50", ...}.
    attrs         jsonb  NOT NULL DEFAULT '{}',
    PRIMARY KEY (kind, id)
);

-- Portal logins, for `login`-only imports and inbox lookups.
CREATE INDEX recipients_login ON recipients (kind, login) WHERE login IS NOT NULL;

-- Ids crier hands out itself (directory::LOCAL_ID_BASE and up).
CREATE SEQUENCE customer_ids START 1000000000000;
CREATE SEQUENCE lead_ids START 1000000000000;

-- Addresses never to message: E.164 phone numbers and lower-case email addresses.
CREATE TABLE optouts (
    address  text   PRIMARY KEY,
    -- Milliseconds since the Unix epoch.
    added_at bigint NOT NULL,
    -- cli, import, reply, unsubscribe, bounce, or a note.
    reason   text   NOT NULL,
    -- The run and message the address unsubscribed from, when known.
    run      text,
    message  text
);

-- Templates saved under a name, used by jobs as `template: stored:NAME`.
CREATE TABLE templates (
    name       text   PRIMARY KEY,
    channel    text   NOT NULL CHECK (channel IN ('sms', 'email', 'portal')),
    body       text   NOT NULL,
    created_at bigint NOT NULL,
    updated_at bigint NOT NULL
);
