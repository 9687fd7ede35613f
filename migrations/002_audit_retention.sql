-- Audit retention (--audit-retention): housekeeping deletes the oldest events by time in batches.
CREATE INDEX audit_events_at ON audit_events (at);
