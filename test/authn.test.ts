import { chmod, mkdtemp, readFile, rm, stat, writeFile } from 'node:fs/promises';
import { createServer, type Server } from 'node:http';
import type { AddressInfo } from 'node:net';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import {
  base64url,
  CompactSign,
  exportJWK,
  exportSPKI,
  generateKeyPair,
  SignJWT,
  type CryptoKey,
  type JSONWebKeySet,
  type JWK,
  type JWTPayload,
} from 'jose';
import { afterAll, afterEach, beforeAll, describe, expect, it, vi } from 'vitest';
import {
  AuthenticationError,
  bearerToken,
  createClusterRouter,
  createJwksAuthenticator,
  openDevTokenIssuer,
  type AuthenticationErrorCode,
  type Authenticator,
  type JwksAuthenticatorOptions,
  type JwksSource,
} from '../src/authn/index.js';

const ISSUER = 'https://kubernetes.default.svc.cluster.local';
const TRUST_DOMAIN = 'cluster.local';
const NOW = new Date('2031-05-01T12:00:00Z');
const T = NOW.getTime() / 1000;

type Alg = 'RS256' | 'PS256' | 'ES256';
interface SigningKey {
  readonly alg: Alg;
  readonly kid: string;
  readonly privateKey: CryptoKey;
  readonly publicJwk: JWK;
}

let dir: string;
let jwksFile: string;
let rsaPublicPem: string;
const keys = new Map<string, SigningKey>(); // by kid; 'stranger' is not in any served set

async function makeKey(alg: Alg, kid: string): Promise<SigningKey> {
  const { privateKey, publicKey } = await generateKeyPair(alg, { extractable: true });
  const publicJwk = { ...(await exportJWK(publicKey)), kid, alg, use: 'sig' };
  if (kid === 'rsa-1') rsaPublicPem = await exportSPKI(publicKey);
  return { alg, kid, privateKey, publicJwk };
}

function jwksOf(...kids: string[]): JSONWebKeySet {
  return { keys: kids.map((kid) => keys.get(kid)!.publicJwk) };
}

beforeAll(async () => {
  dir = await mkdtemp(join(tmpdir(), 'meshca-authn-'));
  const made = await Promise.all([
    makeKey('RS256', 'rsa-1'),
    makeKey('PS256', 'ps-1'),
    makeKey('ES256', 'ec-1'),
    makeKey('ES256', 'ec-2'),
    makeKey('ES256', 'ec-new'),
    makeKey('ES256', 'stranger'),
  ]);
  for (const key of made) keys.set(key.kid, key);
  jwksFile = join(dir, 'jwks.json');
  await writeFile(jwksFile, JSON.stringify(jwksOf('rsa-1', 'ps-1', 'ec-1', 'ec-2')));
});

afterAll(async () => {
  await rm(dir, { recursive: true, force: true });
});

// ---- token building -------------------------------------------------------------------------

function claims(overrides: Record<string, unknown> = {}): JWTPayload {
  const base: JWTPayload = {
    iss: ISSUER,
    sub: 'system:serviceaccount:default:httpbin',
    aud: ['istio-ca'],
    iat: T,
    nbf: T,
    exp: T + 3600,
    'kubernetes.io': {
      namespace: 'default',
      serviceaccount: { name: 'httpbin', uid: 'sa-uid' },
      pod: { name: 'httpbin-7d9', uid: 'pod-uid' },
      node: { name: 'node-a', uid: 'node-uid' },
    },
  };
  // `undefined` removes a claim.
  return Object.fromEntries(Object.entries({ ...base, ...overrides }).filter(([, v]) => v !== undefined));
}

interface MintSpec {
  readonly kid?: string; // signing key; default ec-1
  readonly headerKid?: string | null; // kid written in the header (null: none); default = kid
  readonly claims?: Record<string, unknown>;
}

