-- twinlink schema, version 13: the copies of entity subscriptions that context sources hold
-- (clause 5.8.1.4). When a subscription is created here, each registered source that offers
-- createSubscription gets a reduced copy under an id of its own; this table maps that id (the
-- subscriptionId of the source's notifications) to the subscription here and the registration of
-- the source, as a JSON record, so that the mapping survives a restart and every instance on the
-- database can take the source's notifications and forward the deletion.
CREATE TABLE IF NOT EXISTS remote_subscriptions (
    tenant text NOT NULL,
    id     text COLLATE "C" NOT NULL,
    record jsonb NOT NULL,
    PRIMARY KEY (tenant, id)
);
