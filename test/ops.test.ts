import { randomBytes, X509Certificate } from 'node:crypto';
import { chmodSync, copyFileSync, existsSync, mkdirSync, readdirSync, readFileSync, statSync, writeFileSync } from 'node:fs';
import { get } from 'node:http';
import { join } from 'node:path';
import Database from 'better-sqlite3';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { openDevTokenIssuer, type DevTokenIssuer } from '../src/authn/index.js';
import { checkInvariants } from '../src/authority/invariants.js';
import { databasePath } from '../src/app/data-dir.js';
import { openSqliteStore } from '../src/store/sqlite.js';
import { inspectSqliteStore } from '../src/store/sqlite.js';
import { adminCall } from './support/admin.js';
import { openssl, writeChain } from './support/openssl.js';
import { runMeshca } from './support/process.js';
import { csrFor, removeDir, startTestServer, tempDir, type TestServer } from './support/server.js';

/** Runs the built CLI; MESHCA_KEK is never inherited from the test environment. */
const meshca = runMeshca;

const newKek = () => randomBytes(32).toString('base64');
const serialOf = (pem: string) => new X509Certificate(pem).serialNumber.toLowerCase().replace(/^0+(?=.)/, '');
const LISTEN = ['--grpc-listen', '127.0.0.1:0', '--monitoring-listen', '127.0.0.1:0', '--admin-listen', '127.0.0.1:0'];

const dirs: string[] = [];
const servers: TestServer[] = [];
function newDir(): string {
  const d = tempDir('meshca-ops-');
  dirs.push(d);
  return d;
}

async function serve(dataDir: string, env: Record<string, string>, extra: readonly string[] = ['--dev']): Promise<TestServer> {
  const t = await startTestServer(dataDir, extra, env);
  servers.push(t);
  return t;
}

async function stopServer(t: TestServer): Promise<void> {
  servers.splice(servers.indexOf(t), 1);
  await t.close();
}

function writeKekFile(path: string, kek: string, mode = 0o600): string {
  writeFileSync(path, kek + '\n', { mode });
  chmodSync(path, mode);
  return path;
}

/** Issues certificates from `workers` concurrent callers until stop() is true, appending the serials received. */
async function load(t: TestServer, issuer: DevTokenIssuer, stop: () => boolean, received: string[], workers = 6): Promise<void> {
  const client = t.client();
  const identities = await Promise.all(
    Array.from({ length: 4 }, async (_, i) => ({
      csrPem: await csrFor(`spiffe://cluster.local/ns/ops/sa/load-${i}`),
      token: await issuer.sign({ namespace: 'ops', serviceAccount: `load-${i}`, ttlSeconds: 3600 }),
    })),
  );
  await Promise.all(
    Array.from({ length: workers }, async (_, w) => {
      for (let i = w; !stop(); i++) {
        const id = identities[i % identities.length]!;
        const chain = await client.createCertificate(id).catch(() => undefined);
        if (chain) received.push(serialOf(chain[0]!));
      }
    }),
  );
}

afterAll(async () => {
  await Promise.all(servers.map((t) => t.close().catch(() => undefined)));
  dirs.forEach(removeDir);
});

// ---------------------------------------------------------------------------------------------

describe.concurrent('operator commands', () => {
  it.each([
    ['status', '--warn-days'],
    ['verify', '--sample'],
    ['backup', '--out'],
    ['restore', '--from'],
    ['kek', '--new-kek-file'],
  ])('"meshca %s --help" documents its flags and env vars', async (command, flag) => {
    const r = await meshca([command, '--help']);
    expect(r.code).toBe(0);
    expect(r.stdout).toContain(`Usage: meshca ${command}`);
    expect(r.stdout).toContain(flag);
    expect(r.stdout).toContain('MESHCA_DATA_DIR');
  });

  it('"meshca kek" without "rotate" is a usage error', async () => {
    const r = await meshca(['kek', '--data-dir', '/nonexistent']);
    expect(r.code).toBe(2);
    expect(r.stderr).toContain('usage: meshca kek rotate');
  });
});

