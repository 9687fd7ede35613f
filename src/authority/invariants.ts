/**
 * The store invariants a crash must never break (docs/architecture.md, "restart safety"),
 * checked by `meshca verify`, `meshca restore`, the tests and the chaos harness (scripts/chaos.mjs):
 *
 *  - integrity: `PRAGMA integrity_check` is ok and no foreign key points nowhere;
 *  - schema: the database is not newer than this build;
 *  - authority-chain: every authority record holds the certificate its id and fingerprint name,
 *    roots are self-signed, every intermediate verifies against a stored root;
 *  - active-authority: exactly one active intermediate, under a trusted, active root, and no other
 *    active root;
 *  - authority-taint: an authority is tainted exactly when its revocation is recorded (a removed
 *    one keeps its record), so a revocation is never half applied;
 *  - authority-keys (needs the KEK): every sealed key opens with the KEK and matches its certificate;
 *  - jwt-keys: at most one active JWT-SVID signing key (exactly one once any exists); with the KEK,
 *    every published key opens and matches its public JWK;
 *  - bundle-sequence: at least 1 once authorities exist, and never below what was seen before;
 *  - received-certificates (harness): every certificate a client received is stored;
 *  - certificate-authorities: no stored certificate names an unknown authority or a root, and each
 *    one (all, or a random sample) verifies against its authority's certificate and carries the
 *    serial it is stored under.
 */
import { createHash, createPublicKey, X509Certificate } from 'node:crypto';
import { openPrivateKey } from '../pki/keys.js';
import type { StoreInspection } from '../store/inspection.js';
import type { AuthorityRecord } from '../store/types.js';
import { authorityIdFor } from './records.js';
import { unsealAuthorityKey } from './signer.js';
import { TRUSTED_STATES } from './snapshot.js';

export type InvariantName =
  | 'integrity'
  | 'schema'
  | 'authority-chain'
  | 'active-authority'
  | 'authority-taint'
  | 'authority-keys'
  | 'jwt-keys'
  | 'bundle-sequence'
  | 'received-certificates'
  | 'certificate-authorities';

export interface InvariantResult {
  readonly name: InvariantName;
  readonly status: 'ok' | 'failed' | 'skipped';
  readonly detail: string;
}

export interface InvariantReport {
  readonly ok: boolean;
  readonly results: readonly InvariantResult[];
  readonly bundleSequence: number;
  readonly activeIntermediateId: string | null;
  readonly authorities: number;
  readonly certificates: number;
  readonly certificatesVerified: number;
}

export interface InvariantOptions {
  /** Checks every sealed key when given; without it authority-keys is skipped. */
  readonly kek?: Buffer;
  /** The highest bundle sequence observed before (the harness tracks it across restarts). */
  readonly minBundleSequence?: number;
  /** Serials a client received (the harness); each must be stored. */
  readonly receivedSerials?: Iterable<string>;
  /** Verify the signatures of this many random certificates instead of all of them. */
  readonly sample?: number;
  /** Skip `PRAGMA integrity_check` (it reads the whole file: ~9 s at 1M certificates). */
  readonly skipIntegrity?: boolean;
}

const SAMPLE_SHOWN = 5;

