import { randomBytes } from 'node:crypto';
import { readFileSync } from 'node:fs';
import { join } from 'node:path';
import { status, type ServiceError } from '@grpc/grpc-js';
import { createLocalJWKSet, decodeJwt, decodeProtectedHeader, jwtVerify, type JSONWebKeySet } from 'jose';
import { openDevTokenIssuer } from '../src/authn/index.js';
import { trustedRootsPem } from '../src/authority/snapshot.js';
import { CaClient } from '../src/client/ca-client.js';
import { databasePath } from '../src/app/data-dir.js';
import { openSqliteStore } from '../src/store/sqlite.js';
import { inspectSqliteStore } from '../src/store/sqlite.js';
import { checkInvariants } from '../src/authority/invariants.js';
import { IssuanceError } from '../src/authority/errors.js';
import { JwtSvidIssuance } from '../src/authority/jwt-svid-issuance.js';
import type { Store } from '../src/store/types.js';
import { spawnServer } from './support/process.js';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import type { SpiffeBundle } from '../src/spiffe/bundle.js';
import { adminCall } from './support/admin.js';
import { removeDir, startTestServer, tempDir, type TestServer } from './support/server.js';
import { TEST_ISSUER, TestTokenIssuer } from './support/tokens.js';

const id = (ns: string, sa: string) => `spiffe://cluster.local/ns/${ns}/sa/${sa}`;

let dir: string;
let issuer: TestTokenIssuer;
let t: TestServer;
const kek = randomBytes(32).toString('base64');

async function publishedBundle(server: TestServer): Promise<SpiffeBundle> {
  const response = await adminCall(
    { port: server.server.adminAddress.port, roots: server.server.ca.current().rootsPem },
    'GET',
    '/v1/bundle?format=spiffe',
  );
  expect(response.status).toBe(200);
  return response.json<SpiffeBundle>();
}

/**
 * Verification the way a relying party does it: against the jwt-svid keys of the published bundle
 * (as a plain JWKS: jose only accepts use "sig", so the SPIFFE use is dropped, as go-spiffe does).
 */
async function verifyAgainstBundle(token: string, bundle: SpiffeBundle, audience: string) {
  const jwks = { keys: bundle.keys.filter((k) => k.use === 'jwt-svid').map(({ use: _use, ...key }) => key) } as unknown as JSONWebKeySet;
  return jwtVerify(token, createLocalJWKSet(jwks), { audience, algorithms: ['ES256'], typ: 'JWT' });
}

async function mint(server: TestServer, ns: string, sa: string, audiences: readonly string[], ttlSeconds = 0) {
  return server.client().mintJwtSvid({ token: await issuer.token({ namespace: ns, serviceAccount: sa }), audiences, ttlSeconds });
}

beforeAll(async () => {
  dir = tempDir();
  issuer = await TestTokenIssuer.create(dir);
  t = await startTestServer(join(dir, 'data'), ['--jwks-file', issuer.jwksPath, '--jwt-issuer', TEST_ISSUER], { MESHCA_KEK: kek });
});

afterAll(async () => {
  await t?.close();
  removeDir(dir);
});

