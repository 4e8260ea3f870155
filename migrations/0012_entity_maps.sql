-- twinlink schema, version 12: entity maps (clause 5.14). A map is kept per tenant and id with its
-- expiry and its entries, the candidate entities of the query that made it in page order, each
-- with the places that hold it: [[entity id, [place, ...]], ...], "@none" naming this broker's own
-- store and any other place the id of a context source registration. Every instance on the
-- database reads the maps of every other. Expired maps are never served and are deleted on access
-- and by a periodic sweep, which the index on expires_at keeps cheap.
CREATE TABLE IF NOT EXISTS entity_maps (
    tenant     text NOT NULL,
    id         text COLLATE "C" NOT NULL,
    expires_at timestamptz NOT NULL,
    entries    jsonb NOT NULL,
    PRIMARY KEY (tenant, id)
);
CREATE INDEX IF NOT EXISTS entity_maps_expires_at_idx ON entity_maps (expires_at);