async function mint(spec: MintSpec = {}): Promise<string> {
  const key = keys.get(spec.kid ?? 'ec-1')!;
  const kid = spec.headerKid === undefined ? key.kid : spec.headerKid;
  const header = kid === null ? { alg: key.alg } : { alg: key.alg, kid };
  return new SignJWT(claims(spec.claims)).setProtectedHeader(header).sign(key.privateKey);
}

const b64json = (value: unknown): string => base64url.encode(JSON.stringify(value));

function flipSignatureByte(token: string): string {
  const [h, p, s] = token.split('.');
  const sig = base64url.decode(s!);
  sig[10]! ^= 0x01;
  return `${h}.${p}.${base64url.encode(sig)}`;
}

async function signRaw(payload: Uint8Array): Promise<string> {
  const key = keys.get('ec-1')!;
  return new CompactSign(payload).setProtectedHeader({ alg: 'ES256', kid: 'ec-1' }).sign(key.privateKey);
}

// ---- the table --------------------------------------------------------------------------------

type Expect = 'ok' | AuthenticationErrorCode;
interface Case {
  readonly name: string;
  /** The Authorization header value (undefined: header absent). */
  readonly authorization: () => Promise<string | undefined>;
  readonly expect: Expect;
}

const bearer = (token: () => Promise<string> | string) => async () => `Bearer ${await token()}`;
const minted = (spec: MintSpec = {}) => bearer(() => mint(spec));
const withClaims = (overrides: Record<string, unknown>) => minted({ claims: overrides });