export async function checkInvariants(store: StoreInspection, options: InvariantOptions = {}): Promise<InvariantReport> {
  const results: InvariantResult[] = [];
  const add = (name: InvariantName, status: InvariantResult['status'], detail: string) => results.push({ name, status, detail });

  if (options.skipIntegrity) add('integrity', 'skipped', 'not requested');
  else {
    const integrity = await store.integrityCheck();
    const fk = await store.foreignKeyViolations();
    if (integrity !== 'ok')
      add('integrity', 'failed', `PRAGMA integrity_check: ${integrity.split('\n').slice(0, SAMPLE_SHOWN).join('; ')}`);
    else if (fk.length > 0) add('integrity', 'failed', `foreign keys point nowhere: ${fk.slice(0, SAMPLE_SHOWN).join('; ')}`);
    else add('integrity', 'ok', 'PRAGMA integrity_check ok, no dangling foreign keys');
  }

  const schema = await store.schema();
  if (schema.version > schema.latestKnown)
    add('schema', 'failed', `schema version ${schema.version} is newer than this meshca (${schema.latestKnown})`);
  else add('schema', 'ok', `schema version ${schema.version}`);

  const authorities = await store.loadAuthorities();
  const byId = new Map(authorities.map((a) => [a.id, a]));
  const certs = new Map<string, X509Certificate>();
  const chainProblems = checkAuthorityChain(authorities, byId, certs);
  if (authorities.length === 0) add('authority-chain', 'failed', 'the store has no authorities (has "meshca serve" ever started on it?)');
  else if (chainProblems.length > 0) add('authority-chain', 'failed', summarize(chainProblems));
  else
    add(
      'authority-chain',
      'ok',
      `${count(authorities.filter((a) => a.kind === 'root').length, 'root')}, ${count(authorities.filter((a) => a.kind === 'intermediate').length, 'intermediate')}; all chain correctly`,
    );

  const active = checkActive(authorities, byId);
  add('active-authority', active.problem ? 'failed' : 'ok', active.problem ?? `${active.record!.id} under ${active.record!.parentId}`);

  const revoked = new Set(await store.revokedAuthorityIds());
  const taintProblems = [
    ...authorities
      .filter((a) => a.state === 'tainted' && !revoked.has(a.id))
      .map((a) => `${a.id} is tainted but its revocation is not recorded`),
    ...[...revoked]
      .filter((id) => !['tainted', 'removed'].includes(byId.get(id)?.state ?? ''))
      .map((id) => `${id} has a recorded revocation but is ${byId.get(id)?.state ?? 'not stored'}`),
  ];
  add(
    'authority-taint',
    taintProblems.length > 0 ? 'failed' : 'ok',
    taintProblems.length > 0 ? summarize(taintProblems) : `${count(revoked.size, 'revoked authority')}, each tainted or removed`,
  );

  if (!options.kek) add('authority-keys', 'skipped', 'no KEK given (--kek-file or MESHCA_KEK): private keys not checked');
  else {
    const sealed = authorities.filter((a) => a.sealedKey !== null);
    const problems = sealed.flatMap((a) => {
      try {
        unsealAuthorityKey(a, options.kek!);
        return [];
      } catch (error) {
        return [(error as Error).message];
      }
    });
    if (active.record && !active.record.sealedKey) problems.unshift(`the active intermediate ${active.record.id} has no private key`);
    add(
      'authority-keys',
      problems.length > 0 ? 'failed' : 'ok',
      problems.length > 0 ? summarize(problems) : `${count(sealed.length, 'sealed key')} open with this KEK and match their certificates`,
    );
  }

  const jwtProblems = await checkJwtKeys(store, options.kek);
  if (jwtProblems === undefined) add('jwt-keys', 'skipped', 'no JWT-SVID signing key yet');
  else
    add(
      'jwt-keys',
      jwtProblems.length > 0 ? 'failed' : 'ok',
      jwtProblems.length > 0
        ? summarize(jwtProblems)
        : options.kek
          ? 'one active key; every published key opens with this KEK'
          : 'one active key (keys not opened: no KEK given)',
    );

  const sequence = await store.bundleSequence();
  if (authorities.length > 0 && sequence < 1) add('bundle-sequence', 'failed', `bundle sequence is ${sequence} although authorities exist`);
  else if (options.minBundleSequence !== undefined && sequence < options.minBundleSequence) {
    add('bundle-sequence', 'failed', `bundle sequence went backwards: ${sequence} < ${options.minBundleSequence} seen before`);
  } else
    add(
      'bundle-sequence',
      'ok',
      `${sequence}${options.minBundleSequence !== undefined ? ` (≥ ${options.minBundleSequence} seen before)` : ''}`,
    );

  if (!options.receivedSerials) add('received-certificates', 'skipped', 'no list of received certificates');
  else {
    const received = [...options.receivedSerials];
    const missing = await store.missingSerials(received);
    if (missing.length > 0)
      add(
        'received-certificates',
        'failed',
        `${missing.length} of ${received.length} certificates clients received are not stored, e.g. ${missing.slice(0, SAMPLE_SHOWN).join(', ')}`,
      );
    else add('received-certificates', 'ok', `all ${received.length} stored`);
  }

  const issued = await checkIssued(store, byId, certs, options.sample);
  const total = await store.certificateCount();
  const scope =
    options.sample === undefined
      ? 'every stored certificate'
      : `a random sample of ${Math.min(options.sample, total)} of ${total} stored certificates`;
  if (issued.problems.length > 0) add('certificate-authorities', 'failed', summarize(issued.problems));
  else add('certificate-authorities', 'ok', `${scope} verifies against its stored authority (${issued.verified} checked)`);

  return {
    ok: results.every((r) => r.status !== 'failed'),
    results,
    bundleSequence: sequence,
    activeIntermediateId: active.record?.id ?? null,
    authorities: authorities.length,
    certificates: total,
    certificatesVerified: issued.verified,
  };
}

