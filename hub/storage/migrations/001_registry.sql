-- The registry: facilities, their zones, and the devices installed in them.
CREATE TABLE IF NOT EXISTS facilities (
    id              text PRIMARY KEY CHECK (id ~ '^[A-Za-z0-9_-]{1,64}$'),
    name            text NOT NULL,
    kind            text NOT NULL CHECK (kind IN ('elderly', 'childcare', 'integrated')),
    district        text NOT NULL,
    address         text NOT NULL DEFAULT '',
    latitude        double precision CHECK (latitude BETWEEN -90 AND 90),
    longitude       double precision CHECK (longitude BETWEEN -180 AND 180),
    registration_no text NOT NULL DEFAULT '',
    beds            integer NOT NULL DEFAULT 0 CHECK (beds >= 0),
    childcare_places integer NOT NULL DEFAULT 0 CHECK (childcare_places >= 0),
    created_at      timestamptz NOT NULL DEFAULT now(),
    updated_at      timestamptz NOT NULL DEFAULT now()
);
CREATE INDEX IF NOT EXISTS facilities_district ON facilities (district);

CREATE TABLE IF NOT EXISTS zones (
    facility_id text NOT NULL REFERENCES facilities (id) ON DELETE CASCADE,
    zone_id     text NOT NULL CHECK (zone_id ~ '^[A-Za-z0-9_-]{1,64}$'),
    name        text NOT NULL,
    kind        text NOT NULL CHECK (kind IN ('room', 'class', 'common')),
    capacity    integer CHECK (capacity >= 0),
    class_type  text CHECK (class_type IN ('乳儿班', '托小班', '托大班', '混合班')),
    PRIMARY KEY (facility_id, zone_id),
    CHECK (class_type IS NULL OR kind = 'class')
);

CREATE TABLE IF NOT EXISTS devices (
    id            text PRIMARY KEY CHECK (id ~ '^[A-Za-z0-9_-]{1,64}$'),
    facility_id   text NOT NULL REFERENCES facilities (id) ON DELETE CASCADE,
    type          text NOT NULL CHECK (type IN ('fall_sensor', 'emergency_button', 'occupancy_counter')),
    zone_id       text,
    heartbeat_s   integer NOT NULL DEFAULT 300 CHECK (heartbeat_s BETWEEN 1 AND 86400),
    vendor        text NOT NULL DEFAULT '',
    model         text NOT NULL DEFAULT '',
    registered_at timestamptz NOT NULL DEFAULT now(),
    FOREIGN KEY (facility_id, zone_id) REFERENCES zones (facility_id, zone_id)
);
CREATE INDEX IF NOT EXISTS devices_facility ON devices (facility_id);

-- Latest state per device, kept current by every batch; a table of its own so the
-- frequent updates stay HOT and never touch the registry rows.
CREATE TABLE IF NOT EXISTS device_state (
    device_id  text PRIMARY KEY REFERENCES devices (id) ON DELETE CASCADE,
    last_seen  timestamptz NOT NULL,
    last_seq   bigint,
    online     boolean,
    battery    real,
    presence   boolean,
    count      integer,
    staff      integer,
    rssi       real,
    -- Device time of the message the measured fields come from.
    state_ts   timestamptz
) WITH (fillfactor = 50);
