-- PostgreSQL schema v4, as SQLite's 004_upstream_authorities.sql (docs/operations/upstream.md).

-- Upstream intermediates between an intermediate and its root (nearest first), concatenated PEM;
-- NULL when the intermediate is signed by its root.
ALTER TABLE authorities ADD COLUMN upstream_chain TEXT NULL;

-- Keys waiting for their certificate (an authorities row always has one).
CREATE TABLE pending_authorities (
  id         TEXT   NOT NULL PRIMARY KEY,
  key_type   TEXT   NOT NULL,
  -- AES-256-GCM sealed PKCS#8 under the KEK, with the pending id as AAD.
  sealed_key BYTEA  NOT NULL,
  csr        BYTEA  NOT NULL,
  subject    TEXT   NOT NULL,
  -- 'manual' (an operator), 'vault' or 'cert-manager'.
  upstream   TEXT   NOT NULL,
  created_at BIGINT NOT NULL,
  -- After this, attaching is refused and housekeeping deletes the row.
  expires_at BIGINT NOT NULL
);
