import { join } from 'node:path';
import { pino } from 'pino';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { KubeClient } from '../src/kubernetes/client.js';
import { loadKubeconfig } from '../src/kubernetes/connection.js';
import { LeaderElector } from '../src/kubernetes/leader-election.js';
import { RootDistributor } from '../src/kubernetes/root-distributor.js';
import { KubeApiSimulator, type KubeconfigAuth } from './support/kube-api.js';
import { removeDir, startTestServer, tempDir, type TestServer } from './support/server.js';

const CM = 'istio-ca-root-cert';
const silent = pino({ level: 'silent' });

async function waitFor(what: string, condition: () => boolean, timeoutMs = 5_000): Promise<void> {
  const deadline = Date.now() + timeoutMs;
  while (!condition()) {
    if (Date.now() > deadline) throw new Error(`timed out waiting until ${what}`);
    await new Promise((r) => setTimeout(r, 25));
  }
}

const sleep = (ms: number) => new Promise((r) => setTimeout(r, ms));
const certCount = (pem: string | undefined) => (pem ?? '').match(/BEGIN CERTIFICATE/g)?.length ?? 0;

let dir: string;
beforeAll(() => {
  dir = tempDir();
});
afterAll(() => removeDir(dir));

describe('root distribution by two meshca replicas (--distribute-root, Lease leader election)', () => {
  let sim: KubeApiSimulator;
  let a: TestServer | undefined;
  let b: TestServer | undefined;
  const NAMESPACES = ['default', 'kube-system', 'istio-system', 'meshca', 'shop'];
  const rootIn = (ns: string) => (sim.get('configmaps', ns, CM)?.data as Record<string, string> | undefined)?.['root-cert.pem'];
  const everywhere = (pem: string) => NAMESPACES.every((ns) => rootIn(ns) === pem);
  const flags = () => ['--dev', '--distribute-root', '--kubeconfig', sim.kubeconfig('token'), '--lease-duration', '2s'];

  beforeAll(async () => {
    sim = await KubeApiSimulator.start(join(dir, 'api'));
    NAMESPACES.forEach((ns) => sim.addNamespace(ns));
    sim.put('configmaps', 'shop', {
      apiVersion: 'v1',
      kind: 'ConfigMap',
      metadata: { name: CM, namespace: 'shop', labels: { team: 'payments' }, annotations: { note: 'hand-made' } },
      data: { 'root-cert.pem': 'stale', 'extra.txt': 'keep me' },
    });
    a = await startTestServer(join(dir, 'a'), flags());
  });

  afterAll(async () => {
    await Promise.all([a?.close(), b?.close()]);
    await sim?.close();
  });

  it('creates the ConfigMap in every namespace and fixes a stale one, leaving its other keys alone', async () => {
    const bundle = a!.server.ca.current().rootsPem;
    await waitFor('every namespace has the bundle', () => everywhere(bundle));
    const created = sim.get('configmaps', 'default', CM)!;
    expect(created.metadata.labels).toEqual({ 'istio.io/config': 'true' });
    expect(created.data).toEqual({ 'root-cert.pem': bundle });
    const updated = sim.get('configmaps', 'shop', CM)!;
    expect(updated.data).toEqual({ 'root-cert.pem': bundle, 'extra.txt': 'keep me' });
    expect(updated.metadata).toMatchObject({ labels: { team: 'payments' }, annotations: { note: 'hand-made' } });
  });

  it('a new namespace gets it at once (namespace watch), not at the next resync', async () => {
    sim.addNamespace('new-team');
    await waitFor('new-team has the bundle', () => rootIn('new-team') === a!.server.ca.current().rootsPem, 3_000);
    NAMESPACES.push('new-team');
  });

  it('after a root rotation (prepare) every ConfigMap holds both roots; other keys stay', async () => {
    const before = a!.server.ca.current().rootsPem;
    await a!.server.ca.prepare({}, 'test');
    const after = a!.server.ca.current().rootsPem;
    expect(certCount(after)).toBe(2);
    expect(after).toContain(before);
    await waitFor('every namespace has both roots', () => everywhere(after));
    expect(sim.get('configmaps', 'shop', CM)!.data).toMatchObject({ 'extra.txt': 'keep me' });
  });

  it('only the leader writes; when it stops, the other replica takes over and writes its bundle', async () => {
    const leader = a!;
    const leaderBundle = leader.server.ca.current().rootsPem;
    const lease = () => sim.get('leases', 'meshca', 'meshca-leader')!.spec as { holderIdentity: string; leaseTransitions: number };
    const firstHolder = lease().holderIdentity;
    b = await startTestServer(join(dir, 'b'), flags()); // its own data dir: a different root, so its writes would show
    const standbyBundle = () => b!.server.ca.current().rootsPem;
    expect(standbyBundle()).not.toBe(leaderBundle);
    await sleep(2_500); // longer than the lease: the standby must keep waiting while the leader renews
    await b.server.ca.prepare({}, 'test'); // a bundle change on the standby triggers nothing either
    await sleep(300);
    expect(everywhere(leaderBundle)).toBe(true);
    expect(lease().holderIdentity).toBe(firstHolder);

    const stoppedAt = Date.now();
    a = undefined;
    await leader.close();
    await waitFor('the standby wrote its bundle everywhere', () => everywhere(standbyBundle()), 4_000);
    expect(Date.now() - stoppedAt).toBeLessThan(2_000); // released on stop: no need to wait for expiry
    expect(lease().holderIdentity).not.toBe(firstHolder);
    expect(lease().leaseTransitions).toBeGreaterThanOrEqual(1);
  });
});