const cases: readonly Case[] = [
  { name: 'good RS256', authorization: minted({ kid: 'rsa-1' }), expect: 'ok' },
  { name: 'good ES256', authorization: minted({ kid: 'ec-1' }), expect: 'ok' },
  { name: 'good PS256', authorization: minted({ kid: 'ps-1' }), expect: 'ok' },
  { name: 'lower-case bearer scheme', authorization: async () => `bearer ${await mint()}`, expect: 'ok' },
  { name: 'aud array containing istio-ca', authorization: withClaims({ aud: ['other', 'istio-ca'] }), expect: 'ok' },
  { name: 'aud as a plain string', authorization: withClaims({ aud: 'istio-ca' }), expect: 'ok' },
  { name: 'no kid, two EC keys match: each is tried', authorization: minted({ kid: 'ec-2', headerKid: null }), expect: 'ok' },
  { name: 'no kubernetes.io claim', authorization: withClaims({ 'kubernetes.io': undefined }), expect: 'ok' },
  { name: 'expired 3 s ago, within the 5 s tolerance', authorization: withClaims({ exp: T - 3 }), expect: 'ok' },
  { name: 'expired', authorization: withClaims({ exp: T - 60 }), expect: 'ERR_TOKEN_EXPIRED' },
  { name: 'nbf in the future', authorization: withClaims({ nbf: T + 60 }), expect: 'ERR_TOKEN_NOT_YET_VALID' },
  { name: 'iat 3 s ahead, within the 5 s tolerance', authorization: withClaims({ iat: T + 3 }), expect: 'ok' },
  { name: 'iat in the future', authorization: withClaims({ iat: T + 60 }), expect: 'ERR_TOKEN_NOT_YET_VALID' },
  { name: 'no exp', authorization: withClaims({ exp: undefined }), expect: 'ERR_TOKEN_MALFORMED' },
  { name: 'wrong iss', authorization: withClaims({ iss: 'https://evil.example' }), expect: 'ERR_TOKEN_ISSUER' },
  { name: 'no iss', authorization: withClaims({ iss: undefined }), expect: 'ERR_TOKEN_ISSUER' },
  { name: 'wrong aud', authorization: withClaims({ aud: ['kubernetes'] }), expect: 'ERR_TOKEN_AUDIENCE' },
  {
    name: 'alg none, unsigned',
    authorization: bearer(() => `${b64json({ alg: 'none', kid: 'ec-1' })}.${b64json(claims())}.`),
    expect: 'ERR_TOKEN_ALGORITHM',
  },
  {
    name: 'HS256 keyed with the RSA public key PEM (key confusion)',
    authorization: bearer(() =>
      new SignJWT(claims()).setProtectedHeader({ alg: 'HS256', kid: 'rsa-1' }).sign(new TextEncoder().encode(rsaPublicPem)),
    ),
    expect: 'ERR_TOKEN_ALGORITHM',
  },
  { name: 'signature byte flipped', authorization: bearer(async () => flipSignatureByte(await mint())), expect: 'ERR_TOKEN_SIGNATURE' },
  {
    name: 'no kid, signed by a key not in the set',
    authorization: minted({ kid: 'stranger', headerKid: null }),
    expect: 'ERR_TOKEN_SIGNATURE',
  },
  { name: 'garbage a.b.c', authorization: bearer(() => 'a.b.c'), expect: 'ERR_TOKEN_MALFORMED' },
  { name: 'non-base64url segments', authorization: bearer(() => 'e30=.e30=.sig'), expect: 'ERR_TOKEN_MALFORMED' },
  { name: 'two segments', authorization: bearer(() => 'eyJhbGciOiJFUzI1NiJ9.e30'), expect: 'ERR_TOKEN_MALFORMED' },
  {
    name: 'non-UTF-8 header',
    authorization: bearer(() => `${base64url.encode(new Uint8Array([0xff, 0xfe, 0x7b]))}.${b64json(claims())}.AAAA`),
    expect: 'ERR_TOKEN_MALFORMED',
  },
  {
    name: 'non-UTF-8 claims, validly signed',
    authorization: bearer(() => signRaw(new Uint8Array([0x7b, 0xff, 0xfe, 0x7d]))),
    expect: 'ERR_TOKEN_MALFORMED',
  },
  {
    name: 'claims are a JSON array, validly signed',
    authorization: bearer(() => signRaw(new TextEncoder().encode('[1]'))),
    expect: 'ERR_TOKEN_MALFORMED',
  },
  { name: 'giant token (> 16 KiB), validly signed', authorization: withClaims({ pad: 'x'.repeat(17_000) }), expect: 'ERR_TOKEN_MALFORMED' },
  { name: 'Authorization header missing', authorization: async () => undefined, expect: 'ERR_TOKEN_MISSING' },
  { name: 'Authorization header blank', authorization: async () => '  ', expect: 'ERR_TOKEN_MISSING' },
  { name: 'wrong scheme', authorization: async () => `Basic ${await mint()}`, expect: 'ERR_TOKEN_MALFORMED' },
  { name: 'Bearer without a token', authorization: async () => 'Bearer ', expect: 'ERR_TOKEN_MALFORMED' },
  { name: 'unknown kid', authorization: minted({ kid: 'stranger' }), expect: 'ERR_TOKEN_KEY_UNKNOWN' },
  { name: 'sub is a node', authorization: withClaims({ sub: 'system:node:x' }), expect: 'ERR_TOKEN_SUBJECT' },
  { name: 'sub is foo', authorization: withClaims({ sub: 'foo' }), expect: 'ERR_TOKEN_SUBJECT' },
  { name: 'no sub', authorization: withClaims({ sub: undefined }), expect: 'ERR_TOKEN_SUBJECT' },
  {
    name: 'sub has an extra segment',
    authorization: withClaims({ sub: 'system:serviceaccount:default:httpbin:x' }),
    expect: 'ERR_TOKEN_SUBJECT',
  },
  {
    name: 'invalid namespace chars',
    authorization: withClaims({ sub: 'system:serviceaccount:Bad_NS:httpbin' }),
    expect: 'ERR_TOKEN_SUBJECT',
  },
  {
    name: 'namespace longer than 63',
    authorization: withClaims({ sub: `system:serviceaccount:${'a'.repeat(64)}:httpbin` }),
    expect: 'ERR_TOKEN_SUBJECT',
  },
  {
    name: 'invalid service account chars',
    authorization: withClaims({ sub: 'system:serviceaccount:default:a/b' }),
    expect: 'ERR_TOKEN_SUBJECT',
  },
  {
    name: 'kubernetes.io namespace mismatch',
    authorization: withClaims({ 'kubernetes.io': { namespace: 'kube-system', serviceaccount: { name: 'httpbin' } } }),
    expect: 'ERR_TOKEN_SUBJECT',
  },
  {
    name: 'kubernetes.io service account mismatch',
    authorization: withClaims({ 'kubernetes.io': { namespace: 'default', serviceaccount: { name: 'admin' } } }),
    expect: 'ERR_TOKEN_SUBJECT',
  },
  { name: 'kubernetes.io claim not an object', authorization: withClaims({ 'kubernetes.io': 'default' }), expect: 'ERR_TOKEN_SUBJECT' },
];

