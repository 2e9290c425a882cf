-- A non-latched alert that ends because its condition ended (a battery recharged, a
-- device heard again) is closed by the system with the disposition `self_resolved`: no
-- one judged it, so it counts in no false-alarm share (README "KPIs").
ALTER TABLE alerts DROP CONSTRAINT IF EXISTS alerts_disposition_check;
ALTER TABLE alerts ADD CONSTRAINT alerts_disposition_check
    CHECK (disposition IN ('real', 'false_alarm', 'test', 'other', 'self_resolved'));
-- Before this migration such alerts got `other`; the system's resolutions of non-latched
-- alerts are told apart from a person's by who resolved them.
UPDATE alerts SET disposition = 'self_resolved'
WHERE state = 'resolved' AND disposition = 'other' AND NOT latched AND resolved_by = 'system';
