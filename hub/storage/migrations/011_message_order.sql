-- Message order across hubs (README "More than one hub"). Behind a shared subscription
-- two hub processes take one device's messages and commit them in whatever order their
-- batches close, so arrival says nothing. A device's own order is (ts, seq): its clock,
-- then its counter for messages sent within one clock tick.

-- Each measured field of the latest state keeps the order of the message it came from:
-- a telemetry message that leaves a field out must not let an older message's value of
-- that field win or lose by arriving later.
ALTER TABLE device_state ADD COLUMN IF NOT EXISTS battery_ts timestamptz;
ALTER TABLE device_state ADD COLUMN IF NOT EXISTS battery_seq bigint;
ALTER TABLE device_state ADD COLUMN IF NOT EXISTS presence_ts timestamptz;
ALTER TABLE device_state ADD COLUMN IF NOT EXISTS presence_seq bigint;
ALTER TABLE device_state ADD COLUMN IF NOT EXISTS count_ts timestamptz;
ALTER TABLE device_state ADD COLUMN IF NOT EXISTS count_seq bigint;
ALTER TABLE device_state ADD COLUMN IF NOT EXISTS staff_ts timestamptz;
ALTER TABLE device_state ADD COLUMN IF NOT EXISTS staff_seq bigint;
ALTER TABLE device_state ADD COLUMN IF NOT EXISTS rssi_ts timestamptz;
ALTER TABLE device_state ADD COLUMN IF NOT EXISTS rssi_seq bigint;
-- The state written before this migration came from the message (state_ts, last_seq).
UPDATE device_state SET
    battery_ts = CASE WHEN battery IS NULL THEN NULL ELSE state_ts END,
    battery_seq = CASE WHEN battery IS NULL THEN NULL ELSE last_seq END,
    presence_ts = CASE WHEN presence IS NULL THEN NULL ELSE state_ts END,
    presence_seq = CASE WHEN presence IS NULL THEN NULL ELSE last_seq END,
    count_ts = CASE WHEN count IS NULL THEN NULL ELSE state_ts END,
    count_seq = CASE WHEN count IS NULL THEN NULL ELSE last_seq END,
    staff_ts = CASE WHEN staff IS NULL THEN NULL ELSE state_ts END,
    staff_seq = CASE WHEN staff IS NULL THEN NULL ELSE last_seq END,
    rssi_ts = CASE WHEN rssi IS NULL THEN NULL ELSE state_ts END,
    rssi_seq = CASE WHEN rssi IS NULL THEN NULL ELSE last_seq END
WHERE state_ts IS NOT NULL AND battery_ts IS NULL AND presence_ts IS NULL AND count_ts IS NULL
  AND staff_ts IS NULL AND rssi_ts IS NULL;

-- An alert raised by a device message keeps that message's device time beside its seq,
-- so that a repeat or a clear arriving late (from the other hub) is weighed by when the
-- device sent it.
ALTER TABLE alerts ADD COLUMN IF NOT EXISTS seq_ts timestamptz;

-- The newest clear (fall_cleared, cancelled) each device sent, per alert kind. A clear
-- can overtake the event it clears; the event, arriving after it, then opens its alert
-- already cleared at the device.
CREATE TABLE IF NOT EXISTS device_clears (
    device_id  text NOT NULL REFERENCES devices (id) ON DELETE CASCADE,
    kind       text NOT NULL,
    ts         timestamptz NOT NULL,
    seq        bigint NOT NULL,
    at         timestamptz NOT NULL,
    PRIMARY KEY (device_id, kind)
);
