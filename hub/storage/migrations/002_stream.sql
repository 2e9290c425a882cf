-- What devices send: readings (telemetry) and events, both keyed by (device_id, seq, ts)
-- so a redelivered message is stored once; ts is in the key because time partitions it.
CREATE TABLE IF NOT EXISTS readings (
    ts          timestamptz NOT NULL,
    device_id   text NOT NULL,
    seq         bigint NOT NULL,
    facility_id text NOT NULL,
    zone_id     text,
    received_at timestamptz NOT NULL,
    stored_at   timestamptz NOT NULL DEFAULT clock_timestamp(),
    battery     real,
    presence    boolean,
    count       integer,
    staff       integer,
    rssi        real,
    payload     jsonb NOT NULL
);
CREATE UNIQUE INDEX IF NOT EXISTS readings_identity ON readings (device_id, seq, ts);

CREATE TABLE IF NOT EXISTS events (
    ts          timestamptz NOT NULL,
    device_id   text NOT NULL,
    seq         bigint NOT NULL,
    facility_id text NOT NULL,
    zone_id     text,
    event       text NOT NULL,
    received_at timestamptz NOT NULL,
    stored_at   timestamptz NOT NULL DEFAULT clock_timestamp(),
    payload     jsonb NOT NULL
);
CREATE UNIQUE INDEX IF NOT EXISTS events_identity ON events (device_id, seq, ts);

CREATE TABLE IF NOT EXISTS status_changes (
    device_id   text NOT NULL,
    facility_id text NOT NULL,
    online      boolean NOT NULL,
    received_at timestamptz NOT NULL
);
CREATE INDEX IF NOT EXISTS status_changes_device ON status_changes (device_id, received_at);

-- Every refused message, with the reason code the vendor was sent.
CREATE TABLE IF NOT EXISTS dead_letters (
    id           bigserial PRIMARY KEY,
    received_at  timestamptz NOT NULL,
    topic        text NOT NULL,
    reason       text NOT NULL,
    detail       text NOT NULL,
    facility_id  text,
    device_id    text,
    payload      bytea NOT NULL,
    payload_size integer NOT NULL
);
CREATE INDEX IF NOT EXISTS dead_letters_received ON dead_letters (received_at);
CREATE INDEX IF NOT EXISTS dead_letters_device ON dead_letters (device_id, received_at);

-- Devices heard from but not registered: one action registers them.
CREATE TABLE IF NOT EXISTS pending_devices (
    device_id    text PRIMARY KEY,
    facility_id  text NOT NULL,
    first_seen   timestamptz NOT NULL,
    last_seen    timestamptz NOT NULL,
    messages     bigint NOT NULL DEFAULT 1,
    last_topic   text NOT NULL,
    last_payload bytea NOT NULL
);
