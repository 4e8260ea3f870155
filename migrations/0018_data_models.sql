-- twinlink schema, version 17: the data-model bindings set through the admin API
-- (/ngsi-ld/ex/dataModels): per tenant and id, which entity type is checked against which Smart
-- Data Model and in which mode, as JSON records. Every instance reloads them periodically.
CREATE TABLE IF NOT EXISTS data_models (
    tenant text NOT NULL,
    id     text COLLATE "C" NOT NULL,
    record jsonb NOT NULL,
    PRIMARY KEY (tenant, id)
);
