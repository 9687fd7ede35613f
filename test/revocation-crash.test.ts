import { randomBytes } from 'node:crypto';
import { readFileSync } from 'node:fs';
import { join } from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { openDevTokenIssuer } from '../src/authn/index.js';
import { checkInvariants, formatInvariantReport } from '../src/authority/invariants.js';
import { trustedRootsPem } from '../src/authority/snapshot.js';
import { CaClient } from '../src/client/ca-client.js';
import { inspectSqliteStore } from '../src/store/sqlite.js';
import { adminCall } from './support/admin.js';
import { spawnServer, type ServerProcess } from './support/process.js';
import { leafAndIssuer, serialOf, verifyWithCrlSet } from './support/revocation.js';
import { csrFor, removeDir, tempDir } from './support/server.js';

// A real `meshca serve` process, killed with SIGKILL: revocations and taints are either fully on disk or not at all.
const kekText = randomBytes(32).toString('base64');
const kek = Buffer.from(kekText, 'base64');
let dir: string;
let data: string;

beforeAll(() => {
  dir = tempDir();
  data = join(dir, 'data');
});
afterAll(() => removeDir(dir));

/** The store as it is on disk now, with every invariant checked. */
async function onDisk() {
  const store = inspectSqliteStore(join(data, 'meshca.db'));
  try {
    const report = await checkInvariants(store, { kek });
    const authorities = await store.loadAuthorities();
    return { report, authorities, revoked: new Set(await store.revokedAuthorityIds()), roots: trustedRootsPem(authorities).pem };
  } finally {
    store.close();
  }
}

async function start(): Promise<{
  server: ServerProcess;
  call: (method: string, path: string, body?: unknown) => ReturnType<typeof adminCall>;
}> {
  const server = await spawnServer(data, ['--dev'], { MESHCA_KEK: kekText });
  const { roots } = await onDisk();
  const token = readFileSync(join(data, 'admin-token'), 'utf8').trim();
  return { server, call: (method, path, body) => adminCall({ port: server.adminPort, roots, token }, method, path, { body }) };
}

async function kill(server: ServerProcess): Promise<void> {
  server.child.kill('SIGKILL');
  await server.exited;
}

const activeIntermediate = (authorities: { kind: string; state: string; id: string }[]) =>
  authorities.find((a) => a.kind === 'intermediate' && a.state === 'active')!;

describe('revocation survives kill -9', () => {
  it('a revoked leaf and a tainted intermediate are on disk once the API answered', async () => {
    const { server, call } = await start();
    const client = new CaClient({ address: `127.0.0.1:${server.grpcPort}`, rootsPem: (await onDisk()).roots, serverName: 'localhost' });
    const sign = await openDevTokenIssuer(data);
    const chain = await client.createCertificate({
      csrPem: await csrFor('spiffe://cluster.local/ns/crash/sa/w'),
      token: await sign.sign({ namespace: 'crash', serviceAccount: 'w', ttlSeconds: 600 }),
    });
    client.close();
    const [leaf, intermediate] = leafAndIssuer(chain.slice(0, -1).join(''));
    const tainted = activeIntermediate((await onDisk()).authorities).id;
    expect((await call('POST', `/v1/certificates/${serialOf(leaf)}/revoke`, { reason: 'keyCompromise' })).status).toBe(200);
    const revoke = await call('POST', `/v1/authorities/${tainted}/revoke`, { reason: 'keyCompromise' });
    expect(revoke.status, revoke.text).toBe(200);
    await kill(server);

    const disk = await onDisk();
    expect(disk.report.ok, formatInvariantReport(disk.report)).toBe(true);
    expect(disk.authorities.find((a) => a.id === tainted)?.state).toBe('tainted');
    const restarted = await start();
    try {
      const views = (await restarted.call('GET', '/v1/authorities')).json<{
        authorities: { id: string; state: string; taintReason: string | null }[];
      }>().authorities;
      expect(views.find((a) => a.id === tainted)).toMatchObject({ state: 'tainted', taintReason: 'keyCompromise' });
      expect(activeIntermediate(views).id).toBe(revoke.json<{ replacement: { id: string } }>().replacement.id);
      expect((await restarted.call('GET', `/v1/certificates/${serialOf(leaf)}`)).json()).toMatchObject({
        status: 'revoked',
        revocationReason: 'keyCompromise',
      });
      const set = (await restarted.call('GET', '/v1/crl?format=pem')).text;
      expect(verifyWithCrlSet(leaf, intermediate, disk.roots, set).output).toContain('certificate revoked');
    } finally {
      await kill(restarted.server);
    }
  }, 90_000);

  it.each([0, 15, 60])(
    'killed %i ms into revoking the signer: either nothing happened or all of it (taint, record, replacement)',
    async (delayMs) => {
      const { server, call } = await start();
      const target = activeIntermediate(await onDisk().then((d) => d.authorities));
      const answered = call('POST', `/v1/authorities/${target.id}/revoke`, { reason: 'keyCompromise' }).catch(() => undefined);
      await new Promise((resolve) => setTimeout(resolve, delayMs));
      await kill(server);
      await answered;

      const disk = await onDisk();
      expect(disk.report.ok, formatInvariantReport(disk.report)).toBe(true);
      const state = disk.authorities.find((a) => a.id === target.id)!.state;
      const active = activeIntermediate(disk.authorities);
      if (state === 'tainted') {
        expect(disk.revoked.has(target.id)).toBe(true);
        expect(active.id).not.toBe(target.id);
        expect(active.parentId).toBe(target.parentId);
      } else {
        expect([state, disk.revoked.has(target.id), active.id]).toEqual(['active', false, target.id]);
      }
    },
    90_000,
  );
});