function checkAuthorityChain(
  authorities: readonly AuthorityRecord[],
  byId: ReadonlyMap<string, AuthorityRecord>,
  certs: Map<string, X509Certificate>,
): string[] {
  const problems: string[] = [];
  for (const a of authorities) {
    try {
      certs.set(a.id, new X509Certificate(a.certificateDer));
    } catch {
      problems.push(`authority ${a.id}: the certificate is not valid DER`);
    }
  }
  for (const a of authorities) {
    const cert = certs.get(a.id);
    if (!cert) continue;
    const fingerprint = createHash('sha256').update(a.certificateDer).digest('hex');
    if (fingerprint !== a.sha256Fingerprint.toLowerCase() || authorityIdFor(a.kind, fingerprint) !== a.id) {
      problems.push(`authority ${a.id}: the stored certificate is not the one its id names (fingerprint ${fingerprint.slice(0, 16)}…)`);
    }
    if (a.kind === 'root') {
      if (a.parentId !== null) problems.push(`root ${a.id} has a parent (${a.parentId})`);
      if (!cert.checkIssued(cert) || !cert.verify(cert.publicKey)) problems.push(`root ${a.id} is not self-signed`);
      continue;
    }
    const parent = a.parentId === null ? undefined : byId.get(a.parentId);
    const parentCert = parent && certs.get(parent.id);
    if (!parent) problems.push(`intermediate ${a.id}: its root ${a.parentId ?? '(none)'} is not stored`);
    else if (parent.kind !== 'root') problems.push(`intermediate ${a.id}: its parent ${parent.id} is not a root`);
    else if (parentCert && !chainsTo(cert, a.upstreamChainDers, parentCert)) {
      problems.push(
        `intermediate ${a.id} does not verify against its root ${parent.id}${a.upstreamChainDers.length > 0 ? ` through its ${a.upstreamChainDers.length} upstream intermediate(s)` : ''}`,
      );
    }
  }
  return problems;
}

/** cert → upstream intermediates (nearest first) → root, each link checked for issuer name and signature. */
function chainsTo(cert: X509Certificate, upstreamDers: readonly Buffer[], root: X509Certificate): boolean {
  try {
    const path = [cert, ...upstreamDers.map((der) => new X509Certificate(der)), root];
    return path.slice(0, -1).every((child, i) => child.checkIssued(path[i + 1]!) && child.verify(path[i + 1]!.publicKey));
  } catch {
    return false;
  }
}

function checkActive(
  authorities: readonly AuthorityRecord[],
  byId: ReadonlyMap<string, AuthorityRecord>,
): { record?: AuthorityRecord; problem?: string } {
  const active = authorities.filter((a) => a.kind === 'intermediate' && a.state === 'active');
  const [record] = active;
  if (record === undefined || active.length !== 1) {
    return {
      problem: `${active.length} active intermediates${active.length > 0 ? ` (${active.map((a) => a.id).join(', ')})` : ''}; exactly one is required`,
    };
  }
  const root = record.parentId === null ? undefined : byId.get(record.parentId);
  if (!root || !TRUSTED_STATES.has(root.state))
    return {
      record,
      problem: `the active intermediate ${record.id} is not under a trusted root (${root ? `${root.id} is ${root.state}` : 'root missing'})`,
    };
  if (root.state !== 'active') return { record, problem: `the root ${root.id} of the active intermediate is ${root.state}, not active` };
  const otherRoots = authorities.filter((a) => a.kind === 'root' && a.state === 'active' && a.id !== root.id);
  if (otherRoots.length > 0) return { record, problem: `other roots are active too: ${otherRoots.map((a) => a.id).join(', ')}` };
  if (record.notAfter.getTime() <= Date.now())
    return { record, problem: `the active intermediate ${record.id} expired at ${record.notAfter.toISOString()}` };
  return { record };
}