// Independent CLI processes: run them side by side.
describe.concurrent('key protection: refusal rules', () => {
  it('refuses to start without a KEK outside --dev, and writes nothing', async () => {
    const d = newDir();
    writeFileSync(join(d, 'jwks.json'), JSON.stringify({ keys: [] }));
    const r = await meshca([
      'serve',
      '--data-dir',
      join(d, 'data'),
      '--jwks-file',
      join(d, 'jwks.json'),
      '--jwt-issuer',
      'https://issuer',
      ...LISTEN,
    ]);
    expect(r.code).toBe(1);
    expect(r.output).toContain('no key-encryption key');
    expect(r.output).toContain('openssl rand -base64 32');
    expect(existsSync(join(d, 'data', 'meshca.db'))).toBe(false);
  });

  it('refuses a KEK file readable by group/others (0644)', async () => {
    const d = newDir();
    const kekFile = writeKekFile(join(d, 'kek'), newKek(), 0o644);
    const r = await meshca(['serve', '--dev', '--data-dir', join(d, 'data'), '--kek-file', kekFile, ...LISTEN]);
    expect(r.code).toBe(1);
    expect(r.output).toContain('readable by group/others');
    expect(r.output).toContain(`chmod 600 ${kekFile}`);
    expect(existsSync(join(d, 'data', 'meshca.db'))).toBe(false);
  });

  it('refuses a data dir readable by group/others (0755) outside --dev', async () => {
    const d = newDir();
    const data = join(d, 'data');
    mkdirSync(data);
    chmodSync(data, 0o755);
    writeFileSync(join(d, 'jwks.json'), JSON.stringify({ keys: [] }));
    const r = await meshca(
      ['serve', '--data-dir', data, '--jwks-file', join(d, 'jwks.json'), '--jwt-issuer', 'https://issuer', ...LISTEN],
      { MESHCA_KEK: newKek() },
    );
    expect(r.code).toBe(1);
    expect(r.output).toContain('accessible by group/others');
    expect(r.output).toContain(`chmod 700 ${data}`);
    expect(readdirSync(data)).toEqual([]);
  });

  it('refuses a malformed KEK without echoing it', async () => {
    const d = newDir();
    const r = await meshca(['serve', '--dev', '--data-dir', join(d, 'data'), ...LISTEN], { MESHCA_KEK: 'c2hvcnQ=' });
    expect(r.code).toBe(1);
    expect(r.output).toContain('must be 32 bytes');
    expect(r.output).not.toContain('c2hvcnQ=');
  });

  it('refuses the wrong KEK with a clear error (serve and verify exit non-zero)', async () => {
    const d = newDir();
    const data = join(d, 'data');
    await stopServer(await serve(data, { MESHCA_KEK: newKek() }));
    const r = await meshca(['serve', '--dev', '--data-dir', data, ...LISTEN], { MESHCA_KEK: newKek() });
    expect(r.code).toBe(1);
    expect(r.output).toMatch(/cannot decrypt the key of authority int-[0-9a-f]{16}: is this the KEK the data dir was created with/);
    const v = await meshca(['verify', '--data-dir', data], { MESHCA_KEK: newKek() });
    expect(v.code).toBe(1);
    expect(v.stdout).toMatch(/authority-keys\s+FAILED\s+cannot decrypt/);
    expect(v.stderr).toContain('invariants violated: authority-keys');
  });
});

// ---------------------------------------------------------------------------------------------

