import { afterAll, describe, expect, it } from 'vitest';
import { openDevTokenIssuer } from '../src/authn/index.js';
import { CaClient } from '../src/client/ca-client.js';
// Plain ESM shared with `npm run chaos`: a real TLS HTTP/2 attacker client.
import { residentBytes, spawnStreamFlood } from '../scripts/lib/stream-flood.mjs';
import { publicBundle } from './support/admin.js';
import { spawnServer, type ServerProcess } from './support/process.js';
import { csrFor, removeDir, tempDir } from './support/server.js';

const MB = 1024 * 1024;
const sleep = (ms: number) => new Promise((resolve) => setTimeout(resolve, ms));
const procs: ServerProcess[] = [];
const dirs: string[] = [];

afterAll(() => {
  procs.forEach((p) => p.child.kill('SIGKILL'));
  dirs.forEach(removeDir);
});

describe('unauthenticated memory exhaustion on the gRPC port (issue 11)', () => {
  it('30 connections x 256 header-only streams x 60 KB: RSS stays bounded, comes back, and a real workload is still served', async () => {
    const dir = tempDir();
    dirs.push(dir);
    const proc = await spawnServer(dir, ['--dev']);
    procs.push(proc);
    const roots = await publicBundle(proc.adminPort);
    const issuer = await openDevTokenIssuer(dir);
    const client = new CaClient({ address: `127.0.0.1:${proc.grpcPort}`, rootsPem: roots, serverName: 'localhost' });
    const workload = async (sa: string) =>
      client.createCertificate({
        csrPem: await csrFor(`spiffe://cluster.local/ns/sec/sa/${sa}`),
        token: await issuer.sign({ namespace: 'sec', serviceAccount: sa, ttlSeconds: 600 }),
        deadlineMs: 15_000,
      });
    await workload('warmup');
    await sleep(500);
    const baseline = residentBytes(proc.child.pid!);

    const flood = spawnStreamFlood({ port: proc.grpcPort, ca: roots, connections: 30, streams: 256, headerBytes: 60 * 1024 });
    let peak = baseline;
    const sample = setInterval(() => (peak = Math.max(peak, residentBytes(proc.child.pid!))), 100);
    try {
      await flood.underway(60_000); // generous: on a loaded 2-core machine the attacker process itself is slow to start
      const chain = await workload('during-attack');
      expect(chain.length).toBeGreaterThanOrEqual(3);
      await sleep(2500);
    } finally {
      clearInterval(sample);
      client.close();
    }
    const attack = await flood.stop();
    expect(attack.opened).toBeGreaterThan(0);
    expect(attack.streamsOpened).toBeGreaterThan(1000);
    expect((peak - baseline) / MB).toBeLessThan(150);
    await sleep(2000);
    expect((residentBytes(proc.child.pid!) - baseline) / MB).toBeLessThan(100);
  }, 180_000);
});