function fileAuthenticator(overrides: Partial<JwksAuthenticatorOptions> = {}) {
  return createJwksAuthenticator({
    trustDomain: TRUST_DOMAIN,
    issuer: ISSUER,
    audiences: ['istio-ca'],
    jwks: { file: jwksFile },
    now: () => NOW,
    ...overrides,
  });
}

async function outcome(auth: Authenticator, authorization: string | undefined): Promise<Expect> {
  try {
    await auth.authenticate({ token: bearerToken(authorization), clusterId: 'Kubernetes' });
    return 'ok';
  } catch (error) {
    if (!(error instanceof AuthenticationError)) throw error;
    // Tokens never appear in messages (the token part, when there is one, is long and distinctive).
    const token = authorization?.split(' ')[1];
    if (token !== undefined && token.length > 20) expect(error.message).not.toContain(token);
    expect(error.retryable).toBe(false);
    return error.code;
  }
}

describe('JWKS authenticator: token validation table', () => {
  it.each(cases)('$name → $expect', async ({ authorization, expect: expected }) => {
    const auth = await fileAuthenticator();
    expect(await outcome(auth, await authorization())).toBe(expected);
  });

  it('maps a good token to the full caller identity', async () => {
    const auth = await fileAuthenticator();
    const identity = await auth.authenticate({ token: await mint({ kid: 'rsa-1' }), clusterId: 'east' });
    expect(identity).toEqual({
      namespace: 'default',
      serviceAccount: 'httpbin',
      spiffeId: 'spiffe://cluster.local/ns/default/sa/httpbin',
      clusterId: 'east',
      podName: 'httpbin-7d9',
      podUid: 'pod-uid',
      nodeName: 'node-a',
      expiresAt: new Date((T + 3600) * 1000),
    });
  });
});

// ---- cache ------------------------------------------------------------------------------------

describe('verified-token cache', () => {
  afterEach(() => {
    vi.restoreAllMocks();
  });

  it('answers a repeat token without verifying its signature again', async () => {
    const verify = vi.spyOn(globalThis.crypto.subtle, 'verify');
    let hits = 0;
    const auth = await fileAuthenticator({ onCacheHit: () => hits++ });
    const token = await mint({ kid: 'rsa-1' });
    const first = await auth.authenticate({ token, clusterId: 'a' });
    const second = await auth.authenticate({ token, clusterId: 'b' });
    expect(verify).toHaveBeenCalledTimes(1);
    expect(hits).toBe(1); // what meshca_token_cache_hits_total counts
    expect(auth.cacheStats()).toEqual({ size: 1, hits: 1, misses: 1 });
    expect(second).toEqual({ ...first, clusterId: 'b' });
  });

  it('never returns an expired entry, and re-verifies after the cache horizon', async () => {
    let now = NOW;
    const auth = await fileAuthenticator({ now: () => now, cacheTtlSeconds: 300 });
    const shortLived = await mint({ claims: { exp: T + 60 } });
    const longLived = await mint();
    await auth.authenticate({ token: shortLived, clusterId: '' });
    await auth.authenticate({ token: longLived, clusterId: '' });
    now = new Date(NOW.getTime() + 301_000);
    await expect(auth.authenticate({ token: shortLived, clusterId: '' })).rejects.toMatchObject({ code: 'ERR_TOKEN_EXPIRED' });
    await auth.authenticate({ token: longLived, clusterId: '' }); // past the horizon: a miss, still valid
    expect(auth.cacheStats()).toMatchObject({ hits: 0, misses: 4 });
  });

  it('is bounded (LRU) and can be disabled', async () => {
    const bounded = await fileAuthenticator({ cacheSize: 2 });
    const disabled = await fileAuthenticator({ cacheSize: 0 });
    const tokens = await Promise.all(['a', 'b', 'c'].map((jti) => mint({ claims: { jti } })));
    for (const token of [...tokens, tokens[0]!]) {
      await bounded.authenticate({ token, clusterId: '' });
      await disabled.authenticate({ token, clusterId: '' });
    }
    expect(bounded.cacheStats()).toEqual({ size: 2, hits: 0, misses: 4 }); // 'a' was evicted by 'c'
    expect(disabled.cacheStats()).toMatchObject({ size: 0, hits: 0 });
  });
});

