-- twinlink schema, version 15: the @contexts the broker stores (clause 5.13): those added with
-- POST /jsonldContexts (kind Hosted) and those it creates itself (kind ImplicitlyCreated), per
-- tenant and local id, as JSON records with their document. Fetched @contexts (kind Cached) are a
-- cache of each instance and are not kept here.
CREATE TABLE IF NOT EXISTS jsonld_contexts (
    tenant text NOT NULL,
    id     text COLLATE "C" NOT NULL,
    record jsonb NOT NULL,
    PRIMARY KEY (tenant, id)
);