describe('meshca kek rotate', () => {
  const oldKek = newKek();
  let d: string;
  let data: string;
  let t: TestServer;
  let bundleBefore: string;
  let sequenceBefore: number;
  let newKekFile: string;

  beforeAll(async () => {
    d = newDir();
    data = join(d, 'data');
    t = await serve(data, { MESHCA_KEK: oldKek });
    await adminCall(
      {
        port: t.server.adminAddress.port,
        roots: t.server.ca.current().rootsPem,
        token: readFileSync(join(data, 'admin-token'), 'utf8').trim(),
      },
      'POST',
      '/v1/authorities/prepare',
      { body: {} },
    );
    bundleBefore = (await meshca(['bundle', '--data-dir', data])).stdout;
    sequenceBefore = t.server.ca.current().bundleSequence;
    newKekFile = writeKekFile(join(d, 'new.kek'), newKek());
  });

  it('refuses a new KEK file readable by group/others', async () => {
    const loose = writeKekFile(join(d, 'loose.kek'), newKek(), 0o640);
    const r = await meshca(['kek', 'rotate', '--data-dir', data, '--new-kek-file', loose], { MESHCA_KEK: oldKek });
    expect(r.code).toBe(1);
    expect(r.stderr).toContain(`chmod 600 ${loose}`);
  });

  it('refuses while a server has the database open', async () => {
    const r = await meshca(['kek', 'rotate', '--data-dir', data, '--new-kek-file', newKekFile], { MESHCA_KEK: oldKek });
    expect(r.code).toBe(1);
    expect(r.stderr).toContain('is in use (is "meshca serve" running on this data dir?)');
  });

  it('refuses a wrong current KEK and changes nothing', async () => {
    await stopServer(t);
    const r = await meshca(['kek', 'rotate', '--data-dir', data, '--new-kek-file', newKekFile], { MESHCA_KEK: newKek() });
    expect(r.code).toBe(1);
    expect(r.stderr).toContain('nothing was changed');
    expect((await meshca(['verify', '--data-dir', data, '--skip-integrity'], { MESHCA_KEK: oldKek })).code).toBe(0);
  });

  it('re-encrypts every key in one audited transaction; the old KEK stops working, the new one serves the same roots', async () => {
    const r = await meshca(['kek', 'rotate', '--data-dir', data, '--new-kek-file', newKekFile, '--json'], { MESHCA_KEK: oldKek });
    expect(r.stderr).toBe('');
    expect(r.code).toBe(0);
    expect(JSON.parse(r.stdout).reencrypted).toHaveLength(4); // two roots, two intermediates (one prepared)

    const store = openSqliteStore({ path: databasePath(data) });
    const audit = (await store.listAudit({ limit: 1 })).items[0]!;
    expect(audit).toMatchObject({ action: 'kek.rotate', result: 'ok' });
    expect(await store.bundleSequence()).toBe(sequenceBefore);
    await store.close();

    const [withOld, serveOld, withNew] = await Promise.all([
      meshca(['verify', '--data-dir', data], { MESHCA_KEK: oldKek }),
      meshca(['serve', '--dev', '--data-dir', data, ...LISTEN], { MESHCA_KEK: oldKek }),
      meshca(['verify', '--data-dir', data, '--kek-file', newKekFile]),
    ]);
    expect(withOld.code).toBe(1);
    expect(withOld.stdout).toMatch(/authority-keys\s+FAILED/);
    expect(serveOld.code).toBe(1);
    expect(serveOld.output).toContain('cannot decrypt the key of authority');
    expect(withNew.code).toBe(0);

    const again = await serve(data, {}, ['--dev', '--kek-file', newKekFile]);
    expect((await meshca(['bundle', '--data-dir', data])).stdout).toBe(bundleBefore);
    expect(again.server.ca.current().rootsPem).toBe(bundleBefore);
    const issuer = await openDevTokenIssuer(data);
    const chain = await again.client().createCertificate({
      csrPem: await csrFor('spiffe://cluster.local/ns/ops/sa/after-rotation'),
      token: await issuer.sign({ namespace: 'ops', serviceAccount: 'after-rotation', ttlSeconds: 600 }),
    });
    expect(chain[chain.length - 1]).toBe(bundleBefore);
    await stopServer(again);
  });
});

// ---------------------------------------------------------------------------------------------

