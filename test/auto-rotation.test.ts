import { generateKeyPairSync, randomBytes, X509Certificate } from 'node:crypto';
import { join } from 'node:path';
import { pino } from 'pino';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { openDevTokenIssuer } from '../src/authn/index.js';
import { ACTIVATE_FRACTION, AutoRotator, lifetimePoint, PREPARE_FRACTION, planRotation } from '../src/authority/auto-rotation.js';
import { IssuanceService } from '../src/authority/issuance.js';
import { CertificateAuthority } from '../src/authority/lifecycle.js';
import { IssuancePolicy } from '../src/authority/policy.js';
import { buildServerConfig, SERVE_FLAGS } from '../src/config.js';
import { parseFlags } from '../src/flags.js';
import { openSqliteStore, type SqliteStore } from '../src/store/sqlite.js';
import type { AuthorityRecord } from '../src/store/types.js';
import { mutualTls, workloadCredentials } from './support/mtls.js';
import { removeDir, startTestServer, tempDir, type TestServer } from './support/server.js';

const MIN = 60_000;
const silent = pino({ level: 'silent' });

describe('auto-rotation flags', () => {
  it('is off by default and configurable by flag or MESHCA_ env', () => {
    const config = (argv: string[], env: NodeJS.ProcessEnv = {}) =>
      buildServerConfig(parseFlags(SERVE_FLAGS, ['--dev', ...argv], env, 'serve').values);
    expect(config([]).autoRotate).toEqual({ enabled: false, checkIntervalMs: 60_000 });
    expect(config(['--auto-rotate', '--auto-rotate-check-interval', '5s']).autoRotate).toEqual({ enabled: true, checkIntervalMs: 5000 });
    expect(config([], { MESHCA_AUTO_ROTATE: 'true' }).autoRotate.enabled).toBe(true);
    expect(() => config(['--auto-rotate-check-interval', '0s'])).toThrow(/auto-rotate-check-interval/);
  });
});

/**
 * An injected clock drives a real CertificateAuthority on a real SQLite store: each threshold is
 * checked just before and exactly at the instant it is due.
 */
