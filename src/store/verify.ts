/**
 * Read-only inspection of a SQLite data dir for the operator tools (`meshca verify`, `meshca status`,
 * `meshca restore`) and the crash-safety harness. Like the rest of store/, this is the only place
 * that knows the tables; callers see domain records and counts.
 *
 * The inspector never writes data: a data dir is opened with `PRAGMA query_only` (a normal
 * connection, so it can recover the WAL after a crash, and it can run next to a live server in WAL
 * mode); a backup file is opened read-only.
 */
import Database from 'better-sqlite3';
import type { Database as Connection } from 'better-sqlite3';
import { StoreError } from './errors.js';
import { authorityFromRow, jwtAuthorityFromRow, normalizeSerial, type AuthorityRow, type JwtAuthorityRow } from './rows.js';
import { DEFAULT_MIGRATIONS_DIR, readMigrations, recordedMigrations } from './migrations.js';
import type { AuthorityRecord, AuthorityUsage, DeniedIdentity, JwtAuthorityRecord, RevocationReason } from './types.js';

export interface IssuedDer {
  readonly serialHex: string;
  readonly authorityId: string;
  readonly der: Buffer;
}

export interface SchemaInfo {
  /** Highest migration recorded in the database (0 if none). */
  readonly version: number;
  /** Highest migration this build ships. */
  readonly latestKnown: number;
}

export interface IssuanceCounts {
  /** Certificate records in the store (expired ones stay until pruned). */
  readonly total: number;
  readonly unexpired: number;
  readonly revoked: number;
  readonly revokedUnexpired: number;
}

/** What the invariant checker and the operator commands read. Asynchronous so other engines can implement it. */
export interface StoreInspection {
  integrityCheck(): Promise<string>;
  /** Rows whose foreign keys point nowhere (`PRAGMA foreign_key_check`), as "table rowid → parent". */
  foreignKeyViolations(limit?: number): Promise<string[]>;
  schema(): Promise<SchemaInfo>;
  loadAuthorities(): Promise<AuthorityRecord[]>;
  /** JWT-SVID signing keys; none in a database from before migration 005. */
  loadJwtAuthorities(): Promise<JwtAuthorityRecord[]>;
  bundleSequence(): Promise<number>;
  /** The serials (any case, leading zeros allowed) that are not stored. */
  missingSerials(serials: Iterable<string>): Promise<string[]>;
  /** Certificates whose authority_id names no stored authority. */
  certificatesWithUnknownAuthority(sampleSize?: number): Promise<{ count: number; sample: string[] }>;
  certificateCount(): Promise<number>;
  /**
   * Issued certificates with their DER, in batches: all of them in id order, or `sample` chosen at
   * random. Batches bound memory on large stores.
   */
  certificateBatches(options?: { readonly sample?: number; readonly batchSize?: number }): AsyncIterable<IssuedDer[]>;
  /** Certificates issued at or after `since`. */
  issuedSince(since: Date): Promise<number>;
  issuanceCounts(now: Date): Promise<IssuanceCounts>;
  /** Per-authority counts (intermediates that issued something). */
  authorityUsage(now: Date): Promise<Map<string, AuthorityUsage>>;
  deniedIdentities(): Promise<DeniedIdentity[]>;
  /** Ids of revoked (tainted) authorities; empty for a store from before migration 003. */
  revokedAuthorityIds(): Promise<string[]>;
  close(): void;
}

export interface InspectOptions {
  /** Open the file read-only (backups). Data dirs use a query-only normal connection instead. */
  readonly readonly?: boolean;
}


const REQUIRED_TABLES = ['authorities', 'issued_certificates', 'meta', 'schema_migrations', 'denied_identities'];

/** Opens a meshca database for inspection; refuses a file that is not one. */
export function inspectSqliteStore(path: string, options: InspectOptions = {}): StoreInspection {
  let db: Connection;
  try {
    db = new Database(path, { readonly: options.readonly ?? false, fileMustExist: true, timeout: 5000 });
  } catch (error) {
    throw new StoreError('ERR_STORE_UNAVAILABLE', `cannot open the database ${path}: ${(error as Error).message}`, { cause: error });
  }
  try {
    if (!options.readonly) db.pragma('query_only = ON');
    const tables = new Set(db.prepare<[], { name: string }>("SELECT name FROM sqlite_master WHERE type = 'table'").all().map((r) => r.name));
    const missing = REQUIRED_TABLES.filter((t) => !tables.has(t));
    if (missing.length > 0) throw new StoreError('ERR_STORE_MIGRATION', `${path} is not a meshca database (missing tables: ${missing.join(', ')})`);
  } catch (error) {
    db.close();
    if (error instanceof StoreError) throw error;
    throw new StoreError('ERR_STORE_UNAVAILABLE', `${path} is not a readable SQLite database: ${(error as Error).message}`, { cause: error });
  }
  return new SqliteInspection(db);
}

