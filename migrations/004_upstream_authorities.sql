-- Upstream authorities (docs/operations/upstream.md): meshca generates an intermediate's key and
-- sends only a CSR to an offline root, Vault PKI or cert-manager; the signed certificate comes back later.

-- The certificates between an intermediate and its root that a leaf's cert_chain must carry
-- (upstream intermediates, nearest first), as concatenated PEM. NULL: the intermediate is signed by its root.
ALTER TABLE authorities ADD COLUMN upstream_chain TEXT NULL;

-- Keys waiting for their certificate. A separate table, not an authorities state: an authority
-- row always has a certificate, and every reader of that table may rely on it.
CREATE TABLE pending_authorities (
  id         TEXT    NOT NULL PRIMARY KEY,
  key_type   TEXT    NOT NULL,
  -- AES-256-GCM sealed PKCS#8 under the KEK, with the pending id as AAD.
  sealed_key BLOB    NOT NULL,
  csr        BLOB    NOT NULL,
  subject    TEXT    NOT NULL,
  -- Who asked for the certificate: 'manual' (an operator), 'vault' or 'cert-manager'.
  upstream   TEXT    NOT NULL,
  created_at INTEGER NOT NULL,
  -- After this, attaching is refused and housekeeping deletes the row.
  expires_at INTEGER NOT NULL
) WITHOUT ROWID;