// ---- key sources --------------------------------------------------------------------------------

describe('JWKS file source', () => {
  it.each([
    { name: 'missing file', content: undefined, message: /cannot read JWKS file .*ENOENT/ },
    { name: 'invalid JSON', content: '{', message: /is not valid JSON/ },
    { name: 'not a key set', content: '{"kty":"EC"}', message: /is not a JSON Web Key Set/ },
    { name: 'no usable key', content: '{"keys":[]}', message: /has no RSA or EC key/ },
    { name: 'a private key', content: 'PRIVATE', message: /public keys only/ },
    { name: 'bad key material', content: '{"keys":[{"kty":"EC","crv":"P-256","x":"AA","y":"AA"}]}', message: /invalid key material/ },
  ])('fails fast at start: $name', async ({ name, content, message }) => {
    const file = join(dir, `bad-${name.replaceAll(' ', '-')}.json`);
    const body = content === 'PRIVATE' ? JSON.stringify({ keys: [await exportJWK(keys.get('ec-1')!.privateKey)] }) : content;
    if (body !== undefined) await writeFile(file, body);
    const failure = fileAuthenticator({ jwks: { file } });
    await expect(failure).rejects.toBeInstanceOf(AuthenticationError);
    await expect(failure).rejects.toMatchObject({ code: 'ERR_JWKS_UNAVAILABLE', message });
  });

  it('re-reads the file on an unknown kid, at most once per cooldown, and on reload()', async () => {
    const file = join(dir, 'rotating.json');
    await writeFile(file, JSON.stringify(jwksOf('ec-1')));
    let now = NOW;
    const auth = await fileAuthenticator({ jwks: { file }, now: () => now });
    await writeFile(file, JSON.stringify(jwksOf('ec-1', 'ec-new')));
    const token = await mint({ kid: 'ec-new' });
    await expect(auth.authenticate({ token, clusterId: '' })).rejects.toMatchObject({ code: 'ERR_TOKEN_KEY_UNKNOWN' });
    now = new Date(NOW.getTime() + 31_000);
    await expect(auth.authenticate({ token, clusterId: '' })).resolves.toMatchObject({ namespace: 'default' });

    await writeFile(file, JSON.stringify(jwksOf('ec-1', 'ec-new', 'ec-2'))); // SIGHUP path: no cooldown
    await auth.reload();
    await expect(auth.authenticate({ token: await mint({ kid: 'ec-2' }), clusterId: '' })).resolves.toBeDefined();
    auth.close();
  });

  it('watches the file: within 15 s of a key being removed, its tokens (cached ones too) are refused', async () => {
    const file = join(dir, 'watched.json');
    await writeFile(file, JSON.stringify(jwksOf('ec-1', 'ec-2')));
    const auth = await fileAuthenticator({ jwks: { file } });
    const token = await mint({ kid: 'ec-2' });
    await auth.authenticate({ token, clusterId: '' });
    await auth.authenticate({ token, clusterId: '' });
    expect(auth.cacheStats().hits).toBe(1);
    await writeFile(file, JSON.stringify(jwksOf('ec-1')));
    const removedAt = Date.now();
    let result: Expect = 'ok';
    while (result === 'ok' && Date.now() - removedAt < 15_000) {
      await new Promise((r) => setTimeout(r, 250));
      result = await outcome(auth, `Bearer ${token}`);
    }
    auth.close();
    expect(result).toBe('ERR_TOKEN_KEY_UNKNOWN');
    expect(Date.now() - removedAt).toBeLessThan(15_000);
  });
});

