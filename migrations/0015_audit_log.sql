-- twinlink schema, version 15: the audit log as a table (--audit-table true), one row per accepted
-- write, written after the write committed; queried by time, or by subject and time.
CREATE TABLE IF NOT EXISTS audit_log (
    id         bigserial PRIMARY KEY,
    at         timestamptz NOT NULL,
    subject    text NOT NULL,
    tenant     text NOT NULL,
    operation  text NOT NULL,
    entity_ids text[] NOT NULL,
    request_id text
);
CREATE INDEX IF NOT EXISTS audit_log_at ON audit_log (at);
CREATE INDEX IF NOT EXISTS audit_log_subject_at ON audit_log (subject, at);
