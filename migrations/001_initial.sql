-- meshca schema v1 (DESIGN.md §7). Applied inside one transaction by src/store/migrations.ts;
-- never edit an applied migration (its sha256 is recorded): add a new numbered file instead.
-- Times are INTEGER Unix milliseconds.

-- Signing authorities: roots and intermediates, with their sealed keys and lifecycle state.
CREATE TABLE authorities (
  id                 TEXT    NOT NULL PRIMARY KEY,
  kind               TEXT    NOT NULL CHECK (kind IN ('root', 'intermediate')),
  -- Deferred so that a root and its intermediate can be inserted in either order in one change.
  parent_id          TEXT    NULL REFERENCES authorities (id) DEFERRABLE INITIALLY DEFERRED,
  state              TEXT    NOT NULL CHECK (state IN ('prepared', 'active', 'retired', 'tainted', 'removed')),
  key_type           TEXT    NOT NULL,
  certificate        BLOB    NOT NULL,
  sealed_key         BLOB    NULL,
  serial_hex         TEXT    NOT NULL,
  subject            TEXT    NOT NULL,
  not_before         INTEGER NOT NULL,
  not_after          INTEGER NOT NULL,
  sha256_fingerprint TEXT    NOT NULL UNIQUE,
  created_at         INTEGER NOT NULL,
  updated_at         INTEGER NOT NULL
);

-- Every issued leaf. A rowid table (explicit INTEGER PRIMARY KEY, so VACUUM keeps the ids) with a
-- UNIQUE serial index, not a WITHOUT ROWID table keyed by serial: measured on the dev machine with
-- 700-byte DERs and random 128-bit serials, WITHOUT ROWID inserted ~2x slower (~5k vs ~10k rows/s,
-- 256-row commits, 300k rows), because random keys split pages of a b-tree that holds whole rows.
-- The id is also the cheap tie-breaker every secondary index carries implicitly (rowid suffix).
CREATE TABLE issued_certificates (
  id                INTEGER NOT NULL PRIMARY KEY,
  serial_hex        TEXT    NOT NULL,
  spiffe_id         TEXT    NOT NULL,
  caller_id         TEXT    NOT NULL,
  cluster_id        TEXT    NOT NULL,
  authority_id      TEXT    NOT NULL REFERENCES authorities (id),
  not_before        INTEGER NOT NULL,
  not_after         INTEGER NOT NULL,
  issued_at         INTEGER NOT NULL,
  der               BLOB    NOT NULL,
  revoked_at        INTEGER NULL,
  revocation_reason TEXT    NULL,
  revoked_by        TEXT    NULL,
  CHECK ((revoked_at IS NULL) = (revocation_reason IS NULL))
);

-- Point lookups by serial (getCertificate, revokeCertificate) and duplicate detection.
CREATE UNIQUE INDEX issued_certificates_serial ON issued_certificates (serial_hex);
-- Listing by identity, newest expiry first; revokeIdentity. (Every index ends in the rowid `id`.)
CREATE INDEX issued_certificates_spiffe ON issued_certificates (spiffe_id, not_after);
-- Listing by authority; countUnexpired and authorityUsage as covering range scans.
CREATE INDEX issued_certificates_authority ON issued_certificates (authority_id, not_after);
-- Unfiltered listing, status filters, pruneExpired.
CREATE INDEX issued_certificates_not_after ON issued_certificates (not_after);
-- Revoked rows only: free at issuance (new rows are never revoked), small, and what CRLs read.
CREATE INDEX issued_certificates_revoked_by_authority ON issued_certificates (authority_id, not_after) WHERE revoked_at IS NOT NULL;
CREATE INDEX issued_certificates_revoked ON issued_certificates (not_after) WHERE revoked_at IS NOT NULL;

-- Identities refused at issuance. Looked up on every issuance: a primary-key probe.
CREATE TABLE denied_identities (
  spiffe_id TEXT    NOT NULL PRIMARY KEY,
  reason    TEXT    NOT NULL,
  actor     TEXT    NOT NULL,
  at        INTEGER NOT NULL
) WITHOUT ROWID;

-- Per-authority CRL state: the revocation version (bumped by every revocation its CRL must show)
-- and the last CRL number handed out (RFC 5280 §5.2.3, strictly increasing, first is 1).
CREATE TABLE authority_revocations (
  authority_id       TEXT    NOT NULL PRIMARY KEY,
  revocation_version INTEGER NOT NULL DEFAULT 0,
  crl_number         INTEGER NOT NULL DEFAULT 0
) WITHOUT ROWID;

-- Small named counters; bundle_sequence is the SPIFFE bundle's spiffe_sequence.
CREATE TABLE meta (
  key   TEXT    NOT NULL PRIMARY KEY,
  value INTEGER NOT NULL
) WITHOUT ROWID;
INSERT INTO meta (key, value) VALUES ('bundle_sequence', 0);

-- Append-only audit log; AUTOINCREMENT so an id is never reused (the id is the paging cursor).
CREATE TABLE audit_events (
  id      INTEGER NOT NULL PRIMARY KEY AUTOINCREMENT,
  at      INTEGER NOT NULL,
  actor   TEXT    NOT NULL,
  action  TEXT    NOT NULL,
  target  TEXT    NOT NULL,
  result  TEXT    NOT NULL CHECK (result IN ('ok', 'denied', 'error')),
  details TEXT    NULL CHECK (details IS NULL OR json_valid(details))
);