describe('RootDistributor', () => {
  let sim: KubeApiSimulator;
  let client: KubeClient;
  let bundle = 'ROOTS-1';
  let distributor: RootDistributor;
  const rootIn = (ns: string) => (sim.get('configmaps', ns, CM)?.data as Record<string, string> | undefined)?.['root-cert.pem'];

  beforeAll(async () => {
    sim = await KubeApiSimulator.start(join(dir, 'api-unit'));
    sim.addNamespace('mesh-a', { mesh: 'on' });
    sim.addNamespace('mesh-b', { mesh: 'on' });
    sim.addNamespace('plain');
    client = new KubeClient({ connection: loadKubeconfig(sim.kubeconfig('token')) });
    distributor = new RootDistributor({
      client,
      bundle: () => bundle,
      namespaceSelector: 'mesh=on',
      resyncIntervalMs: 300,
      logger: silent,
    });
    distributor.start();
  });

  afterAll(async () => {
    distributor?.stop();
    client?.close();
    await sim?.close();
  });

  it('with --namespace-selector writes only matching namespaces, and a namespace relabelled to match', async () => {
    await waitFor('selected namespaces have the bundle', () => rootIn('mesh-a') === bundle && rootIn('mesh-b') === bundle);
    expect(rootIn('plain')).toBeUndefined();
    sim.addNamespace('plain', { mesh: 'on' });
    await waitFor('the relabelled namespace has the bundle', () => rootIn('plain') === bundle);
  });

  it('the periodic resync restores a ConfigMap changed behind its back', async () => {
    const current = sim.get('configmaps', 'mesh-a', CM)!;
    sim.put('configmaps', 'mesh-a', { ...current, data: { 'root-cert.pem': 'tampered', other: 'x' } });
    await waitFor('resync restored it', () => rootIn('mesh-a') === bundle, 2_000);
    expect(sim.get('configmaps', 'mesh-a', CM)!.data).toEqual({ 'root-cert.pem': bundle, other: 'x' });
  });

  it('a bundle change is written at once', async () => {
    bundle = 'ROOTS-2';
    distributor.bundleChanged();
    await waitFor('the new bundle is everywhere', () => ['mesh-a', 'mesh-b', 'plain'].every((ns) => rootIn(ns) === bundle), 1_000);
  });

  it('a stale resourceVersion (409) is re-read and retried', async () => {
    const current = sim.get('configmaps', 'mesh-b', CM)!;
    sim.put('configmaps', 'mesh-b', { ...current, data: { 'root-cert.pem': 'old' } });
    bundle = 'ROOTS-3';
    // Race a concurrent writer: every PUT from the distributor first finds the object changed once.
    let raced = false;
    const original = sim.updateObject.bind(sim);
    sim.updateObject = (ctx) => {
      if (!raced && ctx.params.ns === 'mesh-b') {
        raced = true;
        const now = sim.get('configmaps', 'mesh-b', CM)!;
        sim.put('configmaps', 'mesh-b', { ...now, data: { ...(now.data as object), sneaky: 'yes' } });
      }
      original(ctx);
    };
    try {
      expect(await distributor.syncNamespace('mesh-b')).toBe('updated');
    } finally {
      sim.updateObject = original;
    }
    expect(raced).toBe(true);
    expect(sim.get('configmaps', 'mesh-b', CM)!.data).toEqual({ 'root-cert.pem': 'ROOTS-3', sneaky: 'yes' });
  });

  it('once stopped (no longer leader) it writes nothing', async () => {
    distributor.stop();
    const current = sim.get('configmaps', 'mesh-a', CM)!;
    sim.put('configmaps', 'mesh-a', { ...current, data: { 'root-cert.pem': 'left alone' } });
    distributor.bundleChanged();
    await sleep(700);
    expect(rootIn('mesh-a')).toBe('left alone');
  });
});

