// @ts-check
// Target 5: end to end over TLS gRPC. A real meshca (startServer: SQLite, JWKS file, TLS) gets
// CreateCertificate calls carrying a valid token and a CSR from the CSR target's generator
// (PEM-wrapped when it made DER), or an unmodified seed with an odd validity_duration, or an
// unmodified seed from a caller with a broken token, an unknown clusterid or impersonation.
//
// Invariants per case:
//   - a refusal is INVALID_ARGUMENT, PERMISSION_DENIED, UNAUTHENTICATED or RESOURCE_EXHAUSTED, and
//     UNAUTHENTICATED for a broken caller;
//   - success only when the in-process pipeline (parse, policy, signature) accepts the CSR, and a
//     CSR it accepts is issued (unless over the transport's 16 KiB CSR limit);
//   - a success wrote exactly one certificate row (the leaf's), a refusal wrote none.
// After the batch (finalCheck): an unmodified CSR is still issued, and the row count grew by
// exactly the number of successes.

import { constants, randomBytes, sign, X509Certificate } from 'node:crypto';
import { createPrivateKey } from 'node:crypto';
import { mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { performance } from 'node:perf_hooks';
import { csrTarget } from './csr.mjs';

const ISSUER = 'https://kubernetes.default.svc.cluster.local';
const MAX_CSR_BYTES = 16 * 1024;

function pem(der) {
  return `-----BEGIN CERTIFICATE REQUEST-----\n${der.toString('base64').replace(/.{64}/g, '$&\n')}\n-----END CERTIFICATE REQUEST-----\n`;
}

export async function grpcTarget(mods, corpus, jwtKeys, options = {}) {
  const {
    parseFlags,
    SERVE_FLAGS,
    buildServerConfig,
    startServer,
    CaClient,
    grpcStatus,
    pino,
    parseCsr,
    IssuancePolicy,
    verifyCsrSignature,
  } = mods;
  const allowed = new Set([
    grpcStatus.INVALID_ARGUMENT,
    grpcStatus.PERMISSION_DENIED,
    grpcStatus.UNAUTHENTICATED,
    grpcStatus.RESOURCE_EXHAUSTED,
  ]);
  const csrs = csrTarget(mods, corpus);
  const identity = corpus.identity;
  const [, ns, sa] = /\/ns\/([^/]+)\/sa\/([^/]+)$/.exec(identity) ?? [];
  const goodSeed = corpus.csrs.find((c) => c.expect === 'accept').csr;

  const dir = mkdtempSync(join(tmpdir(), 'meshca-fuzz-grpc-'));
  const jwk = { ...jwtKeys['trusted-rsa'] };
  for (const m of ['d', 'p', 'q', 'dp', 'dq', 'qi']) delete jwk[m];
  writeFileSync(join(dir, 'jwks.json'), JSON.stringify({ keys: [{ ...jwk, kid: 'rsa-1', use: 'sig' }] }));
  const env = { MESHCA_KEK: randomBytes(32).toString('base64') };
  const args = [
    '--data-dir',
    join(dir, 'data'),
    '--grpc-listen',
    '127.0.0.1:0',
    '--monitoring-listen',
    '127.0.0.1:0',
    '--admin-listen',
    '127.0.0.1:0',
    '--log-level',
    'silent',
    '--jwks-file',
    join(dir, 'jwks.json'),
    '--jwt-issuer',
    ISSUER,
    // one identity sends every case: the per-identity limit (on by default) would answer RESOURCE_EXHAUSTED
    '--rate-limit-per-identity',
    '0',
  ];
  const config = buildServerConfig(parseFlags(SERVE_FLAGS, args, env, 'serve').values);
  const server = await startServer(config, pino({ level: 'silent' }), env);
  const client = new CaClient({
    address: `127.0.0.1:${server.grpcAddress.port}`,
    rootsPem: server.ca.current().rootsPem,
    serverName: 'localhost',
  });

  const signingKey = createPrivateKey({ key: jwtKeys['trusted-rsa'], format: 'jwk' });
  const token = (() => {
    const now = Math.floor(Date.now() / 1000);
    const b64u = (o) => Buffer.from(JSON.stringify(o)).toString('base64url');
    const input = `${b64u({ alg: 'RS256', kid: 'rsa-1' })}.${b64u({ iss: ISSUER, aud: ['istio-ca'], sub: `system:serviceaccount:${ns}:${sa}`, exp: now + 6 * 3600, iat: now - 5, 'kubernetes.io': { namespace: ns, serviceaccount: { name: sa } } })}`;
    return `${input}.${sign('sha256', Buffer.from(input), { key: signingKey, padding: constants.RSA_PKCS1_PADDING }).toString('base64url')}`;
  })();

  const policy = new IssuancePolicy({ defaultTtlMs: 86_400_000, maxTtlMs: 30 * 86_400_000, backdateMs: 60_000 });
  /** What the in-process pipeline says about this PEM (the same checks IssuanceService runs). */
  async function inProcess(csrPem) {
    try {
      const csr = parseCsr(csrPem);
      policy.checkCsr(csr, { uris: [identity], dnsNames: [] });
      return (await verifyCsrSignature(csr)) === true;
    } catch {
      return false;
    }
  }

  /** Certificate rows in the store (one grouped query). */
  async function rows() {
    let n = 0;
    for (const u of (await server.store.authorityUsage(new Date())).values()) n += u.issued;
    return n;
  }

  async function countRows() {
    let count = 0;
    let cursor;
    do {
      const page = await server.store.listCertificates({ limit: 500, cursor, now: new Date() });
      count += page.items.length;
      cursor = page.nextCursor ?? undefined;
    } while (cursor);
    return count;
  }

  const initialRows = await countRows();
  let successes = 0;

  /** A valid CSR with a broken token or odd metadata: must be UNAUTHENTICATED and write nothing. */
  function callerCase(rng) {
    const [h, p, sig] = token.split('.');
    const at = rng.int(p.length - 1);
    const flip = (c) => (c === 'A' ? 'B' : 'A');
    const [change, how] = rng.pick([
      [{ token: `${h}.${p.slice(0, at)}${flip(p[at])}${p.slice(at + 1)}.${sig}` }, 'payload character changed'],
      [{ token: `${h}.${p}.${sig.slice(0, -4)}` }, 'signature truncated'],
      [{ token: `${Buffer.from('{"alg":"none"}').toString('base64url')}.${p}.` }, 'alg none'],
      [{ token: `${h}.${p}` }, 'two segments'],
      [{ token: undefined }, 'no authorization'],
      // (An empty clusterid means the default cluster, and HTTP/2 trims header values: neither is unknown.)
      [{ clusterId: rng.pick(['elsewhere', 'kubernetes', 'Kubernetes-2', 'x'.repeat(300)]) }, 'unknown clusterid'],
      [{ impersonatedIdentity: rng.pick(['spiffe://cluster.local/ns/app/sa/other', identity, 'x']) }, 'ImpersonatedIdentity (not enabled)'],
    ]);
    return { csrPem: goodSeed, validitySeconds: 0, token, ...change, expectUnauthenticated: true, steps: [`unmodified seed, ${how}`] };
  }

  function generate(rng) {
    if (rng.bool(0.06)) return callerCase(rng);
    if (rng.bool(0.06)) {
      const validitySeconds = rng.pick([-1, 0, 1, 59, 3600, 86_400 * 365, 2 ** 31, 2 ** 53, -(2 ** 53), 1e18]);
      return { csrPem: goodSeed, validitySeconds, steps: [`unmodified seed, validity_duration ${validitySeconds}`] };
    }
    const input = csrs.generate(rng);
    const csrPem = input.form === 'der' ? pem(input.der) : input.pem;
    return { csrPem, validitySeconds: 0, steps: [`${input.seed ?? '-'}: ${input.steps.join(' > ')}`] };
  }

  async function execute(input) {
    const violations = [];
    const before = await rows();
    const started = performance.now();
    let chain;
    let error;
    try {
      const caller = input.expectUnauthenticated
        ? { token: input.token, clusterId: input.clusterId, impersonatedIdentity: input.impersonatedIdentity }
        : { token };
      chain = await client.createCertificate({
        csrPem: input.csrPem,
        validitySeconds: input.validitySeconds,
        deadlineMs: 20_000,
        ...caller,
      });
    } catch (e) {
      error = e;
    }
    const ms = performance.now() - started;
    const expected = !input.expectUnauthenticated && (await inProcess(input.csrPem));
    const after = await rows();
    if (error) {
      if (!allowed.has(error.code))
        violations.push(`refused with ${grpcStatus[error.code] ?? error.code}: ${error.details ?? error.message}`);
      else if (input.expectUnauthenticated && error.code !== grpcStatus.UNAUTHENTICATED)
        violations.push(`bad caller refused with ${grpcStatus[error.code]}, not UNAUTHENTICATED`);
      if (expected && error.code !== grpcStatus.RESOURCE_EXHAUSTED && Buffer.byteLength(input.csrPem) <= MAX_CSR_BYTES)
        violations.push(`refused a CSR the pipeline accepts: ${grpcStatus[error.code]} ${error.details}`);
      if (after !== before) violations.push(`refused (${grpcStatus[error.code]}) but ${after - before} certificate row(s) were written`);
      return { outcome: grpcStatus[error.code] ?? String(error.code), violations, ms };
    }
    successes++;
    if (input.expectUnauthenticated) violations.push('issued a certificate to a caller with a broken token or unknown cluster');
    else if (!expected) violations.push('issued a certificate for a CSR the pipeline refuses (mutated or policy-violating)');
    const leafSerial = (() => {
      try {
        return new X509Certificate(chain[0]).serialNumber.toLowerCase().replace(/^0+/, '');
      } catch {
        return undefined;
      }
    })();
    if (after !== before + 1) violations.push(`one certificate issued but ${after - before} rows written`);
    if (!leafSerial || !(await server.store.getCertificate(leafSerial, new Date())))
      violations.push(`issued leaf ${leafSerial} has no row in the store`);
    if (!chain || chain.length < 2) violations.push(`cert_chain has ${chain?.length} elements`);
    return { outcome: 'OK', violations, ms };
  }

  return {
    name: 'grpc',
    timeBoundMs: options.timeBoundMs ?? 5000,
    hangMs: options.hangMs ?? 30_000,
    retime: false,
    generate,
    execute,
    describe: (input) => ({
      base64: Buffer.from(input.csrPem, 'utf8').toString('base64'),
      note: `IstioCertificateRequest.csr (utf8), validity_duration ${input.validitySeconds}${input.expectUnauthenticated ? `, authorization ${JSON.stringify(input.token?.slice(0, 60))}…, clusterid ${JSON.stringify(input.clusterId ?? 'Kubernetes')}` : ''}; ${input.steps.join(' > ')}`,
    }),
    /** The server still issues, and rows grew by exactly the successes. */
    async finalCheck() {
      const problems = [];
      try {
        const chain = await client.createCertificate({ csrPem: goodSeed, token, deadlineMs: 20_000 });
        successes++;
        if (chain.length < 2) problems.push('final issuance returned a short chain');
      } catch (e) {
        problems.push(`server no longer issues after the batch: ${e.code} ${e.details ?? e.message}`);
      }
      const rows = await countRows();
      if (rows - initialRows !== successes) problems.push(`${rows - initialRows} rows written for ${successes} successful calls`);
      return problems;
    },
    async close() {
      client.close();
      await server.close();
      rmSync(dir, { recursive: true, force: true });
    },
  };
}
