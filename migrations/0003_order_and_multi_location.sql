-- Pages are ordered by entity id; "C" collation makes that byte order, the same on every
-- database (and the same as the embedded store), whatever the database's default collation.
ALTER TABLE entities ALTER COLUMN id TYPE text COLLATE "C";

-- Entities whose `location` has several instances are always candidates of a geo-query; this
-- partial index finds them without scanning.
CREATE INDEX IF NOT EXISTS entities_location_multi_idx ON entities (tenant)
    WHERE location IS NULL AND location_multi;
