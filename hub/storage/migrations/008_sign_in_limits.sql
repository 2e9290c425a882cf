-- Sign-in limits (README "API and accounts"): failed sign-ins counted per account name
-- and per client address, in the database so that every hub process of a site counts
-- the same guesses; and the audit of account actions (locks, unlocks, disables).

-- One row per account name (typed, known or not: a lock must not tell a guesser which
-- names exist) or client address with recent failures.
CREATE TABLE IF NOT EXISTS login_failures (
    kind            text NOT NULL CHECK (kind IN ('account', 'address')),
    key             text NOT NULL CHECK (length(key) BETWEEN 1 AND 128),
    -- Failures in a row: reset by a successful sign-in (of the account) or an unlock,
    -- forgotten after a quiet while.
    failures        integer NOT NULL DEFAULT 0 CHECK (failures >= 0),
    last_failed_at  timestamptz NOT NULL DEFAULT now(),
    -- No attempt is checked before this (the growing backoff).
    backoff_until   timestamptz,
    -- No attempt is checked before this either, not even with the right password.
    locked_until    timestamptz,
    PRIMARY KEY (kind, key)
);
-- Rows of quiet names and addresses are pruned by age.
CREATE INDEX IF NOT EXISTS login_failures_last ON login_failures (last_failed_at);

-- Where each account signed in successfully of late: an address's limit does not stop
-- an account already known there (a care worker behind the facility's NAT address while
-- someone on it sprays guesses), only its own account limit does.
CREATE TABLE IF NOT EXISTS known_sign_ins (
    username  text NOT NULL CHECK (length(username) BETWEEN 1 AND 64),
    address   text NOT NULL CHECK (length(address) BETWEEN 1 AND 128),
    last_at   timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (username, address)
);
CREATE INDEX IF NOT EXISTS known_sign_ins_last ON known_sign_ins (last_at);

-- Who did what to which account, and when. No foreign keys: the audit outlives the
-- accounts it names, and a lock may name an account that does not exist.
CREATE TABLE IF NOT EXISTS account_audit (
    id        bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    at        timestamptz NOT NULL DEFAULT now(),
    -- 'hub' for what the hub decided itself (a lock), else the operator or admin.
    actor     text NOT NULL,
    action    text NOT NULL CHECK (action IN ('locked', 'unlocked', 'disabled')),
    username  text,
    address   text,
    detail    text NOT NULL DEFAULT '',
    CHECK (username IS NOT NULL OR address IS NOT NULL)
);
CREATE INDEX IF NOT EXISTS account_audit_user ON account_audit (username, at);
