-- twinlink schema, version 5: subscriptions and the change feed (see docs/subscriptions.md).
-- A subscription is kept as its JSON record (the document as the subscriber gave it, its @context,
-- system fields and delivery statistics). Which instance notifies for it is decided by a session
-- advisory lock on the subscription (see docs/subscriptions.md), not by a column.
CREATE TABLE IF NOT EXISTS subscriptions (
    tenant text NOT NULL,
    id     text COLLATE "C" NOT NULL,
    record jsonb NOT NULL,
    PRIMARY KEY (tenant, id)
);

-- One row per committed entity write in a tenant that has subscriptions: the entity before and
-- after the write. The writing transaction announces the row with pg_notify('twinlink_changes', seq),
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
