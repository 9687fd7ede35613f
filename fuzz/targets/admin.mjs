// @ts-check
// Target 4: admin API JSON bodies, through Fastify's inject() on a real admin app over a real
// SQLite store in a temp dir (a bootstrapped CA with a few issued certificates to revoke).
//
// Routes: POST /v1/authorities/prepare, /v1/authorities/import, /v1/certificates/:serial/revoke,
// /v1/identities/revoke; random/mutated bodies, content types, serials, methods and tokens.
//
// Invariants per case:
//   - the status is one of the documented 200, 201, 400, 401, 404, 409, 413, 415 (never 500);
//   - a 4xx reply is a JSON { code, message } error body;
//   - a 4xx wrote nothing: no authority, bundle sequence, deny-list or revocation change and no
//     audit event, except the audit event of a failed authentication on a 401;
//   - no case hangs (engine).

import { generateKeyPairSync, randomBytes } from 'node:crypto';
import { mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { performance } from 'node:perf_hooks';
import { deepJsonText, mutateJsonObject, mutateString, NASTY_CHARS, weirdJsonValue } from '../lib/mutate.mjs';

export const ADMIN_STATUSES = new Set([200, 201, 400, 401, 404, 409, 413, 415]);
export const ADMIN_TOKEN = 'fuzz-admin-token-' + 'x'.repeat(24);
const TOKEN = ADMIN_TOKEN;
const REASONS = ['unspecified', 'keyCompromise', 'affiliationChanged', 'superseded', 'cessationOfOperation'];
const AUTH_AUDIT_ACTION = 'admin.authenticate';
const BODY_LIMIT = 1024 * 1024;
const IMPORT_BODY_LIMIT = 512 * 1024;

const pemOf = (der, label) => `-----BEGIN ${label}-----\n${der.toString('base64').replace(/.{64}/g, '$&\n')}\n-----END ${label}-----\n`;

const ORDINARY_TTLS = new Set([undefined, '10y', '1y', '8760h', '30d', '720h', '20y', '2y', '11y', '1h30m']);
const scalar = (v) => (Array.isArray(v) && v.length === 1 ? v[0] : v); // the admin API's ajv coerces [x] to x

/**
 * How expensive a prepare body would be if the schema lets it through: 'ordinary' (everyday values,
 * ~40 ms of EC key generation), 'rsa' (RSA key generation, ~0.5 s), or undefined (edge cases, or
 * the schema refuses it anyway).
 */
function prepareCost(body) {
  if (body === null) return 'ordinary';
  if (typeof body !== 'object' || Array.isArray(body)) return undefined;
  if (!Object.keys(body).every((k) => ['keyType', 'rootTtl', 'intermediateTtl'].includes(k))) return undefined;
  const keyType = scalar(body.keyType);
  if (typeof keyType === 'string' && keyType.startsWith('rsa-')) return 'rsa';
  const ordinary =
    [undefined, 'ec-p256', 'ec-p384'].includes(keyType) &&
    ORDINARY_TTLS.has(scalar(body.rootTtl)) &&
    ORDINARY_TTLS.has(scalar(body.intermediateTtl));
  return ordinary ? 'ordinary' : undefined;
}

export async function adminTarget(mods, pluginCa, options = {}) {
  const {
    openSqliteStore,
    CertificateAuthority,
    Inventory,
    RevocationService,
    Metrics,
    buildAdminApi,
    IssuanceService,
    IssuancePolicy,
    pino,
  } = mods;
  const dir = mkdtempSync(join(tmpdir(), 'meshca-fuzz-admin-'));
  const logger = pino({ level: 'silent' });
  const store = openSqliteStore({ path: join(dir, 'meshca.db') });
  const kek = randomBytes(32);
  const ca = await CertificateAuthority.open({
    store,
    kek,
    logger,
    trustDomain: 'cluster.local',
    keyType: 'ec-p256',
    rootTtlMs: 10 * 365 * 86_400_000,
    intermediateTtlMs: 365 * 86_400_000,
  });
  const issuance = new IssuanceService(
    ca,
    store,
    new IssuancePolicy({ defaultTtlMs: 86_400_000, maxTtlMs: 30 * 86_400_000, backdateMs: 60_000 }),
  );
  const serials = [];
  const identities = ['spiffe://cluster.local/ns/fuzz/sa/a', 'spiffe://cluster.local/ns/fuzz/sa/b', 'spiffe://cluster.local/ns/other/sa/c'];
  for (let i = 0; i < 12; i++) {
    const { publicKey } = generateKeyPairSync('ec', { namedCurve: 'P-256' });
    const spkiDer = publicKey.export({ format: 'der', type: 'spki' });
    const issued = await issuance.issueProfile({
      spkiDer,
      uris: [identities[i % identities.length]],
      dnsNames: [],
      ttlMs: 86_400_000,
      callerId: 'fuzz',
      rsaKey: false,
    });
    serials.push(issued.serialHex);
  }
  const revocation = new RevocationService(ca, store, kek, { crlValidityMs: 86_400_000 });
  const app = await buildAdminApi({
    ca,
    inventory: new Inventory(store),
    revocation,
    adminToken: TOKEN,
    clientIds: [],
    // The lockout is its own feature with its own test; here it would turn every 401 into 429s.
    maxAuthFailuresPerMinute: 1_000_000_000,
    logger,
    metrics: new Metrics({ processMetrics: false }),
    bodyLimitBytes: BODY_LIMIT,
    requestTimeoutMs: 30_000,
    refreshHintSeconds: 300,
  });
  await app.ready();

  const templates = {
    prepare: (rng) =>
      rng.pick([
        {
          keyType: rng.pick(['ec-p256', 'ec-p384']),
          rootTtl: rng.pick(['10y', '1y', '8760h']),
          intermediateTtl: rng.pick(['1y', '30d', '720h']),
        },
        {},
        { keyType: 'rsa-2048' },
        null,
      ]),
    import: () => ({ ...pluginCa }),
    revoke: (rng) => ({ reason: rng.pick(REASONS) }),
    identities: (rng) => ({ spiffeId: rng.pick(identities), reason: rng.pick(REASONS), deny: rng.bool() }),
  };
  const KEYS = {
    prepare: ['keyType', 'rootTtl', 'intermediateTtl'],
    import: ['caCert', 'caKey', 'certChain', 'rootCert'],
    revoke: ['reason'],
    identities: ['spiffeId', 'reason', 'deny'],
  };

  function memberValue(rng, key) {
    const pems = Object.values(pluginCa);
    const byKey = {
      keyType: () => rng.pick(['rsa-1024', 'EC-P256', 'ec-p256 ', 'ed25519', 'rsa-4096x', '', 'ec-p521', 1, ['ec-p256']]),
      rootTtl: () =>
        rng.pick([
          '0s',
          '1ms',
          '0.5s',
          '1s',
          '99999999999999999999999999999y',
          '1h30m',
          '-1h',
          '1e3s',
          '10',
          'y',
          '1.5.5h',
          '\u0663s',
          '1y'.repeat(16),
          '100000y',
          '20y',
        ]),
      intermediateTtl: () => rng.pick(['0s', '1ms', '11y', '99999999999999999999999999999y', '1000000h', '', '2y', '0.0001s']),
      reason: () => rng.pick(['KEYCOMPROMISE', 'removeFromCRL', 'certificateHold', '', 'keyCompromise ', 'toString', '__proto__', 1, null]),
      deny: () => rng.pick(['true', 'false', 1, 0, null, 'yes', [], [true]]),
      spiffeId: () =>
        rng.pick([
          'spiffe://cluster.local',
          'spiffe://CLUSTER.local/ns/a/sa/b',
          'spiffe://cluster.local/ns/fuzz/sa/a/',
          'spiffe://cluster.local/ns/fuzz/sa/a?x',
          'spiffe://cluster.local/ns/%66uzz/sa/a',
          'spiffe://cluster.local/ns/../sa/a',
          'spiffe://cluster.local:443/ns/fuzz/sa/a',
          'spiffe://other.domain/ns/fuzz/sa/a',
          'spiffe://cluster.local/' + 'a'.repeat(2040),
          'spiffe://cluster.local/' + 'a'.repeat(2100),
          'spiffe://cluster.local/ns/fuzz/sa/\u00e9',
          'spiffe://\ud800',
          mutateString(rng, rng.pick(identities))[0],
        ]),
      caCert: () => rng.pick(pems),
      caKey: () => rng.pick(pems),
      certChain: () => rng.pick(pems) + rng.pick(pems),
      rootCert: () => rng.pick(pems),
    };
    if (['caCert', 'caKey', 'certChain', 'rootCert'].includes(key) && rng.bool(0.5)) {
      return rng.pick([
        () => pluginCa[key].slice(0, rng.int(pluginCa[key].length)),
        () => pluginCa[key].replace(/[A-Za-z0-9+/]{8}/, (m) => mutateString(rng, m)[0]),
        () => pluginCa[key].replace(/\n/g, '\r\n'),
        () => pluginCa[key] + pluginCa[key],
        () => pemOf(rng.bytes(rng.range(1, 600)), rng.pick(['CERTIFICATE', 'PRIVATE KEY', 'EC PRIVATE KEY', 'RSA PRIVATE KEY'])),
        () => 'x'.repeat(rng.pick([65_536, 65_537])),
        () => '-----BEGIN CERTIFICATE-----\n'.repeat(2000),
      ])();
    }
    return rng.bool(0.7) && Object.hasOwn(byKey, key) ? byKey[key]() : weirdJsonValue(rng);
  }

  function serialFor(rng) {
    const real = rng.pick(serials);
    return rng.weighted([
      [30, real],
      [5, real.toUpperCase()],
      [5, real.match(/../g)?.join(':') ?? real],
      [5, '000' + real],
      [10, randomBytes(16).toString('hex')],
      [3, ''],
      [3, 'zz'],
      [3, '%00'],
      [3, '..%2F..%2Fauthorities'],
      [3, 'a'.repeat(rng.pick([80, 81, 120, 121, 5000]))],
      [3, ':::'],
      [3, '0'],
      [3, '-1'],
      [3, [...Buffer.from(rng.pick(NASTY_CHARS))].map((b) => '%' + b.toString(16).padStart(2, '0')).join('')],
    ]);
  }

  function rawBody(rng, json, route) {
    const limit = route === 'import' ? IMPORT_BODY_LIMIT : BODY_LIMIT;
    return rng.pick([
      () => ['', 'empty body'],
      () => ['null', 'null'],
      () => ['[]', 'array'],
      () => ['"x"', 'string'],
      () => ['1', 'number'],
      () => ['{', 'truncated'],
      () => [json.slice(0, rng.int(json.length)), 'cut'],
      () => [json + json, 'two documents'],
      () => [json + ' garbage', 'trailing garbage'],
      () => [mutateString(rng, json)[0], 'string-mutated JSON'],
      () => [deepJsonText(rng.pick([100, 5000, 100_000])), 'deep array'],
      () => [deepJsonText(rng.pick([100, 5000, 50_000]), '{"a":', '}').replace(/\}+$/, (m) => '1' + m), 'deep object'],
      () => ['{"__proto__":{"keyType":"ec-p256"}}', '__proto__'],
      () => ['{"constructor":{"prototype":{"reason":"keyCompromise"}}}', 'constructor.prototype'],
      () => ['\ufeff' + json, 'BOM'],
      () => [Buffer.from(json, 'utf16le'), 'UTF-16'],
      () => [
        Buffer.concat([Buffer.from(json.slice(0, -1)), Buffer.from(',"x":"'), Buffer.of(0xff, 0xfe, 0xc3), Buffer.from('"}')]),
        'invalid UTF-8',
      ],
      () => [json.replace('{', '{"reason":"keyCompromise","reason":1,'), 'duplicate keys'],
      () => ['{"a":' + '1'.repeat(rng.pick([400, 5000])) + '}', 'huge number'],
      () => ['{"x":"' + 'a'.repeat(limit + 1) + '"}', 'over the body limit'],
      () => ['{"x":"' + 'a'.repeat(limit - 64) + '"}', 'just under the body limit'],
    ])();
  }

  function generate(rng) {
    const route = rng.weighted([
      [28, 'prepare'],
      [20, 'import'],
      [25, 'revoke'],
      [22, 'identities'],
      [5, 'allow'],
    ]);
    const steps = [route];
    if (route === 'allow') return allowCase(rng, steps);
    let url =
      route === 'prepare'
        ? '/v1/authorities/prepare'
        : route === 'import'
          ? '/v1/authorities/import'
          : route === 'identities'
            ? '/v1/identities/revoke'
            : `/v1/certificates/${serialFor(rng)}/revoke`;
    const kind = rng.weighted([
      [4, 'template'],
      [50, 'members'],
      [22, 'raw'],
      [8, 'content-type'],
      [6, 'auth'],
      [5, 'url'],
      [5, 'method'],
    ]);
    steps.push(kind);
    let body = templates[route](rng);
    let payload;
    if (kind === 'members' && body !== null) {
      for (let n = rng.range(1, 3); n > 0; n--) {
        const [next, how] = mutateJsonObject(rng, body, KEYS[route], memberValue);
        body = next;
        steps.push(how);
      }
    }
    // An ordinary valid prepare costs ~100 ms of key generation and grows the store; most mutations
    // leave one valid (drop a member, swap a key type), so keep only a few of them.
    const cost = route === 'prepare' ? prepareCost(body) : undefined;
    if ((cost === 'ordinary' && rng.bool(0.9)) || (cost === 'rsa' && rng.bool(0.97))) {
      body = { ...body, keyType: 'ec-p256 ' };
      steps.push('made invalid (cost)');
    }
    try {
      payload = JSON.stringify(body);
    } catch {
      payload = '{}';
    }
    if (kind === 'raw') {
      const [raw, how] = rawBody(rng, payload, route);
      payload = raw;
      steps.push(how);
    }
    /** @type {Record<string, string>} */
    const headers = { authorization: `Bearer ${TOKEN}`, 'content-type': 'application/json' };
    if (kind === 'content-type') {
      const type = rng.pick([
        'text/plain',
        'application/json; charset=utf-8',
        'application/json; charset=latin1',
        'application/json; charset=utf-16',
        'application/JSON',
        'application/x-www-form-urlencoded',
        'multipart/form-data; boundary=x',
        '',
        undefined,
        'application/json, text/plain',
        'application/merge-patch+json',
        'application/json;',
        '*/*',
        'application/jsonx',
      ]);
      if (type === undefined) delete headers['content-type'];
      else headers['content-type'] = type;
      steps.push(`content-type ${JSON.stringify(type)}`);
    }
    if (kind === 'auth') {
      const auth = rng.pick([
        undefined,
        'Bearer wrong',
        `bearer ${TOKEN}`,
        `Bearer   ${TOKEN}  `,
        `Basic ${TOKEN}`,
        TOKEN,
        `Bearer ${TOKEN}x`,
        `Bearer ${TOKEN.slice(0, -1)}`,
        `Bearer ${'a'.repeat(100_000)}`,
        'Bearer',
        `Bearer ${TOKEN} ${TOKEN}`,
        `Bearer ${TOKEN.toUpperCase()}`,
      ]);
      if (auth === undefined) delete headers.authorization;
      else headers.authorization = auth;
      steps.push(`authorization ${JSON.stringify(auth?.slice(0, 40))}`);
    }
    if (kind === 'url') {
      const how = rng.pick(['trailing slash', 'double slash', 'query', 'proto query', 'encoded', 'case']);
      url = {
        'trailing slash': url + '/',
        'double slash': url.replace('/v1/', '//v1/'),
        query: url + '?force=true&x=1',
        'proto query': url + '?__proto__[x]=1&constructor=1',
        encoded: url.replace('v1', '%76%31'),
        case: url.toUpperCase(),
      }[how];
      steps.push(how);
    }
    const method = kind === 'method' ? rng.pick(['GET', 'PUT', 'PATCH', 'DELETE', 'OPTIONS', 'HEAD']) : 'POST';
    if (kind === 'method') steps.push(method);
    return { method, url, headers, payload, steps };
  }

  /** DELETE /v1/identities/deny/:spiffeId, the way back from identities/revoke with deny=true. */
  function allowCase(rng, steps) {
    const id = rng.bool(0.5) ? rng.pick(identities) : memberValue(rng, 'spiffeId');
    const encoded =
      typeof id === 'string'
        ? [...Buffer.from(id)]
            .map((b) => (/[A-Za-z0-9._~-]/.test(String.fromCharCode(b)) ? String.fromCharCode(b) : '%' + b.toString(16).padStart(2, '0')))
            .join('')
        : 'x';
    steps.push(JSON.stringify(typeof id === 'string' ? id.slice(0, 80) : id));
    return {
      method: 'DELETE',
      url: `/v1/identities/deny/${rng.bool(0.9) ? encoded : encoded.replace(/%2F/g, '/')}`,
      headers: { authorization: `Bearer ${TOKEN}` },
      payload: undefined,
      steps,
    };
  }

  async function snapshot() {
    const [audit, authorities, sequence, denied, usage] = await Promise.all([
      store.listAudit({ limit: 1 }),
      store.loadAuthorities(),
      store.bundleSequence(),
      store.listDenied(),
      store.authorityUsage(new Date()),
    ]);
    let revoked = 0;
    for (const u of usage.values()) revoked += u.revoked;
    return {
      lastAuditId: audit.items[0]?.id ?? 0,
      authorities: authorities.map((a) => `${a.id}:${a.state}`).join(','),
      bundleSequence: sequence,
      denied: denied
        .map((d) => d.spiffeId)
        .sort()
        .join(','),
      revoked,
    };
  }

  async function execute(input) {
    const violations = [];
    const before = await snapshot();
    const started = performance.now();
    const res = await app.inject({ method: input.method, url: input.url, headers: input.headers, payload: input.payload });
    const ms = performance.now() - started;
    const status = res.statusCode;
    if (!ADMIN_STATUSES.has(status))
      violations.push(`status ${status} is not one of ${[...ADMIN_STATUSES].join(', ')}: ${res.body.slice(0, 300)}`);
    if (status >= 400 && input.method !== 'HEAD') {
      let body;
      try {
        body = JSON.parse(res.body);
      } catch {
        body = undefined;
      }
      if (typeof body?.code !== 'string' || typeof body?.message !== 'string')
        violations.push(`status ${status} without a JSON { code, message } body: ${res.body.slice(0, 200)}`);
    }
    if (status >= 400 && status < 500) {
      await new Promise((resolve) => setImmediate(resolve)); // the failed-authentication audit is written asynchronously
      const after = await snapshot();
      const fresh = (await store.listAudit({ limit: 50 })).items.filter((e) => e.id > before.lastAuditId);
      const unexpected = fresh.filter((e) => !(status === 401 && e.action === AUTH_AUDIT_ACTION));
      if (unexpected.length > 0)
        violations.push(`status ${status} but audit events were written: ${unexpected.map((e) => `${e.action} ${e.target}`).join(', ')}`);
      for (const key of ['authorities', 'bundleSequence', 'denied', 'revoked']) {
        if (after[key] !== before[key])
          violations.push(
            `status ${status} but ${key} changed: ${String(before[key]).slice(0, 100)} -> ${String(after[key]).slice(0, 100)}`,
          );
      }
    }
    return { outcome: `${input.steps[0]} ${status}`, violations, ms };
  }

  return {
    name: 'admin',
    timeBoundMs: options.timeBoundMs ?? 5000,
    hangMs: options.hangMs ?? 30_000,
    retime: false,
    generate,
    execute,
    describe: (input) => ({
      base64: Buffer.from(input.payload ?? '').toString('base64'),
      note: `${input.method} ${input.url.length > 160 ? input.url.slice(0, 160) + '…' : input.url} headers ${JSON.stringify(input.headers).slice(0, 200)}; base64 is the body; ${input.steps.join(' > ')}`,
    }),
    app,
    async close() {
      await app.close();
      await store.close();
      rmSync(dir, { recursive: true, force: true });
    },
  };
}
