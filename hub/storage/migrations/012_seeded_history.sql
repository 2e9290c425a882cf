-- History written into a database that starts empty (`carehub demo`): one row per district,
-- in the same transaction as the history, so a second start finds it and writes nothing,
-- and anyone can tell the simulated month from data devices sent.
CREATE TABLE IF NOT EXISTS seeded_history (
    district     text PRIMARY KEY,
    period_start timestamptz NOT NULL,
    period_end   timestamptz NOT NULL,
    written_at   timestamptz NOT NULL DEFAULT now(),
    readings     bigint NOT NULL,
    events       bigint NOT NULL,
    alerts       bigint NOT NULL,
    audit_rows   bigint NOT NULL,
    seconds      double precision NOT NULL
);