describe('auto-rotation schedule (injected clock)', () => {
  let dir: string;
  let store: SqliteStore;
  let ca: CertificateAuthority;
  let t0: number;
  let clock = 0;
  const now = () => new Date(clock);
  const kek = randomBytes(32);
  const profile = { trustDomain: 'cluster.local', keyType: 'ec-p256' as const, rootTtlMs: 180 * MIN, intermediateTtlMs: 60 * MIN };
  const open = async () => {
    store = openSqliteStore({ path: join(dir, 'meshca.db') });
    ca = await CertificateAuthority.open({ store, kek, logger: silent, now, ...profile });
    return new AutoRotator({
      ca,
      store,
      logger: silent,
      now,
      intermediateTtlMs: profile.intermediateTtlMs,
      keyType: 'ec-p256',
      checkIntervalMs: 1000,
    });
  };
  const at = async (rotator: AutoRotator, ms: number) => {
    clock = ms;
    return rotator.runOnce();
  };
  const authorities = () => store.loadAuthorities();
  const activeOf = (list: AuthorityRecord[]) => list.find((a) => a.kind === 'intermediate' && a.state === 'active')!;
  const leafUntil = async (issuance: IssuanceService) => {
    const { publicKey } = generateKeyPairSync('ec', { namedCurve: 'P-256' });
    const spiffeId = 'spiffe://cluster.local/ns/a/sa/a';
    return issuance.issueProfile({
      spkiDer: publicKey.export({ format: 'der', type: 'spki' }),
      uris: [spiffeId],
      dnsNames: [],
      ttlMs: 24 * 60 * MIN,
      callerId: spiffeId,
      rsaKey: false,
    });
  };

  beforeAll(() => {
    dir = tempDir();
    t0 = Math.floor(Date.now() / 1000) * 1000;
    clock = t0;
  });

  afterAll(async () => {
    await store?.close();
    removeDir(dir);
  });

  it('renews the intermediate at 5/6 while the root is young, then the root: prepare at 1/2, activate at 5/6, remove after the last leaf expired', async () => {
    let rotator = await open();
    const [root1, int1] = [(await authorities()).find((a) => a.kind === 'root')!, activeOf(await authorities())];
    expect(lifetimePoint(int1, PREPARE_FRACTION)).toBe(t0 + 30 * MIN);
    expect(lifetimePoint(int1, ACTIVATE_FRACTION)).toBe(t0 + 50 * MIN);

    // int1 (0–60 min) under root1 (0–180 min): the root is young, so only the intermediate is renewed, at 5/6
    expect((await at(rotator, t0 + 30 * MIN - 1)).plan.step.kind).toBe('wait');
    const half = await at(rotator, t0 + 30 * MIN);
    expect(half.performed).toBeNull();
    expect(half.plan.step).toMatchObject({ kind: 'wait', until: new Date(t0 + 50 * MIN) });
    expect((await at(rotator, t0 + 50 * MIN - 1)).performed).toBeNull();
    const sequence = ca.current().bundleSequence;
    expect((await at(rotator, t0 + 50 * MIN)).performed).toBe('rotate-intermediate');
    const int2 = activeOf(await authorities());
    expect(int2.parentId).toBe(root1.id);
    expect(ca.current().bundleSequence).toBe(sequence);
    expect((await authorities()).find((a) => a.id === int1.id)?.state).toBe('retired');

    // int2 (50–110 min): at its 5/6 (100 min) root1 would be past half (90 min) → a new root is prepared at 1/2 (80 min)
    expect((await at(rotator, t0 + 80 * MIN - 1)).performed).toBeNull();
    const prepared = await at(rotator, t0 + 80 * MIN);
    expect(prepared.performed).toBe('prepare');
    expect(ca.current().bundleSequence).toBe(sequence + 1);
    expect(ca.current().roots).toHaveLength(2);
    const root2 = (await authorities()).find((a) => a.kind === 'root' && a.state === 'prepared')!;
    const int3 = (await authorities()).find((a) => a.kind === 'intermediate' && a.state === 'prepared')!;
    expect(int3.parentId).toBe(root2.id);
    expect(root2.keyType).toBe(int2.keyType);

    // a restart (new store handle, CA and rotator) picks up where it was: no second prepare
    await rotator.stop();
    await store.close();
    rotator = await open();
    const count = (await authorities()).length;
    expect((await at(rotator, t0 + 85 * MIN)).plan.step).toMatchObject({ kind: 'wait', until: new Date(t0 + 100 * MIN) });
    expect(await authorities()).toHaveLength(count);

    // a workload renews just before activation: its leaf is clamped to int2's notAfter (110 min)
    const issuance = new IssuanceService(
      ca,
      store,
      new IssuancePolicy({ defaultTtlMs: 24 * 60 * MIN, maxTtlMs: 30 * 24 * 60 * MIN, backdateMs: MIN }),
      undefined,
      now,
    );
    clock = t0 + 99 * MIN;
    const oldLeaf = await leafUntil(issuance);
    expect(oldLeaf.notAfter.getTime()).toBe(t0 + 110 * MIN);
    expect((await at(rotator, t0 + 100 * MIN - 1)).performed).toBeNull();
    const activated = await at(rotator, t0 + 100 * MIN);
    expect(activated.performed).toBe('activate');
    const states = new Map((await authorities()).map((a) => [a.id, a.state]));
    expect([states.get(int3.id), states.get(root2.id), states.get(root1.id), states.get(int2.id)]).toEqual([
      'active',
      'active',
      'retired',
      'retired',
    ]);
    expect(ca.current().bundleSequence).toBe(sequence + 1);
    const newLeaf = await leafUntil(issuance);
    expect(newLeaf.authorityId).toBe(int3.id);

    // root1 stays while the old leaf is unexpired ("not yet"), and goes right after it expired
    expect((await at(rotator, t0 + 110 * MIN - 1)).removed).toEqual([]);
    expect((await authorities()).find((a) => a.id === root1.id)?.state).toBe('retired');
    const removal = await at(rotator, t0 + 110 * MIN);
    expect(removal.removed).toEqual([root1.id]);
    expect((await authorities()).filter((a) => a.parentId === root1.id || a.id === root1.id).every((a) => a.state === 'removed')).toBe(
      true,
    );
    expect(ca.current().roots).toHaveLength(1);
    expect(ca.current().bundleSequence).toBe(sequence + 2);

    // every step is a journaled, audited operation by the actor "auto-rotate"
    const audit = (await store.listAudit({ limit: 100 })).items
      .filter((e) => e.actor === 'auto-rotate')
      .map((e) => [e.action, e.at.getTime()]);
    expect(audit).toEqual(
      expect.arrayContaining([
        ['authority.rotate-intermediate', t0 + 50 * MIN],
        ['authority.prepare', t0 + 80 * MIN],
        ['authority.activate', t0 + 100 * MIN],
        ['authority.remove', t0 + 110 * MIN],
      ]),
    );
    expect(audit).toHaveLength(4);
    await rotator.stop();
  });

  it('activates a late preparation halfway to the old signer’s expiry, and blocks on external roots', () => {
    const record = (over: Partial<AuthorityRecord>): AuthorityRecord =>
      ({
        id: 'x',
        kind: 'intermediate',
        parentId: 'root-a',
        state: 'active',
        keyType: 'ec-p256',
        sealedKey: Buffer.alloc(1),
        notBefore: new Date(0),
        notAfter: new Date(600),
        createdAt: new Date(0),
        ...over,
      }) as AuthorityRecord;
    const rootA = record({ id: 'root-a', kind: 'root', parentId: null, notAfter: new Date(100_000) });
    const active = record({ id: 'int-a' });
    const p = { intermediateTtlMs: 600, keyType: 'ec-p256' as const };
    // prepared late, at 540 (past 5/6 = 500): activation waits until 540 + (600 - 540) / 2 = 570
    const late = [
      rootA,
      active,
      record({ id: 'root-b', kind: 'root', parentId: null, state: 'prepared', createdAt: new Date(540), notAfter: new Date(100_000) }),
      record({ id: 'int-b', parentId: 'root-b', state: 'prepared', createdAt: new Date(540), notAfter: new Date(1200) }),
    ];
    expect(planRotation(late, new Date(569), p).step).toMatchObject({ kind: 'wait', until: new Date(570) });
    expect(planRotation(late, new Date(570), p).step).toMatchObject({ kind: 'activate', id: 'int-b' });
    // an intermediate under an external root is never replaced by a self-signed one
    const external = [{ ...rootA, sealedKey: null }, active];
    expect(planRotation(external, new Date(300), p).step.kind).toBe('blocked');
    expect(planRotation(external, new Date(299), p).step.kind).toBe('wait');
  });
});

