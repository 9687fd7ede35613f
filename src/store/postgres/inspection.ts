import pg from 'pg';
import type { Pool } from 'pg';
import { readMigrations } from '../migrations.js';
import { authorityFromRow, jwtAuthorityFromRow, normalizeSerial, type AuthorityRow, type JwtAuthorityRow } from '../rows.js';
import type { IssuanceCounts, IssuedDer, SchemaInfo, StoreInspection } from '../inspection.js';
import type { AuthorityRecord, AuthorityUsage, JwtAuthorityRecord, DeniedIdentity, RevocationReason } from '../types.js';
import { poolConfig, type PostgresConnectionOptions } from './connection.js';
import { toStoreError } from './errors.js';
import { POSTGRES_MIGRATIONS_DIR } from './migrations.js';

/**
 * Read-only inspection of a PostgreSQL store for `meshca verify` and the invariant checker, while
 * replicas keep serving: every read runs in its own READ ONLY transaction.
 */
export function inspectPostgresStore(options: PostgresConnectionOptions): StoreInspection {
  return new PostgresInspection(
    new pg.Pool({ ...poolConfig({ ...options, poolSize: 2 }), options: '-c default_transaction_read_only=on' }),
  );
}

class PostgresInspection implements StoreInspection {
  constructor(private readonly pool: Pool) {}

  /**
   * PostgreSQL checks its own pages (checksums; pg_amcheck for indexes); this reports what the
   * schema's constraints cannot: more than one signer, or a CHECK left unvalidated.
   */
  async integrityCheck(): Promise<string> {
    const problems: string[] = [];
    const active = await this.count("SELECT count(*) AS n FROM authorities WHERE kind = 'intermediate' AND state = 'active'");
    if (active > 1) problems.push(`${active} active intermediates`);
    const unvalidated = await this.rows<{ conname: string }>(
      "SELECT conname FROM pg_constraint WHERE NOT convalidated AND connamespace = 'public'::regnamespace",
    );
    problems.push(...unvalidated.map((r) => `constraint ${r.conname} is not validated`));
    return problems.length === 0 ? 'ok' : problems.join('\n');
  }

  async foreignKeyViolations(limit = 20): Promise<string[]> {
    const rows = await this.rows<{ what: string }>(
      `SELECT 'authorities ' || c.id || ' → ' || c.parent_id AS what FROM authorities c
         WHERE c.parent_id IS NOT NULL AND NOT EXISTS (SELECT 1 FROM authorities p WHERE p.id = c.parent_id)
       UNION ALL
       SELECT 'issued_certificates ' || i.serial_hex || ' → ' || i.authority_id FROM issued_certificates i
         WHERE NOT EXISTS (SELECT 1 FROM authorities a WHERE a.id = i.authority_id)
       LIMIT $1`,
      [limit],
    );
    return rows.map((r) => r.what);
  }

  async schema(): Promise<SchemaInfo> {
    const version = await this.count('SELECT coalesce(max(version), 0) AS n FROM schema_migrations');
    return { version, latestKnown: readMigrations(POSTGRES_MIGRATIONS_DIR).at(-1)?.version ?? 0 };
  }

  async loadAuthorities(): Promise<AuthorityRecord[]> {
    return (await this.rows<AuthorityRow>('SELECT * FROM authorities ORDER BY created_at, id')).map(authorityFromRow);
  }

  async loadJwtAuthorities(): Promise<JwtAuthorityRecord[]> {
    const present = await this.count("SELECT count(*) AS n FROM pg_tables WHERE schemaname = 'public' AND tablename = 'jwt_authorities'");
    if (present === 0) return [];
    return (await this.rows<JwtAuthorityRow>('SELECT * FROM jwt_authorities ORDER BY created_at, kid')).map(jwtAuthorityFromRow);
  }

  async bundleSequence(): Promise<number> {
    return this.count("SELECT value AS n FROM meta WHERE key = 'bundle_sequence'");
  }

  async missingSerials(serials: Iterable<string>): Promise<string[]> {
    const wanted = [...serials];
    const found = new Set(
      (
        await this.rows<{ serial_hex: string }>('SELECT serial_hex FROM issued_certificates WHERE serial_hex = ANY($1::text[])', [
          wanted.map(normalizeSerial),
        ])
      ).map((r) => r.serial_hex),
    );
    return wanted.filter((s) => !found.has(normalizeSerial(s)));
  }