describe('backup, restore and verify', () => {
  const kek = newKek();
  let d: string;
  let data: string;
  let backupFile: string;
  let beforeBackup: string[];
  let bundle: string;

  it('takes a consistent backup while the server is under load', async () => {
    d = newDir();
    data = join(d, 'data');
    backupFile = join(d, 'meshca-backup.db');
    const t = await serve(data, { MESHCA_KEK: kek });
    const issuer = await openDevTokenIssuer(data);
    let stop = false;
    const received: string[] = [];
    const loading = load(t, issuer, () => stop, received);
    // Let some certificates through first: every one received before the backup starts must be in it.
    while (received.length < 60) await new Promise((resolve) => setTimeout(resolve, 20));
    beforeBackup = [...received];
    const backup = await meshca(['backup', '--data-dir', data, '--out', backupFile]);
    const duringBackup = received.length - beforeBackup.length;
    stop = true;
    await loading;
    expect(backup.stderr).toBe('');
    expect(backup.code).toBe(0);
    expect(backup.stdout).toContain('The KEK is not in the backup');
    expect(duringBackup).toBeGreaterThan(0); // the server kept issuing while the backup ran
    expect(statSync(backupFile).mode & 0o777).toBe(0o600);
    bundle = (await meshca(['bundle', '--data-dir', data])).stdout;
    await stopServer(t);

    const again = await meshca(['backup', '--data-dir', data, '--out', backupFile]);
    expect(again.code).toBe(2);
    expect(again.stderr).toContain('--force');
  });

  it('verifies the backup file itself', async () => {
    const r = await meshca(['verify', '--file', backupFile, '--json'], { MESHCA_KEK: kek });
    expect(r.code).toBe(0);
    const report = JSON.parse(r.stdout) as { ok: boolean; certificates: number; results: { name: string; status: string }[] };
    expect(report.ok).toBe(true);
    expect(report.results.find((x) => x.name === 'authority-keys')?.status).toBe('ok');
    expect(report.certificates).toBeGreaterThanOrEqual(beforeBackup.length);
  });

  it('restores into a fresh data dir (0700, database 0600) that serves the same roots', async () => {
    const restored = join(d, 'restored', 'data');
    const r = await meshca(['restore', '--from', backupFile, '--data-dir', restored], { MESHCA_KEK: kek });
    expect(r.stderr).toBe('');
    expect(r.code).toBe(0);
    expect(statSync(restored).mode & 0o777).toBe(0o700);
    expect(statSync(databasePath(restored)).mode & 0o777).toBe(0o600);
    expect((await meshca(['bundle', '--data-dir', restored])).stdout).toBe(bundle);
    const inspection = inspectSqliteStore(databasePath(restored));
    expect(await inspection.missingSerials(beforeBackup)).toEqual([]);
    inspection.close();
    expect((await meshca(['verify', '--data-dir', restored], { MESHCA_KEK: kek })).code).toBe(0);

    const t = await serve(restored, { MESHCA_KEK: kek });
    expect(t.server.ca.current().rootsPem).toBe(bundle);
    const issuer = await openDevTokenIssuer(restored);
    const chain = await t.client().createCertificate({
      csrPem: await csrFor('spiffe://cluster.local/ns/ops/sa/restored'),
      token: await issuer.sign({ namespace: 'ops', serviceAccount: 'restored', ttlSeconds: 600 }),
    });
    expect(chain[chain.length - 1]).toBe(bundle);
    const paths = writeChain(newDir(), chain);
    expect(openssl(['verify', '-CAfile', paths.roots, '-untrusted', paths.untrusted, paths.leaf])).toContain('OK');

    const busy = await meshca(['restore', '--from', backupFile, '--data-dir', restored, '--force']);
    expect(busy.code).toBe(1);
    expect(busy.stderr).toContain('is in use');
    await stopServer(t);
  });

  it('refuses a non-empty data dir without --force; --force moves the old database aside', async () => {
    const target = join(d, 'target');
    mkdirSync(target, { mode: 0o700 });
    writeFileSync(join(target, 'admin-token'), 'keep-me\n', { mode: 0o600 });
    const refused = await meshca(['restore', '--from', backupFile, '--data-dir', target]);
    expect(refused.code).toBe(2);
    expect(refused.stderr).toContain('is not empty');
    expect(refused.stderr).toContain('--force');

    expect((await meshca(['restore', '--from', backupFile, '--data-dir', target, '--force'])).code).toBe(0);
    const second = await meshca(['restore', '--from', backupFile, '--data-dir', target, '--force', '--json']);
    expect(second.code).toBe(0);
    expect(JSON.parse(second.stdout).previousDatabase).toMatch(/meshca\.db\.before-restore-/);
    expect(readFileSync(join(target, 'admin-token'), 'utf8')).toBe('keep-me\n');
    expect((await meshca(['bundle', '--data-dir', target])).stdout).toBe(bundle);
  });

  it('refuses a damaged backup, and one that needs another KEK', async () => {
    const garbage = join(d, 'garbage.db');
    writeFileSync(garbage, randomBytes(8192));
    const truncated = join(d, 'truncated.db');
    writeFileSync(truncated, readFileSync(backupFile).subarray(0, Math.floor(statSync(backupFile).size / 2)));
    const [r1, r2, r3] = await Promise.all([
      meshca(['restore', '--from', garbage, '--data-dir', join(d, 'never-1')]),
      meshca(['restore', '--from', truncated, '--data-dir', join(d, 'never-2')]),
      meshca(['restore', '--from', backupFile, '--data-dir', join(d, 'never-3')], { MESHCA_KEK: newKek() }),
    ]);
    expect(r1.code).toBe(1);
    expect(r1.stderr).toMatch(/not a readable SQLite database|not a meshca database/);
    expect(r2.code).toBe(1);
    expect(r3.code).toBe(1);
    expect(r3.stderr).toContain('violates the store invariants');
    for (const n of ['never-1', 'never-2', 'never-3']) expect(existsSync(join(d, n, 'meshca.db'))).toBe(false);
  });

  it('detects each violated invariant (doctored copies of the store)', async () => {
    const kekBytes = Buffer.from(kek, 'base64');
    const doctored = (name: string, sql: string): string => {
      const path = join(d, `${name}.db`);
      copyFileSync(backupFile, path);
      const db = new Database(path);
      db.pragma('foreign_keys = OFF');
      db.exec(sql);
      db.close();
      return path;
    };
    const failures = async (path: string, options: Parameters<typeof checkInvariants>[1] = {}) => {
      const inspection = inspectSqliteStore(path);
      try {
        const report = await checkInvariants(inspection, { kek: kekBytes, ...options });
        return Object.fromEntries(report.results.filter((r) => r.status === 'failed').map((r) => [r.name, r.detail]));
      } finally {
        inspection.close();
      }
    };
    expect(await failures(doctored('clean', 'SELECT 1'))).toEqual({});

    const unknown = await failures(
      doctored(
        'unknown-authority',
        "UPDATE issued_certificates SET authority_id = 'int-0000000000000000' WHERE id = (SELECT min(id) FROM issued_certificates)",
      ),
    );
    expect(unknown['certificate-authorities']).toContain('1 certificates name an authority the store does not know');
    expect(unknown.integrity).toContain('foreign keys point nowhere');

    const swapped = await failures(
      doctored(
        'swapped-der',
        'UPDATE issued_certificates SET der = (SELECT der FROM issued_certificates ORDER BY id DESC LIMIT 1) WHERE id = (SELECT min(id) FROM issued_certificates)',
      ),
    );
    expect(swapped['certificate-authorities']).toMatch(/the stored DER has serial/);

    const forged = await failures(
      doctored(
        'foreign-der',
        "UPDATE issued_certificates SET authority_id = (SELECT id FROM authorities WHERE kind = 'root' LIMIT 1) WHERE id = (SELECT min(id) FROM issued_certificates)",
      ),
    );
    expect(forged['certificate-authorities']).toMatch(/names the root .* as its issuer/);

    const none = await failures(doctored('no-active', "UPDATE authorities SET state = 'retired' WHERE kind = 'intermediate'"));
    expect(none['active-authority']).toBe('0 active intermediates; exactly one is required');

    const swappedKey = await failures(
      doctored(
        'swapped-key',
        "UPDATE authorities SET sealed_key = (SELECT sealed_key FROM authorities WHERE kind = 'root') WHERE kind = 'intermediate'",
      ),
    );
    expect(swappedKey['authority-keys']).toContain('cannot decrypt the key of authority int-');

    const certSwap = await failures(
      doctored(
        'swapped-cert',
        "UPDATE authorities SET certificate = (SELECT certificate FROM authorities WHERE kind = 'root') WHERE kind = 'intermediate'",
      ),
    );
    expect(certSwap['authority-chain']).toContain('is not the one its id names');

    const backwards = await failures(backupFile, { minBundleSequence: 1000, receivedSerials: ['abc123', ...beforeBackup.slice(0, 3)] });
    expect(backwards['bundle-sequence']).toMatch(/went backwards: \d+ < 1000/);
    expect(backwards['received-certificates']).toContain('1 of 4 certificates clients received are not stored, e.g. abc123');

    // The CLI reports the same, exits 1, and names the violated invariants.
    const dir = join(d, 'doctored-dir');
    mkdirSync(dir, { mode: 0o700 });
    copyFileSync(join(d, 'no-active.db'), databasePath(dir));
    const r = await meshca(['verify', '--data-dir', dir], { MESHCA_KEK: kek });
    expect(r.code).toBe(1);
    expect(r.stdout).toMatch(/active-authority\s+FAILED\s+0 active intermediates/);
    expect(r.stderr).toContain('invariants violated: active-authority');
    expect((await meshca(['verify', '--data-dir', join(d, 'no-such-dir')])).stderr).toContain('no meshca database at');
  });
});

