-- twinlink schema, version 5: subscriptions and the change feed (see docs/subscriptions.md).
-- A subscription is kept as its JSON record (the document as the subscriber gave it, its @context,
-- system fields and delivery statistics). `owner` and `lease_until` say which broker instance
-- currently notifies for it; an instance renews its leases and takes over expired ones.
CREATE TABLE IF NOT EXISTS subscriptions (
    tenant      text        NOT NULL,
    id          text COLLATE "C" NOT NULL,
    record      jsonb       NOT NULL,
    owner       text,
    lease_until timestamptz,
    PRIMARY KEY (tenant, id)
);

-- One row per committed entity write while any subscription exists: the entity before and after
-- the write. The writing transaction announces the row with pg_notify('twinlink_changes', seq),
-- which PostgreSQL delivers at commit, in commit order, to every listening instance. Rows are only
-- read shortly after they are written and are pruned after a few minutes.
CREATE TABLE IF NOT EXISTS entity_changes (
    seq    bigserial   PRIMARY KEY,
    tenant text        NOT NULL,
    id     text        NOT NULL,
    before jsonb,
    after  jsonb,
    at     timestamptz NOT NULL DEFAULT clock_timestamp()
);
CREATE INDEX IF NOT EXISTS entity_changes_at_idx ON entity_changes (at);
