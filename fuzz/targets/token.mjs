// @ts-check
// Target 2: bearer tokens, through bearerToken() and a real JWKS authenticator (jose underneath).
//
// The clock is fixed (2030-03-17) and the keys come from fuzz/corpus/jwt-keys.json, so tokens are
// byte-identical on every run (except ES256 signatures, which are randomized by design).
//
// Invariants per case:
//   - bearerToken() and authenticate() throw/reject only with AuthenticationError, and never with a
//     retryable one (the key set is static, so "key set unavailable" would be a lie);
//   - an accepted token carries a signature a trusted key made over exactly its signing input
//     (an unmodified base token, or a case that re-signed with a trusted key);
//   - an accepted token's claims are acceptable (iss, aud, exp, nbf, sub) and the identity returned
//     is exactly the one its `sub` names;
//   - unmodified base tokens are accepted (the harness is not vacuous).

import { constants, createHmac, createPrivateKey, createPublicKey, sign } from 'node:crypto';
import { performance } from 'node:perf_hooks';
import { wrongError } from '../lib/engine.mjs';
import { deepJsonText, mutateJsonObject, mutateString, NASTY_CHARS, weirdJsonValue } from '../lib/mutate.mjs';

export const TOKEN_NOW = 1_900_000_000;
const ISSUER = 'https://kubernetes.default.svc.cluster.local';
const AUDIENCE = 'istio-ca';
const TRUST_DOMAIN = 'cluster.local';
const ALLOWED_ALGS = new Set(['RS256', 'RS384', 'RS512', 'PS256', 'PS384', 'PS512', 'ES256', 'ES384']);
const CLOCK_TOLERANCE = 5;
const PRIVATE_MEMBERS = ['d', 'p', 'q', 'dp', 'dq', 'qi'];
const UNSIGNED = 'no trusted key signed this signing input';
const SA_SUBJECT =
  /^system:serviceaccount:([a-z0-9]([-a-z0-9]*[a-z0-9])?):([a-z0-9]([-a-z0-9]*[a-z0-9])?(\.[a-z0-9]([-a-z0-9]*[a-z0-9])?)*)$/;

const b64u = (value) => Buffer.from(typeof value === 'string' ? value : JSON.stringify(value)).toString('base64url');

function jwsSign(alg, input, key) {
  const hash = `sha${alg.slice(2)}`;
  if (alg.startsWith('RS')) return sign(hash, Buffer.from(input), key);
  if (alg.startsWith('PS'))
    return sign(hash, Buffer.from(input), { key, padding: constants.RSA_PKCS1_PSS_PADDING, saltLength: Number(alg.slice(2)) / 8 });
  if (alg.startsWith('ES')) return sign(hash, Buffer.from(input), { key, dsaEncoding: 'ieee-p1363' });
  throw new Error(`cannot sign ${alg}`);
}

function basePayload() {
  return {
    iss: ISSUER,
    sub: 'system:serviceaccount:app:api',
    aud: [AUDIENCE],
    exp: TOKEN_NOW + 3600,
    iat: TOKEN_NOW - 10,
    nbf: TOKEN_NOW - 10,
    'kubernetes.io': {
      namespace: 'app',
      serviceaccount: { name: 'api', uid: 'uid-1' },
      pod: { name: 'api-0', uid: 'pod-1' },
      node: { name: 'node-1' },
    },
  };
}

