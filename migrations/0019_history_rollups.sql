-- twinlink schema, version 19: roll-ups of attribute history (see src/store/rollup.rs), so that an
-- aggregation over a long history reads a few rows. Per entity, attribute instance set (attribute,
-- datasetId; '' for the default instance) and UTC hour: the records an aggregation by
-- observedAt counts (with a value, an attribute and an observedAt), and, apart, the number of those
-- that will expire (an aggregation over a period holding one reads the records instead).
-- New records are merged in by the write that copies them (in its transaction); a DELETE of
-- records computes the rows of the periods that lost some again, in a trigger of the statement.
CREATE TABLE IF NOT EXISTS history_rollups (
    tenant     text        NOT NULL,
    entity_id  text        NOT NULL,
    -- the period length, in microseconds: 3600000000 (an hour; the one grain kept today)
    grain      bigint      NOT NULL,
    attr       text        NOT NULL,
    dataset_id text        NOT NULL,
    -- the period's start, a multiple of the grain since the Unix epoch
    start      timestamptz NOT NULL,
    n          bigint      NOT NULL,
    n_num      bigint      NOT NULL,
    sum        float8      NOT NULL,
    sumsq      float8      NOT NULL,
    -- the sum of squared deviations of the numbers from their mean
    m2         float8      NOT NULL,
    min        float8,
    max        float8,
    first      timestamptz,
    last       timestamptz,
    expiring   bigint      NOT NULL,
    PRIMARY KEY (tenant, entity_id, grain, attr, dataset_id, start)
);

-- The rows of the given periods, from the records (the recomputation after deletions).
CREATE OR REPLACE FUNCTION history_rollups_of(
    p_tenant text, p_entity text, p_grain bigint, p_attr text, p_dataset text, p_start timestamptz)
RETURNS TABLE (n bigint, n_num bigint, sum float8, sumsq float8, m2 float8, min float8,
               max float8, first timestamptz, last timestamptz, expiring bigint)
LANGUAGE sql STABLE AS $$
    SELECT count(*) FILTER (WHERE expires_at IS NULL),
           count(num) FILTER (WHERE expires_at IS NULL),
           coalesce(sum(num) FILTER (WHERE expires_at IS NULL), 0),
           coalesce(sum(num * num) FILTER (WHERE expires_at IS NULL), 0),
           coalesce(var_pop(num) FILTER (WHERE expires_at IS NULL)
                    * count(num) FILTER (WHERE expires_at IS NULL), 0),
           min(num) FILTER (WHERE expires_at IS NULL),
           max(num) FILTER (WHERE expires_at IS NULL),
           min(observed_at) FILTER (WHERE expires_at IS NULL),
           max(observed_at) FILTER (WHERE expires_at IS NULL),
           count(*) FILTER (WHERE expires_at IS NOT NULL)
    FROM attribute_instances
    WHERE tenant = p_tenant AND entity_id = p_entity AND attr = p_attr
      AND coalesce(dataset_id, '') = p_dataset AND value IS NOT NULL
      AND observed_at >= p_start AND observed_at < p_start + p_grain * interval '1 microsecond'
$$;

-- The periods (grain, start) a record with this observedAt counts in.
CREATE OR REPLACE FUNCTION history_rollup_periods(t timestamptz)
RETURNS TABLE (grain bigint, start timestamptz)
LANGUAGE sql IMMUTABLE AS $$
    SELECT g, date_bin(g * interval '1 microsecond', t, timestamptz 'epoch')
    FROM unnest(ARRAY[3600000000]::bigint[]) AS g
$$;

-- Where a roll-up row belongs.
DO $$ BEGIN
    CREATE TYPE history_rollup_key AS (
        tenant text, entity_id text, grain bigint, attr text, dataset_id text, start timestamptz);
EXCEPTION WHEN duplicate_object THEN NULL;
END $$;

-- The rows of the periods the records deleted by the statement (`gone`) counted in, computed
-- again from the records left.
CREATE OR REPLACE FUNCTION history_rollups_after_delete() RETURNS trigger
LANGUAGE plpgsql AS $$
DECLARE
    touched history_rollup_key[];
BEGIN
    SELECT array_agg(DISTINCT ROW(o.tenant, o.entity_id, p.grain, o.attr,
                                  coalesce(o.dataset_id, ''), p.start)::history_rollup_key)
    INTO touched
    FROM gone o, history_rollup_periods(o.observed_at) p
    WHERE o.value IS NOT NULL AND o.attr IS NOT NULL AND o.observed_at IS NOT NULL;
    IF touched IS NULL THEN
        RETURN NULL;
    END IF;
    DELETE FROM history_rollups r USING unnest(touched) k
    WHERE r.tenant = k.tenant AND r.entity_id = k.entity_id AND r.grain = k.grain
      AND r.attr = k.attr AND r.dataset_id = k.dataset_id AND r.start = k.start;
    INSERT INTO history_rollups
    SELECT k.*, s.*
    FROM unnest(touched) k,
         history_rollups_of(k.tenant, k.entity_id, k.grain, k.attr, k.dataset_id, k.start) s
    WHERE s.n + s.expiring > 0;
    RETURN NULL;
END
$$;

DROP TRIGGER IF EXISTS history_rollups_after_delete ON attribute_instances;
CREATE TRIGGER history_rollups_after_delete AFTER DELETE ON attribute_instances
    REFERENCING OLD TABLE AS gone FOR EACH STATEMENT
    EXECUTE FUNCTION history_rollups_after_delete();

-- The rows of the history written before this version.
INSERT INTO history_rollups
SELECT k.*, s.*
FROM (SELECT DISTINCT a.tenant, a.entity_id, p.grain, a.attr,
             coalesce(a.dataset_id, '') AS dataset_id, p.start
      FROM attribute_instances a, history_rollup_periods(a.observed_at) p
      WHERE a.value IS NOT NULL AND a.attr IS NOT NULL AND a.observed_at IS NOT NULL) k,
     history_rollups_of(k.tenant, k.entity_id, k.grain, k.attr, k.dataset_id, k.start) s
WHERE s.n + s.expiring > 0
ON CONFLICT DO NOTHING;
