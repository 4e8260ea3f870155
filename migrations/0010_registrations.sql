-- twinlink schema, version 10: context source registrations (clause 5.9), kept like subscriptions
-- as their JSON record (the members as the registrant gave them, expanded, with its @context,
-- system fields and the counters of forwarded requests). A change is announced on the
-- twinlink_registrations channel so that every instance refreshes its registry.
CREATE TABLE IF NOT EXISTS registrations (
    tenant text NOT NULL,
    id     text COLLATE "C" NOT NULL,
    record jsonb NOT NULL,
    PRIMARY KEY (tenant, id)
);
