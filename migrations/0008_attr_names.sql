-- The names of an entity's attributes as an array, indexed with GIN, replace the GIN index over
-- the whole `body -> 'attrs'` object. That index held every key and every scalar value of every
-- attribute (timestamps included), so each write inserted dozens of index entries per entity; the
-- queries only ever asked it which attributes an entity has (`attrs`, q existence, a geoQ on
-- another GeoProperty). The array is derived from the body by the same statement that writes it.
ALTER TABLE entities ADD COLUMN IF NOT EXISTS attr_names text[] NOT NULL DEFAULT '{}';
UPDATE entities SET attr_names = ARRAY(SELECT jsonb_object_keys(body -> 'attrs'))
    WHERE attr_names = '{}' AND body -> 'attrs' <> '{}'::jsonb;
CREATE INDEX IF NOT EXISTS entities_attr_names_idx ON entities USING gin (attr_names);
DROP INDEX IF EXISTS entities_attrs_idx;