interface JwksServer {
  readonly url: string;
  served: JSONWebKeySet;
  requests: number;
  up: boolean;
  close(): Promise<void>;
}

async function startJwksServer(served: JSONWebKeySet): Promise<JwksServer> {
  const state = { served, requests: 0, up: true };
  const server: Server = createServer((_req, res) => {
    state.requests += 1;
    if (!state.up) return res.writeHead(503).end();
    res.writeHead(200, { 'content-type': 'application/json' }).end(JSON.stringify(state.served));
  });
  await new Promise<void>((resolve) => server.listen(0, '127.0.0.1', resolve));
  const { port } = server.address() as AddressInfo;
  return Object.assign(state, {
    url: `http://127.0.0.1:${port}/openid/v1/jwks`,
    close: () => new Promise<void>((resolve) => server.close(() => resolve())),
  });
}

describe('JWKS URL source', () => {
  it('accepts a rotated-in kid after the cooldown, without letting a kid flood hammer the issuer', async () => {
    const server = await startJwksServer(jwksOf('rsa-1'));
    let now = NOW;
    const auth = await fileAuthenticator({ jwks: { url: server.url }, now: () => now });
    await auth.authenticate({ token: await mint({ kid: 'rsa-1' }), clusterId: '' });
    server.served = jwksOf('rsa-1', 'ec-new');
    const rotated = await mint({ kid: 'ec-new' });
    const flood = await Promise.all(Array.from({ length: 50 }, () => outcome(auth, `Bearer ${rotated}`)));
    expect(new Set(flood)).toEqual(new Set(['ERR_TOKEN_KEY_UNKNOWN'])); // still cooling down from the start-up fetch
    expect(server.requests).toBe(1);

    now = new Date(NOW.getTime() + 31_000);
    const afterCooldown = await Promise.all(Array.from({ length: 50 }, () => outcome(auth, `Bearer ${rotated}`)));
    expect(new Set(afterCooldown)).toEqual(new Set(['ok']));
    expect(server.requests).toBe(2); // one shared fetch for the whole burst
    await server.close();
  });

  it('keeps serving known keys while the issuer is down, and reports unknown kids as retryable', async () => {
    const server = await startJwksServer(jwksOf('ec-1'));
    let now = NOW;
    const auth = await fileAuthenticator({ jwks: { url: server.url }, now: () => now });
    server.up = false;
    now = new Date(NOW.getTime() + 31_000);
    const unknown = auth.authenticate({ token: await mint({ kid: 'ec-new' }), clusterId: '' });
    await expect(unknown).rejects.toMatchObject({ code: 'ERR_JWKS_UNAVAILABLE', retryable: true, message: /HTTP 503/ });
    await expect(auth.authenticate({ token: await mint({ kid: 'ec-1' }), clusterId: '' })).resolves.toBeDefined();
    await expect(auth.reload()).rejects.toMatchObject({ code: 'ERR_JWKS_UNAVAILABLE' });
    await server.close();
  });

  it('fails at start with a clear error when the issuer is down', async () => {
    const server = await startJwksServer(jwksOf('ec-1'));
    await server.close();
    await expect(fileAuthenticator({ jwks: { url: server.url } })).rejects.toMatchObject({
      code: 'ERR_JWKS_UNAVAILABLE',
      message: expect.stringMatching(/^cannot fetch JWKS URL http:\/\/127\.0\.0\.1:\d+\/openid\/v1\/jwks: ECONNREFUSED/),
    });
  });
});

