-- twinlink schema, version 14: transient entities and attributes (clause 4.22). Each entity row
-- carries the earliest expiresAt found anywhere in it (its own, an instance's, a
-- sub-attribute's); the reaper finds what is due through the partial index, and a query decided
-- in SQL first makes sure nothing in its tenant is due. NULL for durable entities.
ALTER TABLE entities ADD COLUMN IF NOT EXISTS expires_next timestamptz;
CREATE INDEX IF NOT EXISTS entities_expiry_idx
    ON entities (expires_next, tenant) WHERE expires_next IS NOT NULL;
-- A history record keeps the expiresAt of its instance: once passed, the record is not served
-- either (the history of an entity that expired as a whole stays, as after a deletion).
ALTER TABLE attribute_instances ADD COLUMN IF NOT EXISTS expires_at timestamptz;
