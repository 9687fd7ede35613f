-- PostgreSQL schema v2: revoked ("tainted") authorities, as SQLite's 003_authority_revocations.sql.
-- One row per revoked root or intermediate, written in the transaction that makes it 'tainted'.
CREATE TABLE revoked_authorities (
  authority_id TEXT   NOT NULL PRIMARY KEY REFERENCES authorities (id),
  revoked_at   BIGINT NOT NULL,
  reason       TEXT   NOT NULL,
  actor        TEXT   NOT NULL
);