/**
 * Throws unless this process can take the database's exclusive lock, i.e. no server (or other tool)
 * has it open. Offline operations (KEK rotation, restore over an existing database) call it first.
 */
export function assertNotInUse(path: string, what: string): void {
  let db: Connection | undefined;
  try {
    db = new Database(path, { fileMustExist: true, timeout: 200 });
    db.pragma('locking_mode = EXCLUSIVE');
    db.exec('BEGIN EXCLUSIVE');
    db.exec('COMMIT');
  } catch (error) {
    const code = (error as { code?: string }).code ?? '';
    if (code.startsWith('SQLITE_BUSY') || code.startsWith('SQLITE_LOCKED')) {
      throw new StoreError('ERR_STORE_UNAVAILABLE', `${path} is in use (is "meshca serve" running on this data dir?); stop the server before ${what}`, { cause: error });
    }
    throw new StoreError('ERR_STORE_UNAVAILABLE', `cannot open the database ${path}: ${(error as Error).message}`, { cause: error });
  } finally {
    db?.close();
  }
}



class SqliteInspection implements StoreInspection {
  constructor(private readonly db: Connection) {}

  async integrityCheck(): Promise<string> {
    return this.read(() => this.db.prepare<[], { integrity_check: string }>('PRAGMA integrity_check').all().map((r) => r.integrity_check).join('\n'));
  }

  async foreignKeyViolations(limit = 20): Promise<string[]> {
    return this.read(() =>
      this.db
        .prepare<[], { table: string; rowid: number | null; parent: string }>('PRAGMA foreign_key_check')
        .all()
        .slice(0, limit)
        .map((r) => `${r.table} row ${r.rowid ?? '?'} → ${r.parent}`),
    );
  }

  async schema(): Promise<SchemaInfo> {
    return this.read(() => {
      const recorded = recordedMigrations(this.db);
      const known = readMigrations(DEFAULT_MIGRATIONS_DIR);
      return { version: recorded.at(-1)?.version ?? 0, latestKnown: known.at(-1)?.version ?? 0 };
    });
  }

  async loadAuthorities(): Promise<AuthorityRecord[]> {
    return this.read(() => this.db.prepare<[], AuthorityRow>('SELECT * FROM authorities ORDER BY created_at, id').all().map(authorityFromRow));
  }

  async loadJwtAuthorities(): Promise<JwtAuthorityRecord[]> {
    return this.read(() => {
      const exists = this.db.prepare("SELECT 1 FROM sqlite_master WHERE type = 'table' AND name = 'jwt_authorities'").get();
      return exists ? this.db.prepare<[], JwtAuthorityRow>('SELECT * FROM jwt_authorities ORDER BY created_at, kid').all().map(jwtAuthorityFromRow) : [];
    });
  }

  async bundleSequence(): Promise<number> {
    return this.read(() => this.db.prepare<[], { value: number }>("SELECT value FROM meta WHERE key = 'bundle_sequence'").get()?.value ?? 0);
  }

  async missingSerials(serials: Iterable<string>): Promise<string[]> {
    return this.read(() => {
      const lookup = this.db.prepare<[string], { one: number }>('SELECT 1 AS one FROM issued_certificates WHERE serial_hex = ?');
      const missing: string[] = [];
      for (const serial of serials) if (!lookup.get(normalizeSerial(serial))) missing.push(serial);
      return missing;
    });
  }

  async certificatesWithUnknownAuthority(sampleSize = 10): Promise<{ count: number; sample: string[] }> {
    return this.read(() => {
      const from = 'FROM issued_certificates c WHERE NOT EXISTS (SELECT 1 FROM authorities a WHERE a.id = c.authority_id)';
      const count = this.db.prepare<[], { n: number }>(`SELECT count(*) AS n ${from}`).get()?.n ?? 0;
      const sample = count === 0 ? [] : this.db.prepare<[number], { s: string }>(`SELECT c.serial_hex AS s ${from} LIMIT ?`).all(sampleSize).map((r) => r.s);
      return { count, sample };
    });
  }

  async certificateCount(): Promise<number> {
    return this.read(() => this.db.prepare<[], { n: number }>('SELECT count(*) AS n FROM issued_certificates').get()?.n ?? 0);
  }

  async *certificateBatches(options: { readonly sample?: number; readonly batchSize?: number } = {}): AsyncIterable<IssuedDer[]> {
    const batchSize = Math.max(1, options.batchSize ?? 500);
    type Row = { id: number; serial_hex: string; authority_id: string; der: Buffer };
    const toDer = (r: Row): IssuedDer => ({ serialHex: r.serial_hex, authorityId: r.authority_id, der: r.der });
    if (options.sample !== undefined) {
      // ORDER BY random() sorts only (id, random) pairs of the index, then fetches the chosen rows.
      const ids = this.read(() =>
        this.db.prepare<[number], { id: number }>('SELECT id FROM issued_certificates ORDER BY random() LIMIT ?').all(Math.max(0, options.sample!)).map((r) => r.id),
      );
      const byId = this.db.prepare<[number], Row>('SELECT id, serial_hex, authority_id, der FROM issued_certificates WHERE id = ?');
      for (let i = 0; i < ids.length; i += batchSize) {
        yield this.read(() => ids.slice(i, i + batchSize).flatMap((id) => byId.get(id) ?? []).map(toDer));
      }
      return;
    }
    const page = this.db.prepare<[number, number], Row>('SELECT id, serial_hex, authority_id, der FROM issued_certificates WHERE id > ? ORDER BY id LIMIT ?');
    let after = -1;
    for (;;) {
      const rows = this.read(() => page.all(after, batchSize));
      const last = rows.at(-1);
      if (last === undefined) return;
      after = last.id;
      yield rows.map(toDer);
    }
  }