// ---------------------------------------------------------------------------------------------

describe('meshca status', () => {
  it('prints authorities, expiry, bundle sequence, issuance rate, revocations and warnings (read-only, server running)', async () => {
    const d = newDir();
    const data = join(d, 'data');
    const t = await serve(data, { MESHCA_KEK: newKek() }, ['--dev', '--root-ttl', '20d', '--intermediate-ttl', '5d']);
    const issuer = await openDevTokenIssuer(data);
    const client = t.client();
    const serials: string[] = [];
    for (let i = 0; i < 5; i++) {
      const chain = await client.createCertificate({
        csrPem: await csrFor(`spiffe://cluster.local/ns/ops/sa/s${i}`),
        token: await issuer.sign({ namespace: 'ops', serviceAccount: `s${i}`, ttlSeconds: 600 }),
      });
      serials.push(serialOf(chain[0]!));
    }
    await t.server.store.revokeCertificate(serials[0]!, { reason: 'keyCompromise', actor: 'test', at: new Date() });
    await t.server.store.revokeIdentity('spiffe://cluster.local/ns/ops/sa/s1', {
      reason: 'keyCompromise',
      actor: 'test',
      at: new Date(),
      deny: true,
    });

    const json = await meshca(['status', '--data-dir', data, '--json']);
    expect(json.code).toBe(0);
    const status = JSON.parse(json.stdout) as {
      bundleSequence: number;
      authorities: { kind: string; state: string; daysLeft: number; issued: number }[];
      issuance: { lastHour: number; lastDay: number; stored: number; revoked: number };
      deniedIdentities: string[];
      warnings: { severity: string; message: string }[];
    };
    expect(status.bundleSequence).toBe(2); // the first CA, then the first JWT-SVID key
    expect(status.authorities.map((a) => [a.kind, a.state])).toEqual([
      ['root', 'active'],
      ['intermediate', 'active'],
    ]);
    expect(status.authorities[0]!.daysLeft).toBeCloseTo(20, 0);
    expect(status.authorities[1]!.daysLeft).toBeCloseTo(5, 0);
    // 5 workload certificates + meshca's own serving certificate
    expect(status.issuance).toMatchObject({ lastHour: 6, lastDay: 6, stored: 6, revoked: 2 });
    expect(status.deniedIdentities).toEqual(['spiffe://cluster.local/ns/ops/sa/s1']);
    expect(status.warnings.map((w) => w.severity)).toEqual(['critical', 'warning', 'warning']);
    expect(status.warnings[0]!.message).toMatch(/the active intermediate int-\w+ expires in 5\.0 days/);
    expect(status.warnings[1]!.message).toMatch(/the active root root-\w+ expires in 20\.0 days/);
    expect(status.warnings[2]!.message).toContain('1 identity is on the deny-list');

    const table = await meshca(['status', '--data-dir', data]);
    expect(table.code).toBe(0);
    for (const text of [
      'AUTHORITIES',
      'DAYSLEFT',
      'bundle sequence    2',
      'issued last 1h     6',
      'revoked            2',
      'WARNINGS',
      'critical',
    ])
      expect(table.stdout).toContain(text);
    await stopServer(t);

    const healthy = newDir();
    await stopServer(await serve(join(healthy, 'data'), { MESHCA_KEK: newKek() }));
    const quiet = await meshca(['status', '--data-dir', join(healthy, 'data')]);
    expect(quiet.stdout).toMatch(/WARNINGS\nnone\n$/);
  });
});

