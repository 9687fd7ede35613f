#!/usr/bin/env node
// Per-stage CPU cost of one issuance, measured in-process on dist/ (`npm run bench:stages`).
//
// The end-to-end benchmark (bench/run.mjs) says how much CPU a certificate costs; this says where,
// with less noise: each stage runs on the benchmark's pre-generated CSRs in a loop, its CPU time
// (process.cpuUsage: every thread, so worker-thread and libuv work counts) is taken over several
// rounds, and the median and spread are printed. On a shared machine, other processes inflate
// CPU time less than they inflate wall time, but repeat a run before trusting a 10 % difference.

import { createPublicKey, generateKeyPairSync, randomBytes, sign, verify, webcrypto } from 'node:crypto';
import { mkdtempSync, readFileSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { fileURLToPath } from 'node:url';
import { parseArgs } from 'node:util';
import pino from 'pino';

const ROOT = fileURLToPath(new URL('..', import.meta.url));
const dist = (/** @type {string} */ p) => import(join(ROOT, 'dist', p));
const { values } = parseArgs({
  options: {
    rounds: { type: 'string', default: '7' },
    n: { type: 'string', default: '1000' },
    json: { type: 'boolean', default: false },
    // Measure only the stages whose name matches (a regular expression), for quicker A/B runs.
    only: { type: 'string', default: '' },
  },
});
const ROUNDS = Number(values.rounds);
const N = Number(values.n);

const { parseCsr, signatureCheck, verifyCsrSignature } = await dist('pki/csr.js');
const { nativeEcdsaUnavailable, verifyEcdsaNatively } = await dist('pki/native-ecdsa.js');
const { CsrVerifierPool } = await dist('pki/verify-pool.js');
const { pemEncode } = await dist('pki/pem.js');
const { randomSerial, serialToHex, timeOrderedSerial } = await dist('pki/serial.js');
const { IssuancePolicy } = await dist('authority/policy.js');
const { IssuanceService } = await dist('authority/issuance.js');
const { CertificateAuthority } = await dist('authority/lifecycle.js');
const { openSqliteStore } = await dist('store/sqlite.js');
const { istioCertificateServiceDefinition } = await dist('grpc/proto.js');

const materialFile = join(ROOT, 'bench', 'results', 'tmp', 'material', 'csr-ec-bench.json');
let pems;
try {
  pems = JSON.parse(readFileSync(materialFile, 'utf8')).items.slice(0, N);
} catch {
  process.stderr.write(
    `bench/stages: no pre-generated CSRs in ${materialFile}; run "npm run bench -- --quick --scenarios steady-c1" once to make them\n`,
  );
  process.exit(1);
}
const identity = (/** @type {number} */ i) => `spiffe://cluster.local/ns/bench/sa/w${i}`;
const csrs = pems.map((/** @type {string} */ p) => parseCsr(p));

/** @type {{ stage: string, medianUs: number, minUs: number, maxUs: number }[]} */
const results = [];

/**
 * CPU µs per item of `fn` over the CSRs, `batch` items in flight at once; median of ROUNDS rounds
 * after one untimed round (V8 warm-up).
 * @param {string} stage @param {(csr: any, i: number) => unknown} fn @param {number} [batch]
 */
async function measure(stage, fn, batch = 1) {
  if (values.only && !new RegExp(values.only, 'i').test(stage)) return;
  const round = async () => {
    const t = process.cpuUsage();
    for (let i = 0; i < csrs.length; i += batch) {
      const pending = [];
      for (let k = i; k < Math.min(i + batch, csrs.length); k++) pending.push(fn(csrs[k], k));
      if (pending[0] instanceof Promise) await Promise.all(pending);
    }
    const d = process.cpuUsage(t);
    return (d.user + d.system) / csrs.length;
  };
  await round();
  const runs = [];
  for (let r = 0; r < ROUNDS; r++) runs.push(await round());
  runs.sort((a, b) => a - b);
  const row = { stage, medianUs: runs[Math.floor(runs.length / 2)], minUs: runs[0], maxUs: runs[runs.length - 1] };
  results.push(row);
  if (!values.json)
    process.stdout.write(`${row.medianUs.toFixed(1).padStart(8)} µs  (${row.minUs.toFixed(1)}–${row.maxUs.toFixed(1)})  ${stage}\n`);
}

if (!values.json)
  process.stdout.write(`CPU per certificate, median of ${ROUNDS} rounds × ${csrs.length} CSRs (min–max), Node ${process.versions.node}:\n`);

// --- transport: protobuf (proto-loader's dynamic path) ---
const method = istioCertificateServiceDefinition().CreateCertificate;
const requests = pems.map((/** @type {string} */ csr) => method.requestSerialize({ csr, validity_duration: 0 }));
await measure('gRPC request decode (proto-loader)', (_c, i) => method.requestDeserialize(requests[i]));
const chainTail = [pems[0].replace(/REQUEST/g, ''), pems[1].replace(/REQUEST/g, '')];
await measure('gRPC response encode (proto-loader)', (_c, i) => method.responseSerialize({ cert_chain: [pems[i], ...chainTail] }));

// --- CSR ---
await measure('PEM decode + CSR parse', (_c, i) => parseCsr(pems[i]));
const policy = new IssuancePolicy({ defaultTtlMs: 86_400_000, maxTtlMs: 30 * 86_400_000, backdateMs: 60_000 });
await measure('policy (checkCsr)', (c, i) => policy.checkCsr(c, { uris: [identity(i)], dnsNames: [] }));

// --- key import and signature verification ---
const rawPoint = (/** @type {any} */ c) => c.spkiDer.subarray(c.spkiDer.length - 65);
const jwkOf = (/** @type {any} */ c) => {
  const point = rawPoint(c);
  const [x, y] = [point.subarray(1, 33).toString('base64url'), point.subarray(33).toString('base64url')];
  return /** @type {import('node:crypto').JsonWebKeyInput} */ ({ key: { kty: 'EC', crv: 'P-256', x, y }, format: 'jwk' });
};
await measure('key import: JWK (the verifier thread before issue 17; now WebCrypto raw)', (c) => createPublicKey(jwkOf(c)));
await measure('key import: SPKI DER', (c) => createPublicKey({ key: c.spkiDer, format: 'der', type: 'spki' }));
await measure(
  'key import: WebCrypto raw point (the verifier thread, 32 at a time)',
  (c) => webcrypto.subtle.importKey('raw', rawPoint(c), { name: 'ECDSA', namedCurve: 'P-256' }, false, ['verify']),
  32,
);
const keys = csrs.map((/** @type {any} */ c) => createPublicKey(jwkOf(c)));
await measure('signature verify with an imported key', (c, i) =>
  verify(c.signatureHash, c.certificationRequestInfoDer, keys[i], c.signatureValue),
);
await measure('import + verify inline (libuv pool)', (c) => verifyCsrSignature(c), 8);
const pool = new CsrVerifierPool(1);
await measure('import + verify via the verifier thread, 1 at a time', (c) => pool.verify(c), 1);
await measure('import + verify via the verifier thread, 8 at a time', (c) => pool.verify(c), 8);
await pool.close();
// The native addon (native/ecdsa_verify.c): no key object, no redundant order check.
const nativeMissing = nativeEcdsaUnavailable();
if (nativeMissing) process.stderr.write(`bench/stages: native ECDSA stages skipped: ${nativeMissing}\n`);
else {
  await measure('native ECDSA: decode point + verify, calling thread', (c) => verifyEcdsaNatively(signatureCheck(c)));
  const native = new CsrVerifierPool(1, 'native');
  await measure('native ECDSA via the verifier thread, 8 at a time (the default)', (c) => native.verify(c), 8);
  await native.close();
}

// --- signing, encoding and storing: a real store and CA in a temp dir ---
const dir = mkdtempSync(join(tmpdir(), 'meshca-stages-'));
try {
  const store = openSqliteStore({ path: join(dir, 'meshca.db') });
  const ca = await CertificateAuthority.open({
    store,
    kek: randomBytes(32),
    logger: pino({ level: 'silent' }),
    trustDomain: 'cluster.local',
    keyType: 'ec-p256',
    rootTtlMs: 10 * 365 * 86_400_000,
    intermediateTtlMs: 365 * 86_400_000,
  });
  const signer = ca.current().signer;
  const validity = () => policy.validity(0, new Date(), signer.notAfter);
  const { privateKey } = generateKeyPairSync('ec', { namedCurve: 'P-256' });
  const tbsSized = randomBytes(450);
  await measure('ECDSA P-256 sign alone, on the calling thread (reference)', () => sign('sha256', tbsSized, privateKey));
  await measure(
    'TBS DER + ECDSA sign (libuv pool), 8 at a time',
    (c, i) =>
      signer.sign({
        serial: timeOrderedSerial(),
        ...validity(),
        spkiDer: c.spkiDer,
        uris: [identity(i)],
        dnsNames: [],
        keyEncipherment: false,
      }),
    8,
  );
  const der = await signer.sign({
    serial: timeOrderedSerial(),
    ...validity(),
    spkiDer: csrs[0].spkiDer,
    uris: [identity(0)],
    dnsNames: [],
    keyEncipherment: false,
  });
  await measure('PEM encode of the leaf', () => pemEncode(der, 'CERTIFICATE'));
  // 1,000 identities as in the end-to-end bench; the serial decides where each row lands in the serial index.
  const record = (/** @type {Buffer} */ serial, /** @type {number} */ i) => ({
    serialHex: serialToHex(serial),
    spiffeId: identity(i),
    callerId: identity(i),
    clusterId: 'Kubernetes',
    authorityId: signer.id,
    notBefore: new Date(),
    notAfter: new Date(Date.now() + 86_400_000),
    issuedAt: new Date(),
    der,
  });
  await measure('store: recordIssued, random serials (before), 8 at a time', (_c, i) => store.recordIssued(record(randomSerial(), i)), 8);
  await measure(
    'store: recordIssued, time-ordered serials (now), 8 at a time',
    (_c, i) => store.recordIssued(record(timeOrderedSerial(), i)),
    8,
  );
  await measure(
    'store: recordIssued, time-ordered serials, 32 at a time',
    (_c, i) => store.recordIssued(record(timeOrderedSerial(), i)),
    32,
  );
  const verifiers = new CsrVerifierPool(1, nativeMissing ? 'node' : 'native');
  const issuance = new IssuanceService(ca, store, policy, verifiers);
  const caller = (/** @type {number} */ i) => ({
    spiffeId: identity(i),
    clusterId: 'Kubernetes',
    namespace: 'bench',
    serviceAccount: `w${i}`,
  });
  await measure(
    'whole IssuanceService.issue (parse → policy → verify → sign → store → PEM), 32 at a time',
    (_c, i) => issuance.issue({ csrPem: pems[i], validitySeconds: 0, caller: caller(i) }),
    32,
  );
  await verifiers.close();
  await store.close();
} finally {
  rmSync(dir, { recursive: true, force: true });
}
if (values.json)
  process.stdout.write(JSON.stringify({ node: process.versions.node, rounds: ROUNDS, csrs: csrs.length, results }, null, 2) + '\n');