describe('MintJwtSvid', () => {
  it('mints an ES256 JWT-SVID for the caller that verifies against the published JWK, and records it without the token', async () => {
    const minted = await mint(t, 'shop', 'cart', ['https://api.example.com', 'billing']);
    const bundle = await publishedBundle(t);
    const { payload, protectedHeader } = await verifyAgainstBundle(minted.token, bundle, 'billing');
    expect(protectedHeader).toEqual({ alg: 'ES256', kid: minted.kid, typ: 'JWT' });
    expect(payload.sub).toBe(id('shop', 'cart'));
    expect(payload.aud).toEqual(['https://api.example.com', 'billing']);
    expect(payload.exp! - payload.iat!).toBe(300);
    const [record] = await t.server.store.listJwtSvids({ spiffeId: id('shop', 'cart'), limit: 10 });
    expect(record).toMatchObject({
      jti: payload.jti,
      kid: minted.kid,
      audiences: ['https://api.example.com', 'billing'],
      expiresAt: new Date(payload.exp! * 1000),
    });
    expect(JSON.stringify(record)).not.toContain(minted.token.split('.')[2]);
    const stored = ['meshca.db', 'meshca.db-wal'].map((f) => readFileSync(join(t.dataDir, f)).toString('latin1')).join('');
    expect(stored).not.toContain(minted.token.split('.')[2]);
    expect(stored).toContain(String(payload.jti));
  });

  it('publishes JWT keys with use jwt-svid and a kid, X.509 roots without one, with sequence and refresh hint', async () => {
    const bundle = await publishedBundle(t);
    const x509 = bundle.keys.filter((k) => k.use === 'x509-svid');
    const jwt = bundle.keys.filter((k) => k.use === 'jwt-svid');
    expect(x509.length).toBeGreaterThan(0);
    x509.forEach((k) => expect(k).not.toHaveProperty('kid'));
    expect(jwt.map((k) => k.kid)).toContain(t.server.jwt.current().signer.kid);
    jwt.forEach((k) => expect(k).toMatchObject({ kty: 'EC', crv: 'P-256', use: 'jwt-svid' }));
    jwt.forEach((k) => expect(k).not.toHaveProperty('d'));
    expect(bundle.spiffe_sequence).toBeGreaterThanOrEqual(2);
    expect(bundle.spiffe_refresh_hint).toBe(300);
  });

  it.each([
    { requested: 0, lifetime: 300, why: 'the default --jwt-svid-ttl' },
    { requested: 60, lifetime: 60, why: 'a requested lifetime' },
    { requested: 7200, lifetime: 3600, why: 'clamped to --jwt-svid-max-ttl' },
  ])('lifetime: $why', async ({ requested, lifetime }) => {
    const minted = await mint(t, 'shop', 'ttl', ['aud'], requested);
    const { payload } = await verifyAgainstBundle(minted.token, await publishedBundle(t), 'aud');
    expect(payload.exp! - payload.iat!).toBe(lifetime);
  });

  it.each([
    { why: 'no audience', sa: 'noaud', audiences: [] as string[], token: undefined, code: status.INVALID_ARGUMENT },
    { why: 'an empty audience', sa: 'emptyaud', audiences: [''], token: undefined, code: status.INVALID_ARGUMENT },
    { why: 'a token from another issuer', sa: 'forged', audiences: ['aud'], token: 'forged', code: status.UNAUTHENTICATED },
    { why: 'a denied identity', sa: 'denied', audiences: ['aud'], token: undefined, code: status.PERMISSION_DENIED },
  ])('refuses $why and records nothing', async ({ sa, audiences, token, code }) => {
    if (sa === 'denied')
      await t.server.store.revokeIdentity(id('shop', sa), { reason: 'keyCompromise', actor: 'test', at: new Date(), deny: true });
    const bearer =
      token === 'forged'
        ? await issuer.token({ namespace: 'shop', serviceAccount: sa, iss: 'https://evil.example' })
        : await issuer.token({ namespace: 'shop', serviceAccount: sa });
    const error = (await t
      .client()
      .mintJwtSvid({ token: bearer, audiences })
      .catch((e: unknown) => e)) as ServiceError;
    expect(error.code).toBe(code);
    expect(await t.server.store.listJwtSvids({ spiffeId: id('shop', sa), limit: 10 })).toEqual([]);
  });

  it('refuses a JWT-SVID when the deny commits after the request started but before its record', async () => {
    const victim = id('shop', 'raced');
    // The deny lands between signing and recording, where a check before signing would have passed.
    const racing = new Proxy(t.server.store, {
      get: (store, name, receiver) =>
        name === 'recordJwtSvid'
          ? async (...args: Parameters<Store['recordJwtSvid']>) => {
              await store.revokeIdentity(victim, { reason: 'keyCompromise', actor: 'test', at: new Date(), deny: true });
              return store.recordJwtSvid(...args);
            }
          : Reflect.get(store, name, receiver),
    });
    const issuance = new JwtSvidIssuance(t.server.jwt, racing, { defaultTtlMs: 300_000, maxTtlMs: 3_600_000 });
    const caller = {
      spiffeId: victim,
      namespace: 'shop',
      serviceAccount: 'raced',
      clusterId: 'Kubernetes',
      expiresAt: new Date(Date.now() + 3_600_000),
    };
    const error = await issuance.mint({ caller, audiences: ['aud'], ttlSeconds: 0 }).catch((e: unknown) => e);
    expect(error).toBeInstanceOf(IssuanceError);
    expect(error).toMatchObject({ code: 'ERR_IDENTITY_DENIED' });
    expect(await t.server.store.listJwtSvids({ spiffeId: victim, limit: 10 })).toEqual([]);
  });

  it('keeps its sealed signing key across restarts with the same KEK', async () => {
    const before = t.server.jwt.current().signer.kid;
    const [row] = (await t.server.store.loadJwtAuthorities()).filter((k) => k.kid === before);
    expect(row!.sealedKey.length).toBeGreaterThan(0);
    await t.close();
    t = await startTestServer(join(dir, 'data'), ['--jwks-file', issuer.jwksPath, '--jwt-issuer', TEST_ISSUER], { MESHCA_KEK: kek });
    expect(t.server.jwt.current().signer.kid).toBe(before);
    expect((await mint(t, 'shop', 'again', ['aud'])).kid).toBe(before);
    // meshca verify's jwt-keys invariant: ok with the KEK, failed with another one
    for (const [key, expected] of [
      [kek, 'ok'],
      [randomBytes(32).toString('base64'), 'failed'],
    ] as const) {
      const inspection = inspectSqliteStore(databasePath(join(dir, 'data')));
      try {
        const report = await checkInvariants(inspection, { kek: Buffer.from(key, 'base64') });
        expect(report.results.find((r) => r.name === 'jwt-keys')?.status).toBe(expected);
      } finally {
        inspection.close();
      }
    }
  });
});

