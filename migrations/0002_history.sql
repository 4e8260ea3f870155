-- twinlink schema, version 2: temporal history. One row per attribute instance a write created or
-- changed, per deleted instance (deleted_at set, value NULL) and per deleted entity (attr NULL,
-- value holding its types and scope). Written in the transaction of the entity write, one
-- statement per request. Not partitioned by time (yet): the BRIN index keeps time-range scans
-- over the whole table cheap while rows arrive in time order.
CREATE TABLE IF NOT EXISTS attribute_instances (
    tenant      text        NOT NULL,
    entity_id   text        NOT NULL,
    -- expanded attribute name; NULL for an entity-level record
    attr        text,
    dataset_id  text,
    instance_id text        NOT NULL,
    -- attribute kind (Property, GeoProperty...); NULL for an entity-level record
    kind        text,
    observed_at timestamptz,
    created_at  timestamptz NOT NULL,
    -- when the record was made (the instance's modifiedAt, or the deletion time)
    modified_at timestamptz NOT NULL,
    deleted_at  timestamptz,
    -- the whole instance in twinlink's expanded form
    value       jsonb,
    -- the value when it is a number, for aggregations
    num         double precision,
    -- the value of a GeoProperty
    location    geometry(Geometry, 4326)
);

-- timerel/lastN on one entity's attribute by observedAt (the default timeproperty) or modifiedAt
CREATE INDEX IF NOT EXISTS attribute_instances_observed_idx
    ON attribute_instances (tenant, entity_id, attr, observed_at);
CREATE INDEX IF NOT EXISTS attribute_instances_modified_idx
    ON attribute_instances (tenant, entity_id, attr, modified_at);
-- time windows across entities (aggregation with date_bin over many entities)
CREATE INDEX IF NOT EXISTS attribute_instances_modified_brin
    ON attribute_instances USING brin (modified_at);
