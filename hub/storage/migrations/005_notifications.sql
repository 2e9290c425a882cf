-- Staff notifications (SPEC §4): each facility's webhooks, and an outbox of what to send.
-- A notice is queued in the alert's own transaction, so a committed alert always has its
-- notices; any hub process may send them (rows are claimed with SKIP LOCKED).
CREATE TABLE IF NOT EXISTS webhooks (
    id                   bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    facility_id          text NOT NULL REFERENCES facilities (id) ON DELETE CASCADE,
    url                  text NOT NULL CHECK (url ~ '^https?://'),
    -- json: carehub's own body; wecom: 企业微信 group robot; dingtalk: 钉钉 custom robot.
    format               text NOT NULL CHECK (format IN ('json', 'wecom', 'dingtalk')),
    -- DingTalk's signing secret (SEC...), or the HMAC key of a json webhook; '' for none.
    secret               text NOT NULL DEFAULT '',
    enabled              boolean NOT NULL DEFAULT true,
    created_at           timestamptz NOT NULL DEFAULT now(),
    -- How the endpoint is doing, shared by every hub process for the health endpoint.
    consecutive_failures integer NOT NULL DEFAULT 0,
    last_error           text,
    last_success_at      timestamptz,
    last_failure_at      timestamptz
);
CREATE INDEX IF NOT EXISTS webhooks_facility ON webhooks (facility_id) WHERE enabled;

-- The outbox: one row per notice and webhook. `sending` rows are leased to one process
-- until next_attempt_at; a process that dies mid-send leaves them to be claimed again.
CREATE TABLE IF NOT EXISTS notifications (
    id              bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    webhook_id      bigint NOT NULL REFERENCES webhooks (id) ON DELETE CASCADE,
    facility_id     text NOT NULL REFERENCES facilities (id) ON DELETE CASCADE,
    -- NULL for a flood summary, which stands for many alerts.
    alert_id        bigint REFERENCES alerts (id) ON DELETE CASCADE,
    event           text NOT NULL CHECK (event IN ('new', 'escalated', 'overdue', 'flood')),
    -- The generic notice; each webhook's format is rendered from it when it is sent.
    body            jsonb NOT NULL,
    group_count     integer NOT NULL DEFAULT 1 CHECK (group_count >= 1),
    state           text NOT NULL DEFAULT 'pending'
                        CHECK (state IN ('pending', 'sending', 'sent', 'failed')),
    attempts        integer NOT NULL DEFAULT 0,
    next_attempt_at timestamptz NOT NULL,
    last_error      text,
    created_at      timestamptz NOT NULL,
    sent_at         timestamptz,
    CHECK ((state = 'sent') = (sent_at IS NOT NULL))
);
CREATE INDEX IF NOT EXISTS notifications_due ON notifications (next_attempt_at)
    WHERE state IN ('pending', 'sending');
-- One collecting flood summary per webhook: alerts of a flood are added to it until its
-- first try; one waiting for a retry (attempts > 0) no longer collects.
CREATE UNIQUE INDEX IF NOT EXISTS notifications_one_flood ON notifications (webhook_id)
    WHERE event = 'flood' AND state = 'pending' AND attempts = 0;
CREATE INDEX IF NOT EXISTS notifications_alert ON notifications (alert_id);
-- Old sent and failed rows are pruned by age.
CREATE INDEX IF NOT EXISTS notifications_created ON notifications (created_at);
