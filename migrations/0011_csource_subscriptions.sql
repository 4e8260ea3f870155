-- twinlink schema, version 11: context source registration subscriptions (clause 5.11), kept like
-- entity subscriptions as their JSON record (the members as the subscriber gave them, expanded,
-- with its @context, system fields and delivery statistics). A change is announced on the
-- twinlink_csource_subscriptions channel so that every instance refreshes its registry; which
-- instance sends the periodic (timeInterval) notifications is decided by a session advisory lock,
-- as for entity subscriptions.
CREATE TABLE IF NOT EXISTS csource_subscriptions (
    tenant text NOT NULL,
    id     text COLLATE "C" NOT NULL,
    record jsonb NOT NULL,
    PRIMARY KEY (tenant, id)
);