describe('MintJwtSvid rate limit', () => {
  it('refuses an identity over --rate-limit-per-identity with RESOURCE_EXHAUSTED and records nothing for it; others still mint', async () => {
    const limitedDir = tempDir();
    const server = await startTestServer(
      join(limitedDir, 'data'),
      ['--jwks-file', issuer.jwksPath, '--jwt-issuer', TEST_ISSUER, '--rate-limit-per-identity', '1'],
      { MESHCA_KEK: kek },
    );
    try {
      // Burst 5 (5× the rate): the sixth call within the same second is refused.
      const outcomes = [];
      for (let i = 0; i < 6; i++)
        outcomes.push(
          await mint(server, 'busy', 'app', ['aud']).then(
            () => 'ok',
            (e: ServiceError) => e.code,
          ),
        );
      expect(outcomes).toEqual(['ok', 'ok', 'ok', 'ok', 'ok', status.RESOURCE_EXHAUSTED]);
      expect(await server.server.store.listJwtSvids({ spiffeId: id('busy', 'app'), limit: 10 })).toHaveLength(5);
      await expect(mint(server, 'calm', 'app', ['aud'])).resolves.toMatchObject({ spiffeId: id('calm', 'app') });
    } finally {
      await server.close();
      removeDir(limitedDir);
    }
  });
});

describe('JWT signing key rotation', () => {
  it('prepares, activates and retires keys automatically; every unexpired token keeps verifying against the bundle', async () => {
    const rotDir = tempDir();
    const server = await startTestServer(
      join(rotDir, 'data'),
      [
        '--jwks-file',
        issuer.jwksPath,
        '--jwt-issuer',
        TEST_ISSUER,
        '--jwt-key-ttl',
        '3s',
        '--jwt-svid-ttl',
        '1s',
        '--jwt-svid-max-ttl',
        '1s',
      ],
      { MESHCA_KEK: kek },
    );
    try {
      const outstanding: { token: string; exp: number }[] = [];
      const kids = new Set<string>();
      const deadline = Date.now() + 5500;
      while (Date.now() < deadline) {
        // On a loaded machine the timer may be late and the active key at its very end: UNAVAILABLE, retried.
        const minted = await mint(server, 'rot', 'app', ['aud']).catch((error: ServiceError) => {
          if (error.code !== status.UNAVAILABLE) throw error;
          return undefined;
        });
        if (!minted) continue;
        kids.add(decodeProtectedHeader(minted.token).kid!);
        outstanding.push({ token: minted.token, exp: minted.expiresAt.getTime() });
        const bundle = await publishedBundle(server);
        // Overlap: a retired key stays published as long as a token it signed is still valid.
        for (const o of outstanding.filter((o) => o.exp > Date.now() + 50)) await verifyAgainstBundle(o.token, bundle, 'aud');
        await new Promise((resolve) => setTimeout(resolve, 150));
      }
      expect(kids.size).toBeGreaterThanOrEqual(2);
      const states = (await server.server.store.loadJwtAuthorities()).map((k) => k.state);
      expect(states.filter((s) => s === 'active')).toHaveLength(1);
      expect(states).toContain('removed');
      const page = await server.server.store.listAudit({ limit: 100 });
      expect(page.items.map((e) => e.action)).toEqual(
        expect.arrayContaining(['jwt-authority.bootstrap', 'jwt-authority.prepare', 'jwt-authority.activate', 'jwt-authority.remove']),
      );
    } finally {
      await server.close();
      removeDir(rotDir);
    }
  });
});

describe('JWT-SVID records survive kill -9', () => {
  it('every JWT-SVID a client received is recorded after the server is killed mid-load', async () => {
    const crashDir = tempDir();
    const data = join(crashDir, 'data');
    const server = await spawnServer(data, ['--dev']);
    const dev = await openDevTokenIssuer(data);
    const inspect = openSqliteStore({ path: databasePath(data) });
    const client = new CaClient({
      address: `127.0.0.1:${server.grpcPort}`,
      rootsPem: trustedRootsPem(await inspect.loadAuthorities()).pem,
      serverName: 'localhost',
    });
    await inspect.close();
    const received: string[] = [];
    let killed = false;
    const worker = async (w: number) => {
      while (!killed) {
        const minted = await client
          .mintJwtSvid({ token: await dev.sign({ namespace: 'crash', serviceAccount: `w${w}`, ttlSeconds: 600 }), audiences: ['api'] })
          .catch(() => undefined);
        if (minted) received.push(String(decodeJwt(minted.token).jti));
        if (received.length >= 60 && !killed) {
          killed = true;
          server.child.kill('SIGKILL');
        }
      }
    };
    await Promise.all(Array.from({ length: 8 }, (_, w) => worker(w)));
    expect(await server.exited).toBe('SIGKILL');
    client.close();
    const store = openSqliteStore({ path: databasePath(data) });
    try {
      expect(await store.integrityCheck()).toBe('ok');
      const recorded = new Set((await store.listJwtSvids({ limit: 1000 })).map((r) => r.jti));
      expect(received.filter((jti) => !recorded.has(jti))).toEqual([]);
    } finally {
      await store.close();
      removeDir(crashDir);
    }
  }, 120_000);
});
