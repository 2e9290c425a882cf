-- Alerts (SPEC §4): their state lives here, not in any process's memory, so several hub
-- processes can run side by side and a restart forgets nothing.
CREATE TABLE IF NOT EXISTS alerts (
    id               bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    facility_id      text NOT NULL REFERENCES facilities (id) ON DELETE CASCADE,
    zone_id          text,
    -- The device the alert is about; NULL for a zone's or the facility's own alert.
    device_id        text,
    -- What "one open alert per device and kind" counts by: the device id, or
    -- 'zone:{facility}/{zone}' / 'facility:{facility}' for capacity and ratio alerts.
    subject          text NOT NULL,
    kind             text NOT NULL CHECK (kind IN ('sos', 'fall', 'long_lie', 'dwell',
                         'over_capacity', 'staff_ratio', 'device_offline', 'low_battery')),
    priority         text NOT NULL CHECK (priority IN ('high', 'medium', 'low')),
    latched          boolean NOT NULL,
    state            text NOT NULL DEFAULT 'active'
                         CHECK (state IN ('active', 'acknowledged', 'attended', 'resolved')),
    count            integer NOT NULL DEFAULT 1 CHECK (count >= 1),
    -- The device message that raised it (echoed on the device's ack topic).
    seq              bigint,
    raised_at        timestamptz NOT NULL,
    last_raised_at   timestamptz NOT NULL,
    acknowledged_at  timestamptz,
    acknowledged_by  text,
    attended_at      timestamptz,
    attended_by      text,
    resolved_at      timestamptz,
    resolved_by      text,
    disposition      text CHECK (disposition IN ('real', 'false_alarm', 'test', 'other')),
    note             text NOT NULL DEFAULT '',
    -- The device said the condition ended; a latched alert stays open regardless.
    cleared_at       timestamptz,
    -- Escalation steps already taken (SPEC §4): manager told again, flagged overdue.
    renotified_at    timestamptz,
    overdue_at       timestamptz,
    -- Raised while its zone was snoozed: stored and listed, not escalated.
    shelved          boolean NOT NULL DEFAULT false,
    detail           jsonb NOT NULL DEFAULT '{}',
    CHECK ((state = 'resolved') = (resolved_at IS NOT NULL)),
    CHECK (state <> 'resolved' OR disposition IS NOT NULL)
);
-- At most one open alert per (subject, kind), enforced here: a repeat must find it.
CREATE UNIQUE INDEX IF NOT EXISTS alerts_one_open ON alerts (subject, kind)
    WHERE state <> 'resolved';
CREATE INDEX IF NOT EXISTS alerts_facility_raised ON alerts (facility_id, raised_at DESC);
CREATE INDEX IF NOT EXISTS alerts_open ON alerts (raised_at) WHERE state <> 'resolved';
CREATE INDEX IF NOT EXISTS alerts_device ON alerts (device_id, raised_at DESC);

-- The device messages that already raised or repeated an alert: a redelivered message
-- (same device and seq) must not count as a repeat.
CREATE TABLE IF NOT EXISTS alert_triggers (
    device_id  text NOT NULL,
    seq        bigint NOT NULL,
    kind       text NOT NULL,
    -- Claimed before the alert is written (so two copies of a message cannot both
    -- count), filled in once it is.
    alert_id   bigint REFERENCES alerts (id) ON DELETE CASCADE,
    at         timestamptz NOT NULL,
    PRIMARY KEY (device_id, seq, kind)
);

-- Every change of every alert: who, when, from what to what. Rows chain per facility:
-- hash = sha256(content, previous row's hash), so an edited or deleted row shows.
CREATE TABLE IF NOT EXISTS alert_audit (
    id          bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    facility_id text NOT NULL,
    alert_id    bigint NOT NULL REFERENCES alerts (id),
    at          timestamptz NOT NULL,
    actor       text NOT NULL,
    action      text NOT NULL,
    from_state  text,
    to_state    text,
    note        text NOT NULL DEFAULT '',
    prev_hash   text NOT NULL,
    hash        text NOT NULL UNIQUE
);
CREATE INDEX IF NOT EXISTS alert_audit_alert ON alert_audit (alert_id, id);
CREATE INDEX IF NOT EXISTS alert_audit_facility ON alert_audit (facility_id, id);
-- The end of each facility's chain; its row lock orders concurrent writers.
CREATE TABLE IF NOT EXISTS audit_heads (
    facility_id text PRIMARY KEY,
    last_id     bigint NOT NULL,
    last_hash   text NOT NULL
);

-- A zone's alerts shelved for a while, with a reason (maintenance, a drill).
CREATE TABLE IF NOT EXISTS snoozes (
    id          bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    facility_id text NOT NULL REFERENCES facilities (id) ON DELETE CASCADE,
    zone_id     text NOT NULL,
    starts_at   timestamptz NOT NULL,
    until       timestamptz NOT NULL CHECK (until > starts_at),
    reason      text NOT NULL CHECK (length(btrim(reason)) > 0),
    created_by  text NOT NULL,
    FOREIGN KEY (facility_id, zone_id) REFERENCES zones (facility_id, zone_id) ON DELETE CASCADE
);
CREATE INDEX IF NOT EXISTS snoozes_zone ON snoozes (facility_id, zone_id, until);

-- Rule parameters overridden for a facility (zone_id '') or one of its zones.
CREATE TABLE IF NOT EXISTS rule_overrides (
    facility_id text NOT NULL REFERENCES facilities (id) ON DELETE CASCADE,
    zone_id     text NOT NULL DEFAULT '',
    kind        text NOT NULL,
    params      jsonb NOT NULL,
    updated_at  timestamptz NOT NULL DEFAULT now(),
    updated_by  text NOT NULL DEFAULT '',
    PRIMARY KEY (facility_id, zone_id, kind)
);

-- Conditions that must hold for a while before they raise (over capacity, staff ratio):
-- since when they hold. In the database, so a new timer leader picks up the clock.
CREATE TABLE IF NOT EXISTS rule_conditions (
    subject     text NOT NULL,
    kind        text NOT NULL,
    facility_id text NOT NULL,
    zone_id     text,
    since       timestamptz NOT NULL,
    detail      jsonb NOT NULL DEFAULT '{}',
    PRIMARY KEY (subject, kind)
);

-- Every change the live feed shows, in commit order; a client resumes after an id.
CREATE TABLE IF NOT EXISTS live_changes (
    id          bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    at          timestamptz NOT NULL DEFAULT clock_timestamp(),
    facility_id text NOT NULL,
    alert_id    bigint,
    change      jsonb NOT NULL
);
CREATE INDEX IF NOT EXISTS live_changes_at ON live_changes (at);
