-- The migrations runner's own table (src/store/postgres.rs): one row per applied
-- migration of each domain (`directory`, `history`).
CREATE TABLE IF NOT EXISTS schema_migrations (
    domain     text        NOT NULL,
    version    integer     NOT NULL,
    name       text        NOT NULL,
    applied_at timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (domain, version)
);