// ---------------------------------------------------------------------------------------------

function fetchText(url: string): Promise<string> {
  return new Promise((resolve, reject) => {
    get(url, (res) => {
      let body = '';
      res.on('data', (c: Buffer) => (body += c.toString()));
      res.on('end', () => resolve(body));
    }).on('error', reject);
  });
}

const METRIC_NAME = /\b((?:citadel_server|meshca|process|nodejs)_[a-zA-Z0-9_]+)\b/g;

interface RuleFile {
  groups: {
    name: string;
    rules: { alert?: string; expr: string; for?: string; labels?: Record<string, string>; annotations?: Record<string, string> }[];
  }[];
}

/** The rules file parsed with the `yaml` package when present, else a small reader for its exact shape. */
async function readRules(path: string): Promise<RuleFile> {
  const text = readFileSync(path, 'utf8');
  try {
    const yaml = (await import('yaml')) as { parse(text: string): unknown };
    return yaml.parse(text) as RuleFile;
  } catch {
    const groups: RuleFile['groups'] = [];
    const lines = text.split('\n');
    for (let i = 0; i < lines.length; i++) {
      const line = lines[i]!;
      const group = /^ {2}- name: (.+)$/.exec(line);
      if (group) groups.push({ name: group[1]!, rules: [] });
      const alert = /^ {6}- alert: (.+)$/.exec(line);
      if (alert) groups.at(-1)!.rules.push({ alert: alert[1]!, expr: '', labels: {}, annotations: {} });
      const expr = /^ {8}expr: (.*)$/.exec(line);
      if (expr) {
        let value = expr[1]!;
        if (value === '|') for (value = ''; lines[i + 1]?.startsWith('          '); ) value += lines[++i]!.trim() + '\n';
        groups.at(-1)!.rules.at(-1)!.expr = value;
      }
      const severity = /^ {10}severity: (.+)$/.exec(line);
      if (severity) groups.at(-1)!.rules.at(-1)!.labels!.severity = severity[1]!;
      const summary = /^ {10}summary: (.+)$/.exec(line);
      if (summary) groups.at(-1)!.rules.at(-1)!.annotations!.summary = summary[1]!;
    }
    return { groups };
  }
}

