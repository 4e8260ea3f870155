-- twinlink schema, version 1: current state of entities, per tenant (a tenant column; see
-- docs/postgres.md for why not a schema per tenant).
CREATE EXTENSION IF NOT EXISTS postgis;

CREATE TABLE IF NOT EXISTS tenants (
    tenant     text PRIMARY KEY,
    created_at timestamptz NOT NULL DEFAULT now()
);

CREATE TABLE IF NOT EXISTS entities (
    tenant      text        NOT NULL,
    id          text        NOT NULL,
    types       text[]      NOT NULL,
    scopes      text[],
    -- geometry of the default (or only) instance of the `location` GeoProperty; NULL when absent
    -- or when the attribute has several instances (then `location_multi` is true and the query
    -- engine checks those entities itself).
    location       geometry(Geometry, 4326),
    location_multi boolean     NOT NULL DEFAULT false,
    created_at  timestamptz NOT NULL,
    modified_at timestamptz NOT NULL,
    -- the entity in twinlink's expanded form (attribute names are IRIs)
    body        jsonb       NOT NULL,
    PRIMARY KEY (tenant, id)
);

CREATE INDEX IF NOT EXISTS entities_types_idx ON entities USING gin (types);
CREATE INDEX IF NOT EXISTS entities_scopes_idx ON entities USING gin (scopes);
CREATE INDEX IF NOT EXISTS entities_location_idx ON entities USING gist (location);
CREATE INDEX IF NOT EXISTS entities_attrs_idx ON entities USING gin ((body -> 'attrs'));
CREATE INDEX IF NOT EXISTS entities_modified_idx ON entities (tenant, modified_at);
