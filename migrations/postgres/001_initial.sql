-- meshca PostgreSQL schema v1: the same tables as migrations/001_initial.sql (SQLite), applied by
-- src/store/postgres/migrations.ts under an advisory lock, one transaction per file. Never edit an
-- applied migration (its sha256 is recorded): add a new numbered file instead.
-- Times are BIGINT Unix milliseconds, as in SQLite, so both stores map rows the same way.

CREATE TABLE authorities (
  id                 TEXT   NOT NULL PRIMARY KEY,
  kind               TEXT   NOT NULL CHECK (kind IN ('root', 'intermediate')),
  -- Deferred so that a root and its intermediate can be inserted in either order in one change.
  parent_id          TEXT   NULL REFERENCES authorities (id) DEFERRABLE INITIALLY DEFERRED,
  state              TEXT   NOT NULL CHECK (state IN ('prepared', 'active', 'retired', 'tainted', 'removed')),
  key_type           TEXT   NOT NULL,
  certificate        BYTEA  NOT NULL,
  sealed_key         BYTEA  NULL,
  serial_hex         TEXT   NOT NULL,
  subject            TEXT   NOT NULL,
  not_before         BIGINT NOT NULL,
  not_after          BIGINT NOT NULL,
  sha256_fingerprint TEXT   NOT NULL UNIQUE,
  created_at         BIGINT NOT NULL,
  updated_at         BIGINT NOT NULL
);
-- Replicas share this table, so the database (not a process-local queue) keeps the invariants:
-- exactly one signer, and one root rotation in preparation at a time (two replicas asked to prepare
-- at the same moment produce one new root; the other gets a conflict).
CREATE UNIQUE INDEX authorities_one_active_intermediate ON authorities (kind) WHERE kind = 'intermediate' AND state = 'active';
CREATE UNIQUE INDEX authorities_one_prepared_root ON authorities (kind) WHERE kind = 'root' AND state = 'prepared';

CREATE TABLE issued_certificates (
  id                BIGINT NOT NULL GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
  serial_hex        TEXT   NOT NULL,
  spiffe_id         TEXT   NOT NULL,
  caller_id         TEXT   NOT NULL,
  cluster_id        TEXT   NOT NULL,
  authority_id      TEXT   NOT NULL REFERENCES authorities (id),
  not_before        BIGINT NOT NULL,
  not_after         BIGINT NOT NULL,
  issued_at         BIGINT NOT NULL,
  der               BYTEA  NOT NULL,
  revoked_at        BIGINT NULL,
  revocation_reason TEXT   NULL,
  revoked_by        TEXT   NULL,
  CHECK ((revoked_at IS NULL) = (revocation_reason IS NULL))
);
-- Listing orders by (not_after DESC, id DESC); unlike SQLite's rowid suffix, PostgreSQL indexes
-- need the id spelled out to serve that order as a range scan.
CREATE UNIQUE INDEX issued_certificates_serial ON issued_certificates (serial_hex);
CREATE INDEX issued_certificates_spiffe ON issued_certificates (spiffe_id, not_after, id);
CREATE INDEX issued_certificates_authority ON issued_certificates (authority_id, not_after, id);
CREATE INDEX issued_certificates_not_after ON issued_certificates (not_after, id);
CREATE INDEX issued_certificates_revoked_by_authority ON issued_certificates (authority_id, not_after) WHERE revoked_at IS NOT NULL;
CREATE INDEX issued_certificates_revoked ON issued_certificates (not_after, id) WHERE revoked_at IS NOT NULL;

CREATE TABLE denied_identities (
  spiffe_id TEXT   NOT NULL PRIMARY KEY,
  reason    TEXT   NOT NULL,
  actor     TEXT   NOT NULL,
  at        BIGINT NOT NULL
);

CREATE TABLE authority_revocations (
  authority_id       TEXT   NOT NULL PRIMARY KEY,
  revocation_version BIGINT NOT NULL DEFAULT 0,
  crl_number         BIGINT NOT NULL DEFAULT 0
);

CREATE TABLE meta (
  key   TEXT   NOT NULL PRIMARY KEY,
  value BIGINT NOT NULL
);
INSERT INTO meta (key, value) VALUES ('bundle_sequence', 0);

CREATE TABLE audit_events (
  id      BIGINT NOT NULL GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
  at      BIGINT NOT NULL,
  actor   TEXT   NOT NULL,
  action  TEXT   NOT NULL,
  target  TEXT   NOT NULL,
  result  TEXT   NOT NULL CHECK (result IN ('ok', 'denied', 'error')),
  details JSONB  NULL
);

-- Singleton jobs (rotation, CRLs, pruning, Kubernetes writers) run on the replica holding the
-- lease; expiry uses the database clock, and every takeover bumps the fencing epoch.
CREATE TABLE leases (
  name       TEXT        NOT NULL PRIMARY KEY,
  holder     TEXT        NOT NULL,
  epoch      BIGINT      NOT NULL,
  expires_at TIMESTAMPTZ NOT NULL
);