  /**
   * Rows are appended in issuance order, so issued_at grows with the rowid: a binary search over
   * the rowid finds where `since` starts (with a minute of slack for batches committed out of
   * order), and only that tail is counted. issued_at itself has no index.
   */
  async issuedSince(since: Date): Promise<number> {
    return this.read(() => {
      const bounds = this.db.prepare<[], { lo: number | null; hi: number | null }>('SELECT min(id) AS lo, max(id) AS hi FROM issued_certificates').get();
      if (!bounds || bounds.lo === null || bounds.hi === null) return 0;
      const issuedAtOf = this.db.prepare<[number], { id: number; issued_at: number }>('SELECT id, issued_at FROM issued_certificates WHERE id >= ? ORDER BY id LIMIT 1');
      const slack = since.getTime() - 60_000;
      let lo = bounds.lo;
      let hi = bounds.hi + 1;
      while (lo < hi) {
        const mid = Math.floor((lo + hi) / 2);
        const row = issuedAtOf.get(mid);
        if (!row || row.issued_at >= slack) hi = mid;
        else lo = row.id + 1;
      }
      return this.db.prepare<[number, number], { n: number }>('SELECT count(*) AS n FROM issued_certificates WHERE id >= ? AND issued_at >= ?').get(lo, since.getTime())?.n ?? 0;
    });
  }

  async issuanceCounts(now: Date): Promise<IssuanceCounts> {
    return this.read(() => {
      const t = now.getTime();
      const one = (sql: string, ...params: number[]) => this.db.prepare<number[], { n: number }>(sql).get(...params)?.n ?? 0;
      return {
        total: one('SELECT count(*) AS n FROM issued_certificates'),
        unexpired: one('SELECT count(*) AS n FROM issued_certificates WHERE not_after > ?', t),
        revoked: one('SELECT count(*) AS n FROM issued_certificates WHERE revoked_at IS NOT NULL'),
        revokedUnexpired: one('SELECT count(*) AS n FROM issued_certificates WHERE revoked_at IS NOT NULL AND not_after > ?', t),
      };
    });
  }

  async authorityUsage(now: Date): Promise<Map<string, AuthorityUsage>> {
    return this.read(() => {
      const rows = this.db
        .prepare<[number], { authority_id: string; issued: number; unexpired: number }>(
          'SELECT authority_id, count(*) AS issued, sum(not_after > ?) AS unexpired FROM issued_certificates GROUP BY authority_id',
        )
        .all(now.getTime());
      const revoked = new Map(
        this.db
          .prepare<[], { authority_id: string; n: number }>('SELECT authority_id, count(*) AS n FROM issued_certificates WHERE revoked_at IS NOT NULL GROUP BY authority_id')
          .all()
          .map((r) => [r.authority_id, r.n]),
      );
      return new Map(rows.map((r) => [r.authority_id, { issued: r.issued, unexpired: r.unexpired ?? 0, revoked: revoked.get(r.authority_id) ?? 0 }]));
    });
  }

  async revokedAuthorityIds(): Promise<string[]> {
    return this.read(() => {
      const exists = this.db.prepare("SELECT 1 FROM sqlite_master WHERE type = 'table' AND name = 'revoked_authorities'").get();
      if (!exists) return [];
      return this.db.prepare<[], { authority_id: string }>('SELECT authority_id FROM revoked_authorities ORDER BY authority_id').all().map((r) => r.authority_id);
    });
  }

  async deniedIdentities(): Promise<DeniedIdentity[]> {
    return this.read(() =>
      this.db
        .prepare<[], { spiffe_id: string; reason: string; actor: string; at: number }>('SELECT spiffe_id, reason, actor, at FROM denied_identities ORDER BY spiffe_id')
        .all()
        .map((r) => ({ spiffeId: r.spiffe_id, reason: r.reason as RevocationReason, actor: r.actor, at: new Date(r.at) })),
    );
  }

  close(): void {
    if (this.db.open) this.db.close();
  }

  private read<T>(operation: () => T): T {
    try {
      return operation();
    } catch (error) {
      if (error instanceof StoreError) throw error;
      throw new StoreError('ERR_STORE_UNAVAILABLE', `reading the database failed: ${(error as Error).message}`, { cause: error });
    }
  }
}
