-- Updates of an entity that leave its indexed columns alone (a PATCH of a value, a replace with the
-- same attribute names, types, scopes and location) can be heap-only (HOT): the new row version
-- goes on the same page and no index gets an entry. That needs room on the page and no index over
-- a column every update changes.
--
-- entities_modified_idx indexed modified_at, which every write changes, and no query reads it
-- (queries on time go to attribute_instances).
DROP INDEX IF EXISTS entities_modified_idx;
-- Pages filled to 80 % keep room for a new version of a row of about a kilobyte (applies to pages
-- written from now on).
ALTER TABLE entities SET (fillfactor = 80);