function claimValue(rng, key) {
  const now = TOKEN_NOW;
  const byKey = {
    iss: () => rng.pick([ISSUER + '/', ISSUER.toUpperCase(), 'https://evil.example', '', [ISSUER], ISSUER + '\0']),
    sub: () =>
      rng.pick([
        'system:serviceaccount:app:other',
        'system:serviceaccount:app:api:x',
        'system:serviceaccount:App:api',
        'system:serviceaccount::api',
        'system:serviceaccount:app:',
        'system:serviceaccounts:app',
        'system:serviceaccount:kube-system:default',
        'system:serviceaccount:a/b:c',
        `system:serviceaccount:${'a'.repeat(64)}:api`,
        'system:serviceaccount:app:a..b',
      ]),
    aud: () =>
      rng.pick([
        AUDIENCE,
        'kubernetes',
        [],
        ['kubernetes'],
        ['kubernetes', AUDIENCE],
        AUDIENCE.toUpperCase(),
        [[AUDIENCE]],
        { 0: AUDIENCE },
      ]),
    exp: () => rng.pick([now - 6, now - 4, now, now + 1, now + 1e9, 1e308, -1, 0, String(now + 3600), now + 0.5, null, 2 ** 53 + 1]),
    nbf: () => rng.pick([now + 6, now + 4, now + 3600, 0, -1, 1e308, String(now), null, now + 0.5]),
    iat: () => rng.pick([now + 3600, 0, 'yesterday', null, 1e308, -5]),
    'kubernetes.io': () =>
      rng.pick([
        null,
        'app',
        [],
        {},
        { namespace: 'other', serviceaccount: { name: 'api' } },
        { namespace: 'app', serviceaccount: { name: 'other' } },
        { namespace: 'app', serviceaccount: 'api' },
        { namespace: 'app', serviceaccount: { name: 'api' }, pod: { name: 7 } },
      ]),
  };
  return rng.bool(0.7) && Object.hasOwn(byKey, key) ? byKey[key]() : weirdJsonValue(rng);
}

function headerValue(rng, key) {
  const byKey = {
    alg: () =>
      rng.pick([
        'none',
        'None',
        'HS256',
        'HS512',
        'RS256',
        'RS384',
        'RS512',
        'PS256',
        'ES256',
        'ES384',
        'ES512',
        'EdDSA',
        'rs256',
        'RS256 ',
        '',
        'dir',
        'RSA-OAEP',
      ]),
    kid: () => rng.pick(['rsa-1', 'ec-1', 'rsa-2', 'unknown', '', 'rsa-1\0', '../../etc/passwd', 'x'.repeat(5000)]),
    typ: () => rng.pick(['JWT', 'at+jwt', 'JWE', '', 'jwt']),
    crit: () => rng.pick([['exp'], ['b64'], [], ['unknown'], 'exp', [1]]),
    b64: () => rng.pick([false, true, 'false']),
    jwk: () => ({ kty: 'RSA', n: 'AQAB', e: 'AQAB' }),
    jku: () => 'https://evil.example/jwks.json',
    x5c: () => ['MIIB'],
    zip: () => 'DEF',
    enc: () => 'A256GCM',
  };
  return rng.bool(0.75) && Object.hasOwn(byKey, key) ? byKey[key]() : weirdJsonValue(rng);
}