/** The real server with --auto-rotate and seconds-long CAs: real timers, real mTLS at every stage. */
describe('auto-rotation in a running server', () => {
  let dir: string;
  let t: TestServer;

  beforeAll(async () => {
    dir = tempDir();
    t = await startTestServer(join(dir, 'data'), [
      '--dev',
      '--auto-rotate',
      '--auto-rotate-check-interval',
      '100ms',
      '--intermediate-ttl',
      '9s',
      '--root-ttl',
      '12s',
    ]);
  });

  afterAll(async () => {
    await t?.close();
    removeDir(dir);
  });

  it('prepares at ≥ 1/2, activates at ≥ 5/6, removes the old root after its leaves expired, and mTLS keeps working', async () => {
    const devIssuer = await openDevTokenIssuer(join(dir, 'data'));
    const credentials = async (sa: string) =>
      workloadCredentials(
        t.client(),
        `spiffe://cluster.local/ns/auto/sa/${sa}`,
        await devIssuer.sign({ namespace: 'auto', serviceAccount: sa, ttlSeconds: 600 }),
      );
    const snapshot = () => t.server.ca.current();
    const waitFor = async <T>(what: string, probe: () => T | undefined, timeoutMs = 10_000): Promise<T> => {
      const deadline = Date.now() + timeoutMs;
      for (;;) {
        const value = probe();
        if (value) return value;
        if (Date.now() > deadline)
          throw new Error(`timed out waiting for ${what}: ${JSON.stringify(snapshot().authorities.map((a) => [a.id, a.state]))}`);
        await new Promise((resolve) => setTimeout(resolve, 50));
      }
    };
    const root1 = snapshot().authorities.find((a) => a.kind === 'root' && a.state === 'active')!;
    const int1 = snapshot().authorities.find((a) => a.kind === 'intermediate' && a.state === 'active')!;
    const a = await credentials('a');
    expect((await mutualTls(a, await credentials('b'))).ok).toBe(true);

    const root2 = await waitFor('prepare', () => snapshot().authorities.find((x) => x.kind === 'root' && x.state === 'prepared'));
    const dual = { clientCa: snapshot().rootsPem, serverCa: snapshot().rootsPem };
    expect(snapshot().roots).toHaveLength(2);
    expect((await mutualTls(a, await credentials('b'), dual)).ok).toBe(true);

    await waitFor('activate', () => snapshot().signer.record.parentId === root2.id);
    const b2 = await credentials('b');
    const issuerOf = (c: { cert: string }) => new X509Certificate(c.cert.split(/(?=-----BEGIN)/)[1]!);
    expect(issuerOf(b2).checkIssued(new X509Certificate(root2.certificateDer))).toBe(true);
    expect(issuerOf(a).checkIssued(new X509Certificate(root1.certificateDer))).toBe(true);
    const dual2 = { clientCa: snapshot().rootsPem, serverCa: snapshot().rootsPem };
    expect((await mutualTls(a, b2, dual2)).ok).toBe(true); // old root ↔ new root across the dual-root bundle
    expect((await mutualTls(b2, a, dual2)).ok).toBe(true);

    await waitFor('removal of the old root', () => snapshot().authorities.find((x) => x.id === root1.id && x.state === 'removed'), 15_000);
    expect(snapshot().roots.some((der) => der.equals(root1.certificateDer))).toBe(false);
    expect((await mutualTls(await credentials('a'), await credentials('b'))).ok).toBe(true);

    // the journal shows when each step happened: prepare ≥ 1/2, activate ≥ 5/6, remove ≥ the old leaves' expiry
    const audit = (await t.server.store.listAudit({ limit: 1000 })).items.filter((e) => e.actor === 'auto-rotate');
    const when = (action: string, target: (e: (typeof audit)[number]) => boolean) =>
      audit.find((e) => e.action === action && target(e))!.at.getTime();
    expect(when('authority.prepare', (e) => e.target === root2.id)).toBeGreaterThanOrEqual(lifetimePoint(int1, PREPARE_FRACTION));
    const activatedAt = when('authority.activate', (e) => (e.details as { rootId?: string }).rootId === root2.id);
    expect(activatedAt).toBeGreaterThanOrEqual(lifetimePoint(int1, ACTIVATE_FRACTION));
    expect(activatedAt).toBeLessThan(int1.notAfter.getTime());
    expect(when('authority.remove', (e) => e.target === root1.id)).toBeGreaterThanOrEqual(int1.notAfter.getTime());
  }, 20_000);
});
