-- Plain PostgreSQL: BRIN indexes on time (tiny, and right for append-mostly data) and an
-- occupancy view with the same columns as the TimescaleDB continuous aggregate.
-- carehub:plain-only
CREATE INDEX IF NOT EXISTS readings_ts_brin ON readings USING brin (ts);
CREATE INDEX IF NOT EXISTS events_ts_brin ON events USING brin (ts);
CREATE OR REPLACE VIEW occupancy_5m AS
SELECT date_bin('5 minutes', ts, TIMESTAMPTZ '2000-01-01') AS bucket,
       facility_id, zone_id, device_id,
       avg(count)::double precision AS avg_count,
       max(count) AS max_count,
       max(staff) AS max_staff
FROM readings
WHERE count IS NOT NULL
GROUP BY 1, 2, 3, 4;