  async certificatesWithUnknownAuthority(sampleSize = 10): Promise<{ count: number; sample: string[] }> {
    const from = 'FROM issued_certificates c WHERE NOT EXISTS (SELECT 1 FROM authorities a WHERE a.id = c.authority_id)';
    const count = await this.count(`SELECT count(*) AS n ${from}`);
    const sample =
      count === 0 ? [] : (await this.rows<{ s: string }>(`SELECT c.serial_hex AS s ${from} LIMIT $1`, [sampleSize])).map((r) => r.s);
    return { count, sample };
  }

  async certificateCount(): Promise<number> {
    return this.count('SELECT count(*) AS n FROM issued_certificates');
  }

  async *certificateBatches(options: { readonly sample?: number; readonly batchSize?: number } = {}): AsyncIterable<IssuedDer[]> {
    const batchSize = Math.max(1, options.batchSize ?? 500);
    type Row = { id: number; serial_hex: string; authority_id: string; der: Buffer };
    const toDer = (r: Row): IssuedDer => ({ serialHex: r.serial_hex, authorityId: r.authority_id, der: r.der });
    if (options.sample !== undefined) {
      yield (
        await this.rows<Row>('SELECT id, serial_hex, authority_id, der FROM issued_certificates ORDER BY random() LIMIT $1', [
          Math.max(0, options.sample),
        ])
      ).map(toDer);
      return;
    }
    let after = -1;
    for (;;) {
      const rows = await this.rows<Row>(
        'SELECT id, serial_hex, authority_id, der FROM issued_certificates WHERE id > $1 ORDER BY id LIMIT $2',
        [after, batchSize],
      );
      if (rows.length === 0) return;
      after = rows[rows.length - 1]!.id;
      yield rows.map(toDer);
    }
  }

  async issuedSince(since: Date): Promise<number> {
    return this.count('SELECT count(*) AS n FROM issued_certificates WHERE issued_at >= $1', [since.getTime()]);
  }

  async issuanceCounts(now: Date): Promise<IssuanceCounts> {
    const [row] = await this.rows<IssuanceCounts>(
      `SELECT count(*) AS total, count(*) FILTER (WHERE not_after > $1) AS unexpired,
         count(*) FILTER (WHERE revoked_at IS NOT NULL) AS revoked,
         count(*) FILTER (WHERE revoked_at IS NOT NULL AND not_after > $1) AS "revokedUnexpired"
       FROM issued_certificates`,
      [now.getTime()],
    );
    return row!;
  }

  async authorityUsage(now: Date): Promise<Map<string, AuthorityUsage>> {
    const rows = await this.rows<{ authority_id: string } & AuthorityUsage>(
      `SELECT authority_id, count(*) AS issued, count(*) FILTER (WHERE not_after > $1) AS unexpired,
         count(*) FILTER (WHERE revoked_at IS NOT NULL) AS revoked
       FROM issued_certificates GROUP BY authority_id`,
      [now.getTime()],
    );
    return new Map(rows.map((r) => [r.authority_id, { issued: r.issued, unexpired: r.unexpired, revoked: r.revoked }]));
  }

  async revokedAuthorityIds(): Promise<string[]> {
    return (await this.rows<{ authority_id: string }>('SELECT authority_id FROM revoked_authorities ORDER BY authority_id')).map(
      (r) => r.authority_id,
    );
  }

  async listDenied(): Promise<DeniedIdentity[]> {
    const rows = await this.rows<{ spiffe_id: string; reason: string; actor: string; at: number }>(
      'SELECT spiffe_id, reason, actor, at FROM denied_identities ORDER BY spiffe_id',
    );
    return rows.map((r) => ({ spiffeId: r.spiffe_id, reason: r.reason as RevocationReason, actor: r.actor, at: new Date(r.at) }));
  }

  async close(): Promise<void> {
    await this.pool.end().catch(() => undefined);
  }

  private async rows<R extends pg.QueryResultRow>(text: string, values?: unknown[]): Promise<R[]> {
    try {
      return (await this.pool.query<R>(text, values)).rows;
    } catch (error) {
      throw toStoreError(error);
    }
  }

  private async count(text: string, values?: unknown[]): Promise<number> {
    return (await this.rows<{ n: number }>(text, values))[0]?.n ?? 0;
  }
}