async function checkIssued(
  store: StoreInspection,
  byId: ReadonlyMap<string, AuthorityRecord>,
  certs: ReadonlyMap<string, X509Certificate>,
  sample: number | undefined,
): Promise<{ problems: string[]; verified: number }> {
  const problems: string[] = [];
  const unknown = await store.certificatesWithUnknownAuthority(SAMPLE_SHOWN);
  if (unknown.count > 0)
    problems.push(`${unknown.count} certificates name an authority the store does not know, e.g. ${unknown.sample.join(', ')}`);
  let verified = 0;
  let bad = 0;
  for await (const batch of store.certificateBatches(sample === undefined ? {} : { sample })) {
    for (const row of batch) {
      const problem = issuedProblem(row.serialHex, row.authorityId, row.der, byId, certs);
      if (problem === undefined) verified++;
      else if (problem !== 'unknown-authority' && ++bad <= SAMPLE_SHOWN) problems.push(problem);
    }
    // Keep the event loop responsive (the harness runs this next to a live client).
    await new Promise((resolve) => setImmediate(resolve));
  }
  if (bad > SAMPLE_SHOWN) problems.push(`… ${bad - SAMPLE_SHOWN} more certificates with problems`);
  return { problems, verified };
}

function issuedProblem(
  serialHex: string,
  authorityId: string,
  der: Buffer,
  byId: ReadonlyMap<string, AuthorityRecord>,
  certs: ReadonlyMap<string, X509Certificate>,
): string | undefined {
  const authority = byId.get(authorityId);
  if (!authority) return 'unknown-authority';
  if (authority.kind !== 'intermediate')
    return `certificate ${serialHex} names the root ${authorityId} as its issuer; leaves are signed by intermediates`;
  const issuer = certs.get(authorityId);
  if (!issuer) return `certificate ${serialHex}: its authority ${authorityId} has an unreadable certificate`;
  let leaf: X509Certificate;
  try {
    leaf = new X509Certificate(der);
  } catch {
    return `certificate ${serialHex}: the stored DER is not a certificate`;
  }
  if (leaf.serialNumber.toLowerCase().replace(/^0+(?=.)/, '') !== serialHex)
    return `certificate ${serialHex}: the stored DER has serial ${leaf.serialNumber.toLowerCase()}`;
  if (!leaf.checkIssued(issuer) || !leaf.verify(issuer.publicKey))
    return `certificate ${serialHex} does not verify against its authority ${authorityId}`;
  return undefined;
}

function summarize(problems: readonly string[]): string {
  const shown = problems.slice(0, SAMPLE_SHOWN).join('; ');
  return problems.length > SAMPLE_SHOWN ? `${shown}; and ${problems.length - SAMPLE_SHOWN} more` : shown;
}

function count(n: number, what: string): string {
  return `${n} ${what}${n === 1 ? '' : 's'}`;
}

/** The report as the table `meshca verify` prints. */
export function formatInvariantReport(report: InvariantReport): string {
  type Row = readonly [name: string, result: string, detail: string];
  const rows = report.results.map((r): Row => [r.name, r.status === 'failed' ? 'FAILED' : r.status, r.detail]);
  const nameWidth = Math.max('INVARIANT'.length, ...rows.map(([name]) => name.length));
  const resultWidth = Math.max('RESULT'.length, ...rows.map(([, result]) => result.length));
  const line = ([name, result, detail]: Row) => `${name.padEnd(nameWidth)}  ${result.padEnd(resultWidth)}  ${detail}`.trimEnd();
  const failed = report.results.filter((r) => r.status === 'failed').length;
  return (
    [
      line(['INVARIANT', 'RESULT', 'DETAIL']),
      ...rows.map(line),
      '',
      failed === 0 ? 'all invariants hold' : `${failed} invariant${failed === 1 ? '' : 's'} violated`,
    ].join('\n') + '\n'
  );
}

/** Undefined when there are no JWT keys (a store from before JWT-SVIDs); else the problems found. */
async function checkJwtKeys(store: StoreInspection, kek: Buffer | undefined): Promise<string[] | undefined> {
  const keys = await store.loadJwtAuthorities();
  if (keys.length === 0) return undefined;
  const problems: string[] = [];
  const active = keys.filter((k) => k.state === 'active').length;
  if (active !== 1) problems.push(`${active} active JWT-SVID signing keys; exactly one is required`);
  if (!kek) return problems;
  for (const key of keys.filter((k) => k.state !== 'removed')) {
    try {
      const publicJwk = createPublicKey(openPrivateKey(key.sealedKey, kek, key.kid)).export({ format: 'jwk' }) as Record<string, string>;
      if (publicJwk.x !== key.publicJwk.x || publicJwk.n !== key.publicJwk.n)
        problems.push(`JWT key ${key.kid} does not match its published JWK`);
    } catch {
      problems.push(`cannot decrypt JWT key ${key.kid} with this KEK`);
    }
  }
  return problems;
}
