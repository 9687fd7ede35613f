-- PostgreSQL schema v3, as SQLite's 002_audit_retention.sql: housekeeping deletes the oldest audit
-- events by time (--audit-retention), in batches.
CREATE INDEX audit_events_at ON audit_events (at);