describe('LeaderElector', () => {
  let sim: KubeApiSimulator;
  const clients: KubeClient[] = [];
  const electors: LeaderElector[] = [];

  beforeAll(async () => {
    sim = await KubeApiSimulator.start(join(dir, 'api-lease'));
    sim.addNamespace('meshca');
  });

  afterAll(async () => {
    await Promise.all(electors.map((e) => e.stop()));
    clients.forEach((c) => c.close());
    await sim?.close();
  });

  function elector(auth: KubeconfigAuth, events: string[], name: string): LeaderElector {
    const client = new KubeClient({ connection: loadKubeconfig(sim.kubeconfig(auth)), maxAttempts: 1, timeoutMs: 500 });
    clients.push(client);
    const e = new LeaderElector({
      client,
      namespace: 'meshca',
      name: 'lease-test',
      identity: name,
      leaseDurationMs: 1_500,
      logger: silent,
      onStartedLeading: () => events.push(`${name} started`),
      onStoppedLeading: () => events.push(`${name} stopped`),
    });
    electors.push(e);
    return e;
  }

  it('a leader cut off from the API steps down before a successor takes over after the lease expires', async () => {
    const events: string[] = [];
    const first = elector('client-cert', events, 'first');
    first.start();
    await waitFor('first leads', () => first.isLeader());
    const second = elector('token', events, 'second');
    second.start();
    await sleep(2_200); // beyond the lease: renewals keep the follower out
    expect([first.isLeader(), second.isLeader()]).toEqual([true, false]);

    sim.refuse.add('client-cert'); // the leader can no longer renew (a network partition)
    await waitFor('second leads', () => second.isLeader(), 6_000);
    expect(first.isLeader()).toBe(false);
    expect(events).toEqual(['first started', 'first stopped', 'second started']); // never two leaders
    const lease = sim.get('leases', 'meshca', 'lease-test')!.spec as Record<string, unknown>;
    expect(lease).toMatchObject({ holderIdentity: 'second', leaseDurationSeconds: 2, leaseTransitions: 1 });
    expect(String(lease.renewTime)).toMatch(/^\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{6}Z$/);
  });
});
