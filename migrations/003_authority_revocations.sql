-- meshca schema v3 (issue 13): revoked ("tainted") authorities. One row per revoked root or
-- intermediate, written in the same transaction as its state change to 'tainted'. A revoked
-- intermediate is listed on its root's CRL; the reason and time are kept for the audit trail,
-- OCSP answers for its leaves (cACompromise) and `meshca status`.
CREATE TABLE revoked_authorities (
  authority_id TEXT    NOT NULL PRIMARY KEY REFERENCES authorities (id),
  revoked_at   INTEGER NOT NULL,
  reason       TEXT    NOT NULL,
  actor        TEXT    NOT NULL
) WITHOUT ROWID;