// ---- dev token issuer ---------------------------------------------------------------------------

describe('dev token issuer', () => {
  it('creates its key 0600 in a 0700 directory, reopens the same key, and its tokens authenticate', async () => {
    const dataDir = join(dir, 'data', 'nested');
    const issuer = await openDevTokenIssuer(dataDir);
    const file = join(dataDir, 'dev-token-issuer.json');
    expect((await stat(file)).mode & 0o777).toBe(0o600);
    expect((await stat(dataDir)).mode & 0o777).toBe(0o700);
    expect((await openDevTokenIssuer(dataDir)).jwks).toEqual(issuer.jwks);
    expect(await readFile(file, 'utf8')).toContain('"d"');
    expect(JSON.stringify(issuer.jwks)).not.toContain('"d"');

    const auth = await createJwksAuthenticator({
      trustDomain: TRUST_DOMAIN,
      issuer: issuer.issuer,
      audiences: ['istio-ca'],
      jwks: { keys: issuer.jwks } satisfies JwksSource,
    });
    const token = await issuer.sign({
      namespace: 'istio-system',
      serviceAccount: 'ztunnel',
      ttlSeconds: 600,
      podName: 'ztunnel-x',
      nodeName: 'node-b',
    });
    const identity = await auth.authenticate({ token, clusterId: 'Kubernetes' });
    expect(identity).toMatchObject({
      spiffeId: 'spiffe://cluster.local/ns/istio-system/sa/ztunnel',
      podName: 'ztunnel-x',
      nodeName: 'node-b',
      clusterId: 'Kubernetes',
    });
    expect(identity.podUid).toMatch(/^[0-9a-f-]{36}$/);
    expect(issuer.issuer).toBe('meshca-dev');
  });

  it.each([
    { name: 'readable by others', spoil: (file: string) => chmod(file, 0o644), message: /group or others/ },
    { name: 'corrupt', spoil: (file: string) => writeFile(file, '{"version":1'), message: /not a meshca dev token issuer key/ },
  ])('refuses a key file that is $name', async ({ name, spoil, message }) => {
    const dataDir = join(dir, `spoiled-${name.replaceAll(' ', '-')}`);
    await openDevTokenIssuer(dataDir);
    await spoil(join(dataDir, 'dev-token-issuer.json'));
    await expect(openDevTokenIssuer(dataDir)).rejects.toThrow(message);
  });
});

// ---- cluster router -----------------------------------------------------------------------------

describe('cluster router', () => {
  const echo = (name: string): Authenticator => ({
    authenticate: async (ctx) => ({
      namespace: name,
      serviceAccount: 'sa',
      spiffeId: `spiffe://td/ns/${name}/sa/sa`,
      clusterId: ctx.clusterId,
      expiresAt: NOW,
    }),
  });
  const router = createClusterRouter(
    new Map([
      ['Kubernetes', echo('primary')],
      ['east', echo('east')],
    ]),
    'Kubernetes',
  );

  it.each([
    { clusterId: '', routed: { namespace: 'primary', clusterId: 'Kubernetes' } },
    { clusterId: 'Kubernetes', routed: { namespace: 'primary', clusterId: 'Kubernetes' } },
    { clusterId: 'east', routed: { namespace: 'east', clusterId: 'east' } },
  ])('routes clusterid "$clusterId"', async ({ clusterId, routed }) => {
    await expect(router.authenticate({ token: 't', clusterId })).resolves.toMatchObject(routed);
  });

  it('rejects an unknown cluster, and a default with no authenticator', async () => {
    await expect(router.authenticate({ token: 't', clusterId: 'west' })).rejects.toMatchObject({ code: 'ERR_CLUSTER_UNKNOWN' });
    expect(() => createClusterRouter(new Map(), 'Kubernetes')).toThrow(/no authenticator/);
  });
});
