-- Issue 16: JWT-SVID signing authorities, the record of minted JWT-SVIDs, and federated trust bundles.
-- Times are INTEGER Unix milliseconds.

-- JWT-SVID signing keys, a lifecycle of their own (prepared → active → retired → removed), published
-- in the SPIFFE bundle with their kid while not removed. Keys are sealed under the KEK (AAD = kid).
CREATE TABLE jwt_authorities (
  kid        TEXT    NOT NULL PRIMARY KEY,
  state      TEXT    NOT NULL CHECK (state IN ('prepared', 'active', 'retired', 'removed')),
  algorithm  TEXT    NOT NULL,
  public_jwk TEXT    NOT NULL CHECK (json_valid(public_jwk)),
  sealed_key BLOB    NOT NULL,
  not_after  INTEGER NOT NULL,
  created_at INTEGER NOT NULL,
  updated_at INTEGER NOT NULL
);
-- At most one active JWT signing key, whatever the code does.
CREATE UNIQUE INDEX jwt_authorities_one_active ON jwt_authorities (state) WHERE state = 'active';

-- Every minted JWT-SVID, without the token itself.
CREATE TABLE jwt_svids (
  jti        TEXT    NOT NULL PRIMARY KEY,
  spiffe_id  TEXT    NOT NULL,
  caller_id  TEXT    NOT NULL,
  audiences  TEXT    NOT NULL CHECK (json_valid(audiences)),
  kid        TEXT    NOT NULL REFERENCES jwt_authorities (kid),
  issued_at  INTEGER NOT NULL,
  expires_at INTEGER NOT NULL
) WITHOUT ROWID;
CREATE INDEX jwt_svids_spiffe ON jwt_svids (spiffe_id, issued_at);
CREATE INDEX jwt_svids_expires ON jwt_svids (expires_at);

-- The last good bundle of each federated trust domain (survives failures of its endpoint and restarts).
CREATE TABLE federated_bundles (
  trust_domain TEXT    NOT NULL PRIMARY KEY,
  endpoint_url TEXT    NOT NULL,
  bundle       TEXT    NOT NULL CHECK (json_valid(bundle)),
  sequence     INTEGER NULL,
  fetched_at   INTEGER NOT NULL
) WITHOUT ROWID;
