-- TimescaleDB: readings and events become hypertables (1-day and 7-day chunks), readings
-- compressed after {compress_after_days} days, both dropped after {retention_days}; occupancy
-- per 5 minutes is a continuous aggregate with the same columns as the plain view.
-- Statements run one by one (no transaction), so each must be safe to run again.
-- carehub:timescale-only
SELECT create_hypertable('readings', 'ts', chunk_time_interval => INTERVAL '1 day',
                         if_not_exists => true, migrate_data => true);
SELECT create_hypertable('events', 'ts', chunk_time_interval => INTERVAL '7 days',
                         if_not_exists => true, migrate_data => true);
ALTER TABLE readings SET (timescaledb.compress,
                          timescaledb.compress_segmentby = 'device_id',
                          timescaledb.compress_orderby = 'ts DESC, seq DESC');
SELECT add_compression_policy('readings', INTERVAL '{compress_after_days} days', if_not_exists => true);
SELECT add_retention_policy('readings', INTERVAL '{retention_days} days', if_not_exists => true);
SELECT add_retention_policy('events', INTERVAL '{retention_days} days', if_not_exists => true);
-- A schema first set up on plain PostgreSQL (003_plain_time) has occupancy_5m as a plain
-- view; it gives way to the continuous aggregate. (Inner ';' must not end a line.)
DO $$
BEGIN
    IF EXISTS (SELECT 1 FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace
               WHERE n.nspname = current_schema() AND c.relname = 'occupancy_5m'
                 AND c.relkind = 'v')
       AND NOT EXISTS (SELECT 1 FROM timescaledb_information.continuous_aggregates
                       WHERE view_schema = current_schema() AND view_name = 'occupancy_5m')
    THEN DROP VIEW occupancy_5m; END IF; END
$$;
CREATE MATERIALIZED VIEW IF NOT EXISTS occupancy_5m
WITH (timescaledb.continuous, timescaledb.materialized_only = false) AS
SELECT time_bucket(INTERVAL '5 minutes', ts) AS bucket,
       facility_id, zone_id, device_id,
       avg(count)::double precision AS avg_count,
       max(count) AS max_count,
       max(staff) AS max_staff
FROM readings
WHERE count IS NOT NULL
GROUP BY 1, 2, 3, 4
WITH NO DATA;
SELECT add_continuous_aggregate_policy('occupancy_5m',
    start_offset => INTERVAL '2 days', end_offset => INTERVAL '5 minutes',
    schedule_interval => INTERVAL '5 minutes', if_not_exists => true);
