// @ts-check
// Pre-generated client material: workload CSRs and ServiceAccount-like tokens.
//
// Nothing here is timed. Generated sets are cached under bench/results/tmp/material/ (gitignored)
// and reused by later runs, because every run starts a fresh server: a token cached from an
// earlier run has still never been seen by the server under test, so it is as "cold" as a new one.

import { createPublicKey, generateKeyPair, generateKeyPairSync, createPrivateKey, sign } from 'node:crypto';
import { existsSync, mkdirSync, readFileSync, renameSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { promisify } from 'node:util';
import { assertSameShapeAsClient, workloadCsrPem } from './csr.mjs';

export const TRUST_DOMAIN = 'cluster.local';
export const JWT_ISSUER = 'https://kubernetes.default.svc.cluster.local';
export const TOKEN_AUDIENCE = 'istio-ca';
const TOKEN_LIFETIME_S = 7 * 24 * 3600;
/** Cached tokens are regenerated when they would expire within this margin. */
const TOKEN_MIN_REMAINING_S = 24 * 3600;
const CACHE_VERSION = 1;

const generateKeyPairAsync = promisify(generateKeyPair);
const signAsync = promisify(sign);

/** @typedef {{ namespace: string, serviceAccount: string }} Identity */

/** The steady-state workloads: namespace "bench", service accounts w0..w(N-1). */
export const benchIdentity = (/** @type {number} */ i) => ({ namespace: 'bench', serviceAccount: `w${i}` });
/** The rotation-burst workloads (distinct from the steady ones, so their tokens are unseen). */
export const burstIdentity = (/** @type {number} */ i) => ({ namespace: 'burst', serviceAccount: `b${i}` });
export const spiffeIdOf = (/** @type {Identity} */ id) => `spiffe://${TRUST_DOMAIN}/ns/${id.namespace}/sa/${id.serviceAccount}`;

/**
 * @typedef {object} TokenSigner
 * @property {import('node:crypto').KeyObject} privateKey RSA-2048, like a Kubernetes API server's SA signing key
 * @property {string} kid
 * @property {{ keys: object[] }} jwks the public key set the server validates with
 */

/**
 * A cache file ({ version, meta, items }) holding at least `count` items; load generators read it.
 * @typedef {{ path: string, count: number }} MaterialFile
 */

export class MaterialCache {
  /** @param {string} dir */
  constructor(dir) {
    this.dir = dir;
    mkdirSync(dir, { recursive: true });
    /** @type {TokenSigner | undefined} */
    this.signerCache = undefined;
    this.shapeChecked = false;
  }

  /** The token issuer's key pair (cached, so cached tokens stay verifiable). */
  signer() {
    if (this.signerCache) return this.signerCache;
    const path = join(this.dir, 'token-signer.json');
    /** @type {{ version: number, kid: string, pkcs8Pem: string } | undefined} */
    let saved = readJson(path);
    if (saved?.version !== CACHE_VERSION) {
      const { privateKey } = generateKeyPairSync('rsa', { modulusLength: 2048 });
      saved = {
        version: CACHE_VERSION,
        kid: `bench-${Date.now().toString(36)}`,
        pkcs8Pem: /** @type {string} */ (privateKey.export({ type: 'pkcs8', format: 'pem' })),
      };
      writeJson(path, saved);
    }
    const privateKey = createPrivateKey(saved.pkcs8Pem);
    const jwk = createPublicKey(privateKey).export({ format: 'jwk' });
    this.signerCache = { privateKey, kid: saved.kid, jwks: { keys: [{ ...jwk, kid: saved.kid, alg: 'RS256', use: 'sig' }] } };
    return this.signerCache;
  }

  /**
   * CSRs for identities 0..count-1 of a family; EC P-256 with one fresh key per identity, or RSA-2048
   * with `rsaKeys` keys shared round-robin (RSA key generation costs ~0.6 s each; the CSR still names
   * its own identity, and the server does not care that two identities share a public key).
   * @param {{ name: string, count: number, identity: (i: number) => Identity, keyType: 'ec-p256' | 'rsa-2048', rsaKeys?: number }} spec
   * @returns {Promise<MaterialFile>}
   */
  async csrs({ name, count, identity, keyType, rsaKeys = 8 }) {
    const file = keyType === 'ec-p256' ? `csr-ec-${name}.json` : `csr-rsa${rsaKeys}-${name}.json`;
    return this.extend(file, {}, count, async (from, to) => {
      await this.checkShapeOnce();
      /** @type {import('node:crypto').KeyObject[]} */
      let keys = [];
      if (keyType === 'rsa-2048') {
        const pairs = await Promise.all(Array.from({ length: rsaKeys }, () => generateKeyPairAsync('rsa', { modulusLength: 2048 })));
        keys = pairs.map((p) => p.privateKey);
      }
      const out = [];
      for (let i = from; i < to; i++) {
        const key = keyType === 'rsa-2048' ? keys[i % rsaKeys] : generateKeyPairSync('ec', { namedCurve: 'P-256' }).privateKey;
        out.push(workloadCsrPem(key, spiffeIdOf(identity(i))));
      }
      return out;
    });
  }

  /**
   * One distinct token per index: token i belongs to identity(i % identities). Its `jti` carries the
   * set name, so sets never share a token (e.g. the "warm" and "cold" tokens of the same identities).
   * @param {{ name: string, count: number, identity: (i: number) => Identity, identities: number }} spec
   * @returns {Promise<MaterialFile>}
   */
  async tokens({ name, count, identity, identities }) {
    const signer = this.signer();
    const nowS = Math.floor(Date.now() / 1000);
    const file = `tokens-${name}-n${identities}.json`;
    return this.extend(
      file,
      { kid: signer.kid, minExp: nowS + TOKEN_MIN_REMAINING_S },
      count,
      async (from, to) => {
        const iat = Math.floor(Date.now() / 1000);
        const tokens = [];
        // Asynchronous signing runs on the libuv pool, so both cores share the work.
        for (let start = from; start < to; start += 256) {
          const batch = [];
          for (let i = start; i < Math.min(to, start + 256); i++)
            batch.push(signToken(signer, identity(i % identities), iat, `${name}-${i}`));
          tokens.push(...(await Promise.all(batch)));
        }
        return tokens;
      },
      (meta) => ({ kid: signer.kid, exp: Math.min(meta.exp ?? Infinity, nowS + TOKEN_LIFETIME_S) }),
    );
  }

  /**
   * Loads `file`, keeps it when its metadata still fits, and appends items up to `count`.
   * @param {string} file
   * @param {{ kid?: string, minExp?: number }} require
   * @param {number} count
   * @param {(from: number, to: number) => Promise<string[]>} generate
   * @param {(meta: Record<string, any>) => Record<string, any>} [updateMeta]
   * @returns {Promise<MaterialFile>}
   */
  async extend(file, require, count, generate, updateMeta = (meta) => meta) {
    const path = join(this.dir, file);
    /** @type {{ version: number, meta: Record<string, any>, items: string[] } | undefined} */
    let saved = readJson(path);
    const fits =
      saved?.version === CACHE_VERSION &&
      (require.kid === undefined || saved.meta.kid === require.kid) &&
      (require.minExp === undefined || saved.meta.exp >= require.minExp);
    if (!saved || !fits) saved = { version: CACHE_VERSION, meta: {}, items: [] };
    if (saved.items.length < count) {
      const started = performance.now();
      const from = saved.items.length;
      saved.items.push(...(await generate(from, count)));
      saved.meta = updateMeta(saved.meta);
      writeJson(path, saved);
      log(
        `generated ${count - from} × ${file.replace(/\.json$/, '')} in ${((performance.now() - started) / 1000).toFixed(1)} s (cached in ${path})`,
      );
    }
    return { path, count };
  }

  async checkShapeOnce() {
    if (this.shapeChecked) return;
    const client = await import('../../dist/client/csr.js');
    await assertSameShapeAsClient(generateKeyPairSync('ec', { namedCurve: 'P-256' }).privateKey, client);
    await assertSameShapeAsClient(generateKeyPairSync('rsa', { modulusLength: 2048 }).privateKey, client);
    this.shapeChecked = true;
  }
}

/**
 * A token shaped like a projected Kubernetes ServiceAccount token (RS256).
 * @param {TokenSigner} signer
 * @param {Identity} id
 * @param {number} iat
 * @param {string} jti makes every token of a set distinct
 */
async function signToken(signer, id, iat, jti) {
  const header = { alg: 'RS256', kid: signer.kid };
  const payload = {
    aud: [TOKEN_AUDIENCE],
    exp: iat + TOKEN_LIFETIME_S,
    iat,
    nbf: iat - 60,
    iss: JWT_ISSUER,
    jti,
    'kubernetes.io': {
      namespace: id.namespace,
      node: { name: 'bench-node-1', uid: '3f3c1a4e-0000-4000-8000-000000000001' },
      pod: { name: `${id.serviceAccount}-7d4b9c8f6d-x2x9z`, uid: '6a1e2b1c-0000-4000-8000-000000000002' },
      serviceaccount: { name: id.serviceAccount, uid: '9b8d2e7f-0000-4000-8000-000000000003' },
    },
    sub: `system:serviceaccount:${id.namespace}:${id.serviceAccount}`,
  };
  const input = `${b64url(header)}.${b64url(payload)}`;
  const signature = await signAsync('sha256', Buffer.from(input), signer.privateKey);
  return `${input}.${signature.toString('base64url')}`;
}

const b64url = (/** @type {object} */ value) => Buffer.from(JSON.stringify(value)).toString('base64url');

/** @param {string} path */
function readJson(path) {
  if (!existsSync(path)) return undefined;
  try {
    return JSON.parse(readFileSync(path, 'utf8'));
  } catch {
    return undefined; // a truncated cache file is regenerated
  }
}

/** @param {string} path @param {unknown} value */
function writeJson(path, value) {
  writeFileSync(`${path}.tmp`, JSON.stringify(value), { mode: 0o600 });
  renameSync(`${path}.tmp`, path);
}

/** @param {string} message */
function log(message) {
  process.stderr.write(`  · ${message}\n`);
}