export async function tokenTarget(mods, jwtKeys, options = {}) {
  const { createJwksAuthenticator, bearerToken, AuthenticationError } = mods;
  const privateKey = (name) => createPrivateKey({ key: jwtKeys[name], format: 'jwk' });
  const publicJwk = (name, kid) => {
    const jwk = { ...jwtKeys[name] };
    for (const m of PRIVATE_MEMBERS) delete jwk[m];
    return kid ? { ...jwk, kid, use: 'sig' } : { ...jwk, use: 'sig' };
  };
  const keys = {
    'rsa-1': privateKey('trusted-rsa'),
    'ec-1': privateKey('trusted-ec'),
    'rsa-2': privateKey('trusted-rsa-2'),
    'attacker-rsa': privateKey('attacker-rsa'),
    'attacker-ec': privateKey('attacker-ec'),
  };
  const hmacSecret = createPublicKey(keys['rsa-1']).export({ format: 'pem', type: 'spki' });
  const authenticator = await createJwksAuthenticator({
    trustDomain: TRUST_DOMAIN,
    issuer: ISSUER,
    audiences: [AUDIENCE],
    jwks: { keys: { keys: [publicJwk('trusted-rsa', 'rsa-1'), publicJwk('trusted-ec', 'ec-1'), publicJwk('trusted-rsa-2')] } },
    now: () => new Date(TOKEN_NOW * 1000),
  });

  const makeToken = (header, payload, alg, key) => {
    const input = `${b64u(header)}.${b64u(payload)}`;
    return `${input}.${jwsSign(alg, input, key).toString('base64url')}`;
  };
  const bases = [
    { header: { alg: 'RS256', kid: 'rsa-1', typ: 'JWT' }, key: 'rsa-1' },
    { header: { alg: 'PS256', kid: 'rsa-1' }, key: 'rsa-1' },
    { header: { alg: 'RS512', kid: 'rsa-1' }, key: 'rsa-1' },
    { header: { alg: 'ES256', kid: 'ec-1' }, key: 'ec-1' },
    { header: { alg: 'RS256' }, key: 'rsa-2' }, // no kid: two RSA keys match, the authenticator tries each
  ].map((b) => {
    const payload = basePayload();
    const token = makeToken(b.header, payload, b.header.alg, keys[b.key]);
    const [h, p, s] = token.split('.');
    return { ...b, payload, token, signingInput: `${h}.${p}`, signature: Buffer.from(s, 'base64url') };
  });

  /** Signature for a mutated header/payload: kept (now wrong), re-made by a trusted or an attacker key, or forged. */
  function resign(rng, base, header, payload) {
    const how = rng.weighted([
      [40, 'keep'],
      [15, 'trusted'],
      [10, 'attacker-rsa'],
      [6, 'attacker-ec'],
      [8, 'hs256-public-key'],
      [8, 'none'],
      [5, 'empty'],
      [5, 'random'],
      [3, 'other-base'],
    ]);
    const encode = (h) => `${b64u(h)}.${b64u(payload)}`;
    switch (how) {
      case 'keep':
        return [`${encode(header)}.${base.signature.toString('base64url')}`, how, false];
      case 'trusted':
        return [`${encode(header)}.${jwsSign(base.header.alg, encode(header), keys[base.key]).toString('base64url')}`, how, true];
      case 'attacker-rsa': {
        const h = { ...header, alg: 'RS256' };
        return [`${encode(h)}.${jwsSign('RS256', encode(h), keys['attacker-rsa']).toString('base64url')}`, how, false];
      }
      case 'attacker-ec': {
        const h = { ...header, alg: 'ES256' };
        return [`${encode(h)}.${jwsSign('ES256', encode(h), keys['attacker-ec']).toString('base64url')}`, how, false];
      }
      case 'hs256-public-key': {
        const h = { ...header, alg: 'HS256' };
        return [`${encode(h)}.${createHmac('sha256', hmacSecret).update(encode(h)).digest('base64url')}`, how, false];
      }
      case 'none':
        return [`${encode({ ...header, alg: 'none' })}.`, how, false];
      case 'empty':
        return [`${encode(header)}.`, how, false];
      case 'random':
        return [`${encode(header)}.${rng.bytes(rng.pick([0, 1, 64, 256, 512])).toString('base64url')}`, how, false];
      default:
        return [`${encode(header)}.${rng.pick(bases).signature.toString('base64url')}`, how, false];
    }
  }

  function rawMutation(rng, token) {
    const parts = token.split('.');
    const op = rng.pick([
      'alphabet-flip',
      'string',
      'nasty-char',
      'drop-dot',
      'add-dot',
      'swap-segments',
      'dup-segment',
      'empty-segment',
      'extra-segments',
      'truncate',
      'case-flip',
      'latin1',
      'lone-surrogate',
      'last-char',
    ]);
    const B64U = 'ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_';
    const at = rng.int(token.length);
    switch (op) {
      case 'alphabet-flip':
        return [token.slice(0, at) + (token[at] === '.' ? '.' : rng.pick([...B64U])) + token.slice(at + 1), op];
      case 'string':
        return [mutateString(rng, token)[0], op];
      case 'nasty-char':
        return [token.slice(0, at) + rng.pick(NASTY_CHARS) + token.slice(at), op];
      case 'drop-dot':
        return [token.replace('.', ''), op];
      case 'add-dot':
        return [token.slice(0, at) + '.' + token.slice(at), op];
      case 'swap-segments':
        return [[parts[1], parts[0], ...parts.slice(2)].join('.'), op];
      case 'dup-segment':
        return [[parts[0], ...parts].join('.'), op];
      case 'empty-segment': {
        const copy = [...parts];
        copy[rng.int(copy.length)] = '';
        return [copy.join('.'), op];
      }
      case 'extra-segments':
        return [[...parts, ...Array.from({ length: rng.pick([1, 2]) }, () => rng.pick(parts))].join('.'), op];
      case 'truncate':
        return [token.slice(0, at), op];
      case 'case-flip':
        return [token.slice(0, at) + token.slice(at, at + 8).toUpperCase() + token.slice(at + 8), op];
      case 'latin1':
        return [token.slice(0, at) + Buffer.from([0x80 + rng.int(0x80)]).toString('latin1') + token.slice(at), op];
      case 'lone-surrogate':
        return [token.slice(0, at) + '\ud800' + token.slice(at), op];
      default: {
        // The last base64url character carries unused bits: other values decode to the same bytes.
        return [`${token.slice(0, -1)}${rng.pick([...B64U])}`, op];
      }
    }
  }

  function encodingCase(rng, base) {
    const [h, p, s] = base.token.split('.');
    const text = (value) => Buffer.from(value).toString('base64url');
    const op = rng.pick([
      'payload-not-json',
      'payload-array',
      'payload-string',
      'payload-null',
      'payload-deep',
      'payload-bom',
      'payload-invalid-utf8',
      'payload-duplicate-keys',
      'header-invalid-utf8',
      'header-not-object',
      'payload-proto',
    ]);
    const body = {
      'payload-not-json': () => [h, text('{"iss":'), s],
      'payload-array': () => [h, text('[]'), s],
      'payload-string': () => [h, text('"x"'), s],
      'payload-null': () => [h, text('null'), s],
      'payload-deep': () => [h, text(deepJsonText(rng.pick([100, 3000, 8000]))), s],
      'payload-bom': () => [h, text('\ufeff' + JSON.stringify(base.payload)), s],
      'payload-invalid-utf8': () => [
        h,
        Buffer.concat([Buffer.from('{"sub":"'), Buffer.of(0xff, 0xfe, 0xc3, 0x28), Buffer.from('"}')]).toString('base64url'),
        s,
      ],
      'payload-duplicate-keys': () => [
        h,
        text(JSON.stringify(base.payload).replace('{', '{"sub":"system:serviceaccount:kube-system:admin",')),
        s,
      ],
      'header-invalid-utf8': () => [
        Buffer.concat([Buffer.from('{"alg":"RS256","kid":"'), Buffer.of(0xed, 0xa0, 0x80), Buffer.from('"}')]).toString('base64url'),
        p,
        s,
      ],
      'header-not-object': () => [text('["RS256"]'), p, s],
      'payload-proto': () => [
        h,
        text(JSON.stringify(base.payload).replace('{', '{"__proto__":{"sub":"system:serviceaccount:kube-system:admin"},')),
        s,
      ],
    }[op]();
    return [body.join('.'), op];
  }

  function authorizationCase(rng, token) {
    return rng.pick([
      ['Bearer ' + token, 'canonical'],
      ['bearer   ' + token, 'lowercase scheme, spaces'],
      ['BEARER ' + token + '  ', 'trailing spaces'],
      ['Bearer\t' + token, 'tab'],
      ['Bearer ' + token + '\n', 'trailing newline'],
      ['Bearer', 'no token'],
      ['Bearer ', 'empty token'],
      ['', 'empty header'],
      ['   ', 'blank header'],
      ['Basic ' + token, 'wrong scheme'],
      ['Bearer ' + token + ' extra', 'two words'],
      ['Bearer ' + token + ',Bearer ' + token, 'two tokens'],
      [' Bearer ' + token, 'leading space'],
      ['Bearer\u00a0' + token, 'no-break space'],
      ['Bearer ' + token.replace(/\./g, ' . '), 'spaced dots'],
      ['Bearer ' + 'A'.repeat(rng.pick([16 * 1024, 16 * 1024 + 65, 1 << 20])), 'huge'],
      ['Bearer ' + ' '.repeat(50_000) + 'x', 'many spaces'],
      [undefined, 'absent'],
    ]);
  }

  function giantCase(rng, base) {
    const [h, p, s] = base.token.split('.');
    const mib = 1 << 20;
    return rng.pick([
      () => ['A'.repeat(mib) + `.${p}.${s}`, 'giant header segment (1 MiB)'],
      () => [`${h}.${'A'.repeat(mib)}.${s}`, 'giant payload segment (1 MiB)'],
      () => [`${h}.${p}.${'A'.repeat(mib)}`, 'giant signature (1 MiB)'],
      () => [`${h}.${b64u({ ...base.payload, pad: 'x'.repeat(12 * 1024) })}.${s}`, 'payload just under the size cap'],
      () => [`${h}.${p}.${s}`.padEnd(16 * 1024 + 1, 'A'), 'one byte over the size cap'],
      () => ['.'.repeat(rng.pick([2, 3, 1000])), 'dots only'],
      () => ['', 'empty'],
    ])();
  }

  function generate(rng) {
    const base = rng.pick(bases);
    const kind = rng.weighted([
      [3, 'unmodified'],
      [25, 'claims'],
      [18, 'header'],
      [22, 'raw'],
      [8, 'encoding'],
      [12, 'authorization'],
      [6, 'giant'],
      [6, 'both'],
    ]);
    const input = {
      token: base.token,
      authorization: /** @type {string | undefined} */ (undefined),
      legitSigned: false,
      unmodified: false,
      steps: [kind],
    };
    switch (kind) {
      case 'unmodified':
        input.unmodified = true;
        break;
      case 'claims':
      case 'header':
      case 'both': {
        let header = base.header;
        let payload = base.payload;
        for (let n = rng.range(1, 2); n > 0; n--) {
          if (kind !== 'header') {
            const [next, how] = mutateJsonObject(rng, payload, ['iss', 'sub', 'aud', 'exp', 'nbf', 'iat', 'kubernetes.io'], claimValue);
            payload = next;
            input.steps.push(`payload: ${how}`);
          }
          if (kind !== 'claims') {
            const [next, how] = mutateJsonObject(
              rng,
              header,
              ['alg', 'kid', 'typ', 'crit', 'b64', 'jwk', 'jku', 'x5c', 'zip', 'enc'],
              headerValue,
            );
            header = next;
            input.steps.push(`header: ${how}`);
          }
        }
        const [token, how, legit] = resign(rng, base, header, payload);
        Object.assign(input, { token, legitSigned: legit });
        input.steps.push(`signature: ${how}`);
        break;
      }
      case 'raw': {
        let token = base.token;
        for (let n = rng.range(1, 2); n > 0; n--) {
          const [next, how] = rawMutation(rng, token);
          token = next;
          input.steps.push(how);
        }
        input.token = token;
        break;
      }
      case 'encoding': {
        const [token, how] = encodingCase(rng, base);
        input.token = token;
        input.steps.push(how);
        break;
      }
      case 'authorization': {
        const [header, how] = authorizationCase(rng, base.token);
        input.authorization = header;
        input.unmodified = how === 'canonical' || how === 'lowercase scheme, spaces' || how === 'trailing spaces';
        input.steps.push(how);
        break;
      }
      default: {
        const [token, how] = giantCase(rng, base);
        input.token = token;
        input.steps.push(how);
        if (rng.bool(0.3)) input.authorization = `Bearer ${token}`;
      }
    }
    return input;
  }

  /** What an accepted token must look like (docs/architecture.md, the authenticator's documented options). */
  function acceptanceOracle(token, identity) {
    const problems = [];
    const [h, p, s] = token.split('.');
    const signed = bases.some((b) => b.signingInput === `${h}.${p}` && b.signature.equals(Buffer.from(s ?? '', 'base64url')));
    let header;
    let claims;
    try {
      header = JSON.parse(Buffer.from(h, 'base64url').toString('utf8'));
      claims = JSON.parse(Buffer.from(p, 'base64url').toString('utf8'));
    } catch {
      return ['accepted a token whose header or payload is not JSON'];
    }
    if (!signed) problems.push(UNSIGNED);
    if (!ALLOWED_ALGS.has(header.alg)) problems.push(`header alg ${JSON.stringify(header.alg)} is not allowed`);
    // RFC 7515 crit: only b64 (RFC 7797) is understood, and only b64=true leaves the payload encoded
    // as usual. (b64 outside crit has no effect, RFC 7797 §6.)
    const critOk = header.crit === undefined || (JSON.stringify(header.crit) === '["b64"]' && header.b64 === true);
    if (!critOk) problems.push(`header crit ${JSON.stringify(header.crit)} (b64 ${JSON.stringify(header.b64)})`);
    if (claims.iss !== ISSUER) problems.push(`iss ${JSON.stringify(claims.iss)}`);
    const aud = Array.isArray(claims.aud) ? claims.aud : [claims.aud];
    if (!aud.includes(AUDIENCE)) problems.push(`aud ${JSON.stringify(claims.aud)}`);
    if (typeof claims.exp !== 'number' || !(claims.exp > TOKEN_NOW - CLOCK_TOLERANCE)) problems.push(`exp ${JSON.stringify(claims.exp)}`);
    if (claims.nbf !== undefined && !(typeof claims.nbf === 'number' && claims.nbf <= TOKEN_NOW + CLOCK_TOLERANCE))
      problems.push(`nbf ${JSON.stringify(claims.nbf)}`);
    const m = SA_SUBJECT.exec(typeof claims.sub === 'string' ? claims.sub : '');
    if (!m) problems.push(`sub ${JSON.stringify(claims.sub)}`);
    else {
      const [ns, sa] = [m[1], m[3]];
      if (identity.namespace !== ns || identity.serviceAccount !== sa)
        problems.push(`identity ${identity.namespace}/${identity.serviceAccount} but sub says ${ns}/${sa}`);
      if (identity.spiffeId !== `spiffe://${TRUST_DOMAIN}/ns/${ns}/sa/${sa}`) problems.push(`identity.spiffeId ${identity.spiffeId}`);
    }
    const expiresAt = identity.expiresAt instanceof Date ? identity.expiresAt.getTime() : NaN;
    if (Number.isNaN(expiresAt)) problems.push(`identity.expiresAt is ${String(identity.expiresAt)} (exp ${JSON.stringify(claims.exp)})`);
    else if (typeof claims.exp === 'number' && expiresAt !== claims.exp * 1000)
      problems.push(`identity.expiresAt ${expiresAt} is not exp × 1000`);
    return problems;
  }

  async function execute(input) {
    const violations = [];
    const started = performance.now();
    let token = input.token;
    if (input.authorization !== undefined || input.steps.includes('absent')) {
      try {
        token = bearerToken(input.authorization);
      } catch (error) {
        if (!(error instanceof AuthenticationError)) violations.push(wrongError('bearerToken', error, 'AuthenticationError'));
        if (input.unmodified) violations.push(`a valid authorization header was refused: ${error?.message}`);
        return { outcome: `header ${error?.code ?? error?.name}`, violations, ms: performance.now() - started };
      }
    }
    let identity;
    try {
      identity = await authenticator.authenticate({ token, clusterId: 'Kubernetes' });
    } catch (error) {
      const ms = performance.now() - started;
      if (!(error instanceof AuthenticationError)) violations.push(wrongError('authenticate', error, 'AuthenticationError'));
      else if (error.retryable) violations.push(`retryable ${error.code} for a static key set: ${error.message}`);
      if (input.unmodified) violations.push(`an unmodified trusted token was refused: ${error?.code} ${error?.message}`);
      return { outcome: `${error?.code ?? error?.name}`, violations, ms };
    }
    const ms = performance.now() - started;
    // A case that re-signed with a trusted key legitimately carries a signature no base token has.
    const problems = acceptanceOracle(token, identity).filter((p) => !(input.legitSigned && p === UNSIGNED));
    const wrongIdentity = problems.filter((p) => p.startsWith('identity'));
    const mustRefuse = problems.filter((p) => !p.startsWith('identity'));
    if (mustRefuse.length > 0) violations.push(`accepted a token it must refuse: ${mustRefuse.join('; ')}`);
    if (wrongIdentity.length > 0) violations.push(`accepted token yields a wrong CallerIdentity: ${wrongIdentity.join('; ')}`);
    return { outcome: input.unmodified ? 'accepted (unmodified)' : 'accepted (mutated)', violations, ms };
  }

  return {
    name: 'token',
    /** A base token's claims with `patch` applied, RS256-signed by a trusted key (reproducers). */
    tokenFor: (patch) => makeToken(bases[0].header, { ...basePayload(), ...patch }, 'RS256', keys['rsa-1']),
    timeBoundMs: options.timeBoundMs ?? 50,
    hangMs: options.hangMs ?? 5000,
    retime: true,
    generate,
    execute,
    describe: (input) => ({
      base64: Buffer.from(input.authorization ?? input.token ?? '', 'utf8').toString('base64'),
      note: `${input.authorization !== undefined ? 'authorization header value' : 'token'} (utf8; clock ${new Date(TOKEN_NOW * 1000).toISOString()}); ${input.steps.join(' > ')}`,
    }),
  };
}
