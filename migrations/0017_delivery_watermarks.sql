-- twinlink schema, version 17: at-least-once delivery across instances (see docs/subscriptions.md).
-- Each change row records the transaction that wrote it, so that "what committed after a point" can
-- be asked exactly: a point is a PostgreSQL snapshot, and a change is after it when its transaction
-- is not visible in that snapshot (sequence numbers are taken before commit, so they do not say it).
ALTER TABLE entity_changes ADD COLUMN IF NOT EXISTS xid xid8 NOT NULL DEFAULT pg_current_xact_id();
CREATE INDEX IF NOT EXISTS entity_changes_xid_idx ON entity_changes (xid);

-- Per entity subscription, the point of the change feed up to which its notifications were
-- delivered (or failed for good): every change visible in `position` is done. Saved in batches by
-- the owning instance; an instance that takes the subscription over first notifies the changes not
-- visible in it. A subscription's row is deleted with it (and any left over by the change feed's
-- pruning).
CREATE TABLE IF NOT EXISTS subscription_watermarks (
    tenant   text        NOT NULL,
    id       text        COLLATE "C" NOT NULL,
    position pg_snapshot NOT NULL,
    saved_at timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (tenant, id)
);