function dashboardExprs(node: unknown): string[] {
  if (Array.isArray(node)) return node.flatMap(dashboardExprs);
  if (node === null || typeof node !== 'object') return [];
  return Object.entries(node).flatMap(([key, value]) => (key === 'expr' && typeof value === 'string' ? [value] : dashboardExprs(value)));
}

describe('monitoring artefacts', () => {
  const root = join(import.meta.dirname, '..');

  it('every metric the alert rules and the dashboard use is exported by a running meshca', async () => {
    const d = newDir();
    const data = join(d, 'data');
    const t = await serve(data, { MESHCA_KEK: newKek() });
    const issuer = await openDevTokenIssuer(data);
    const chain = await t.client().createCertificate({
      csrPem: await csrFor('spiffe://cluster.local/ns/ops/sa/metrics'),
      token: await issuer.sign({ namespace: 'ops', serviceAccount: 'metrics', ttlSeconds: 600 }),
    });
    await t
      .client()
      .createCertificate({ csrPem: await csrFor('spiffe://cluster.local/ns/ops/sa/metrics'), token: 'not-a-token' })
      .catch(() => undefined);
    const admin = {
      port: t.server.adminAddress.port,
      roots: t.server.ca.current().rootsPem,
      token: readFileSync(join(data, 'admin-token'), 'utf8').trim(),
    };
    expect(
      (await adminCall(admin, 'POST', `/v1/certificates/${serialOf(chain[0]!)}/revoke`, { body: { reason: 'keyCompromise' } })).status,
    ).toBe(200);
    expect((await adminCall(admin, 'GET', '/v1/crl', { token: null })).status).toBe(200);
    const metrics = await fetchText(`http://127.0.0.1:${t.server.monitoringAddress.port}/metrics`);
    await stopServer(t);

    const exported = new Set<string>();
    for (const line of metrics.split('\n')) {
      const sample = /^([a-zA-Z_:][a-zA-Z0-9_:]*)[{ ]/.exec(line);
      if (sample && !line.startsWith('#')) exported.add(sample[1]!);
      // Declared metrics count too: a labelled counter shows no sample until its first increment.
      const type = /^# TYPE (\S+) (\w+)$/.exec(line);
      if (type) exported.add(type[1]!);
      if (type?.[2] === 'histogram') for (const suffix of ['_bucket', '_count', '_sum']) exported.add(type[1]! + suffix);
    }

    const rules = await readRules(join(root, 'deploy/monitoring/prometheus-rules.yaml'));
    const alerts = rules.groups.flatMap((g) => g.rules);
    expect(rules.groups.map((g) => g.name)).toEqual([
      'meshca.authorities',
      'meshca.issuance',
      'meshca.security',
      'meshca.revocation',
      'meshca.store',
    ]);
    for (const rule of alerts) {
      expect(rule.alert).toMatch(/^Meshca[A-Za-z]+$/);
      expect(['info', 'warning', 'critical']).toContain(rule.labels?.severity);
      expect(rule.annotations?.summary).toBeTruthy();
    }
    const dashboard = JSON.parse(readFileSync(join(root, 'deploy/monitoring/grafana-dashboard.json'), 'utf8')) as {
      title: string;
      panels: unknown[];
    };
    expect(dashboard.title).toBe('meshca');
    const exprs = [...alerts.map((r) => r.expr), ...dashboardExprs(dashboard.panels)];
    const referenced = new Set(exprs.flatMap((e) => [...e.matchAll(METRIC_NAME)].map((m) => m[1]!)));
    // What an operator alerts on: expiry, issuance errors, authentication failures, CRL, active authority, commit latency.
    for (const name of [
      'meshca_authority_expiry_timestamp_seconds',
      'citadel_server_root_cert_expiry_timestamp',
      'citadel_server_cert_chain_expiry_timestamp',
      'meshca_issuance_duration_seconds_count',
      'citadel_server_authentication_failure_count',
      'meshca_crl_next_update_timestamp_seconds',
      'meshca_authority_state',
      'meshca_store_commit_duration_seconds_bucket',
    ]) {
      expect(referenced).toContain(name);
    }
    expect([...referenced].filter((name) => !exported.has(name))).toEqual([]);
    // The label values the rules select on exist too.
    expect(metrics).toMatch(/meshca_authority_state\{id="int-\w+",kind="intermediate",state="active"\} 1/);
    expect(metrics).toMatch(/meshca_issuance_duration_seconds_count\{code="OK"\} 1/);
    expect(metrics).toMatch(/meshca_crl_next_update_timestamp_seconds\{authority="int-\w+"\} \d+/);
  });
});
