-- Device MQTT credentials (SPEC §7): the hub issues each device its own password and
-- keeps only a salted hash of it. A broker that keeps a store of its own (Mosquitto's
-- dynamic security) is sent the password once, when it is issued.
CREATE TABLE IF NOT EXISTS device_credentials (
    device_id   text PRIMARY KEY REFERENCES devices (id) ON DELETE CASCADE,
    -- NULL once revoked: the row stays, so who revoked it and when is kept.
    secret_hash text,
    issued_at   timestamptz NOT NULL DEFAULT now(),
    issued_by   text NOT NULL,
    rotations   integer NOT NULL DEFAULT 0 CHECK (rotations >= 0),
    revoked_at  timestamptz,
    revoked_by  text,
    CHECK ((secret_hash IS NULL) = (revoked_at IS NOT NULL))
);
