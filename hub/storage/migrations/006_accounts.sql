-- Accounts (SPEC §7): who may sign in, with which role and scope; their API tokens; and
-- the PIPL access log of regulators' reads of a facility's detail.
CREATE TABLE IF NOT EXISTS users (
    username      text PRIMARY KEY CHECK (username ~ '^[A-Za-z0-9_.@-]{1,64}$'),
    display_name  text NOT NULL DEFAULT '' CHECK (length(display_name) <= 128),
    role          text NOT NULL CHECK (role IN ('admin', 'regulator', 'manager', 'staff')),
    -- The one facility a manager or staff member works at; NULL for the others.
    facility_id   text REFERENCES facilities (id) ON DELETE RESTRICT,
    -- The district a regulator supervises; NULL for the others.
    district      text CHECK (district IS NULL OR length(btrim(district)) > 0),
    -- argon2id, in the PHC string format argon2-cffi writes.
    password_hash text NOT NULL,
    disabled      boolean NOT NULL DEFAULT false,
    created_at    timestamptz NOT NULL DEFAULT now(),
    CHECK ((role IN ('manager', 'staff')) = (facility_id IS NOT NULL)),
    CHECK ((role = 'regulator') = (district IS NOT NULL))
);
CREATE INDEX IF NOT EXISTS users_facility ON users (facility_id) WHERE facility_id IS NOT NULL;

-- Bearer tokens, kept only as sha256 of the token: a copy of this table signs no one in.
CREATE TABLE IF NOT EXISTS api_tokens (
    token_sha256 text PRIMARY KEY CHECK (token_sha256 ~ '^[0-9a-f]{64}$'),
    username     text NOT NULL REFERENCES users (username) ON DELETE CASCADE,
    created_at   timestamptz NOT NULL DEFAULT now(),
    expires_at   timestamptz NOT NULL,
    revoked_at   timestamptz,
    CHECK (expires_at > created_at)
);
CREATE INDEX IF NOT EXISTS api_tokens_user ON api_tokens (username) WHERE revoked_at IS NULL;
-- Old tokens are pruned by expiry.
CREATE INDEX IF NOT EXISTS api_tokens_expires ON api_tokens (expires_at);

-- Every read of a facility's detail by a regulator (SPEC §7, PIPL): who, when, what.
-- No foreign keys: the log outlives the accounts and facilities it names.
CREATE TABLE IF NOT EXISTS access_log (
    id          bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    at          timestamptz NOT NULL DEFAULT now(),
    username    text NOT NULL,
    role        text NOT NULL,
    route       text NOT NULL,
    facility_id text NOT NULL
);
CREATE INDEX IF NOT EXISTS access_log_facility ON access_log (facility_id, at);
CREATE INDEX IF NOT EXISTS access_log_user ON access_log (username, at);
