-- The timer leader prunes trigger claims by age (hub/timers.py prune); without an index
-- each pass would read the whole table, which holds a row per alerting event.
CREATE INDEX IF NOT EXISTS alert_triggers_at ON alert_triggers (at);
