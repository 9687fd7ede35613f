// @ts-check
// Pre-fills a stopped server's SQLite store with existing certificate rows (migrations/001_initial.sql
// schema), for the large-store scenario. Runs between a first start (which creates the schema and
// the authorities) and the measured restart.

import { randomBytes } from 'node:crypto';
import Database from 'better-sqlite3';

export const STORE_IDENTITIES = 10_000;
/** The identities the pre-filled rows belong to (row i → identity i % STORE_IDENTITIES). */
export const storeSpiffeId = (/** @type {number} */ k) => `spiffe://cluster.local/ns/store-${k % 100}/sa/s${k}`;

/**
 * Inserts `rows` unexpired leaves issued over the last 23 hours by the active intermediate, each
 * carrying a real leaf DER copied from a certificate the server issued (so rows have realistic size).
 * Bulk-load settings (no journal, no fsync, a large page cache) apply to this connection only; the
 * database is switched back to WAL before closing, as the server expects.
 * @param {string} dbPath
 * @param {number} rows
 * @returns {{ seconds: number, authorityId: string, dbBytes: number }}
 */
export function prefillStore(dbPath, rows) {
  const started = performance.now();
  const db = new Database(dbPath);
  try {
    const active = /** @type {{ id: string } | undefined} */ (
      db.prepare(`SELECT id FROM authorities WHERE kind = 'intermediate' AND state = 'active'`).get()
    );
    if (!active) throw new Error('no active intermediate in the store');
    const sample = /** @type {{ der: Buffer } | undefined} */ (
      db.prepare('SELECT der FROM issued_certificates ORDER BY id DESC LIMIT 1').get()
    );
    if (!sample) throw new Error('no issued certificate to copy a DER from (the warm-up should have issued some)');
    db.pragma('journal_mode = DELETE');
    db.pragma('synchronous = OFF');
    db.pragma('cache_size = -1048576'); // 1 GiB: keeps the index b-trees in memory during the load
    const insert = db.prepare(
      `INSERT INTO issued_certificates (serial_hex, spiffe_id, caller_id, cluster_id, authority_id, not_before, not_after, issued_at, der)
       VALUES (?, ?, ?, 'Kubernetes', ?, ?, ?, ?, ?)`,
    );
    const now = Date.now();
    const span = 23 * 3600_000;
    const BATCH = 50_000;
    const insertBatch = db.transaction((/** @type {number} */ from, /** @type {number} */ to) => {
      const random = randomBytes(16 * (to - from));
      for (let i = from; i < to; i++) {
        const o = (i - from) * 16;
        random[o] = (random[o] & 0x7f) | 0x01; // positive, 127-ish bits, never a leading zero byte
        const serial = random.toString('hex', o, o + 16).replace(/^0+/, '');
        const id = storeSpiffeId(i % STORE_IDENTITIES);
        const issuedAt = now - Math.floor((span * (rows - i)) / rows);
        insert.run(serial, id, id, active.id, issuedAt - 60_000, issuedAt + 24 * 3600_000, issuedAt, sample.der);
      }
    });
    for (let from = 0; from < rows; from += BATCH) insertBatch(from, Math.min(rows, from + BATCH));
    db.pragma('journal_mode = WAL');
    const pages = /** @type {number} */ (db.pragma('page_count', { simple: true }));
    const pageSize = /** @type {number} */ (db.pragma('page_size', { simple: true }));
    return { seconds: (performance.now() - started) / 1000, authorityId: active.id, dbBytes: pages * pageSize };
  } finally {
    db.close();
  }
}
