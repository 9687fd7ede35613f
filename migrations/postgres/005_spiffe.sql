-- PostgreSQL schema v5, as SQLite's 005_spiffe.sql: JWT-SVID signing authorities, minted JWT-SVIDs,
-- federated trust bundles. JSON is kept as TEXT (checked to parse) so both engines return the same text.

CREATE TABLE jwt_authorities (
  kid        TEXT   NOT NULL PRIMARY KEY,
  state      TEXT   NOT NULL CHECK (state IN ('prepared', 'active', 'retired', 'removed')),
  algorithm  TEXT   NOT NULL,
  public_jwk TEXT   NOT NULL CHECK (public_jwk::jsonb IS NOT NULL),
  sealed_key BYTEA  NOT NULL,
  not_after  BIGINT NOT NULL,
  created_at BIGINT NOT NULL,
  updated_at BIGINT NOT NULL
);
-- At most one active JWT signing key, whatever any replica does.
CREATE UNIQUE INDEX jwt_authorities_one_active ON jwt_authorities (state) WHERE state = 'active';

CREATE TABLE jwt_svids (
  jti        TEXT   NOT NULL PRIMARY KEY,
  spiffe_id  TEXT   NOT NULL,
  caller_id  TEXT   NOT NULL,
  audiences  TEXT   NOT NULL CHECK (audiences::jsonb IS NOT NULL),
  kid        TEXT   NOT NULL REFERENCES jwt_authorities (kid),
  issued_at  BIGINT NOT NULL,
  expires_at BIGINT NOT NULL
);
CREATE INDEX jwt_svids_spiffe ON jwt_svids (spiffe_id, issued_at);
CREATE INDEX jwt_svids_expires ON jwt_svids (expires_at);

CREATE TABLE federated_bundles (
  trust_domain TEXT   NOT NULL PRIMARY KEY,
  endpoint_url TEXT   NOT NULL,
  bundle       TEXT   NOT NULL CHECK (bundle::jsonb IS NOT NULL),
  sequence     BIGINT NULL,
  fetched_at   BIGINT NOT NULL
);
