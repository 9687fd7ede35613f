/**
 * A local stand-in for the Kubernetes API server's token signer, for `serve --dev` and tests. Its
 * tokens have the shape of projected service-account tokens, so they exercise the real validator.
 */

import { createHash, randomBytes, randomUUID } from 'node:crypto';
import { link, mkdir, readFile, stat, unlink, writeFile } from 'node:fs/promises';
import { join } from 'node:path';
import { calculateJwkThumbprint, exportJWK, generateKeyPair, importJWK, SignJWT, type CryptoKey, type JSONWebKeySet, type JWK } from 'jose';
import { isNamespaceName, isServiceAccountName } from './subject.js';

export const DEV_TOKEN_ISSUER = 'meshca-dev';
const FILE_NAME = 'dev-token-issuer.json';
const ALG = 'ES256';

export interface DevTokenClaims {
  readonly namespace: string;
  readonly serviceAccount: string;
  readonly ttlSeconds: number;
  /** Default 'istio-ca'. */
  readonly audience?: string;
  readonly podName?: string;
  readonly podUid?: string;
  readonly nodeName?: string;
}

export interface DevTokenIssuer {
  readonly issuer: string;
  /** The public key set, ready for createJwksAuthenticator({ jwks: { keys } }). */
  readonly jwks: JSONWebKeySet;
  sign(claims: DevTokenClaims): Promise<string>;
}

interface StoredKey {
  readonly version: 1;
  readonly kid: string;
  readonly privateJwk: JWK;
}

/** Creates or loads the ES256 key in <dataDir>/dev-token-issuer.json (0600; the directory 0700). */
export async function openDevTokenIssuer(dataDir: string): Promise<DevTokenIssuer> {
  await mkdir(dataDir, { recursive: true, mode: 0o700 });
  const stored = await loadOrCreate(join(dataDir, FILE_NAME));
  const privateKey = (await importJWK(stored.privateJwk, ALG)) as CryptoKey;
  const { d: _d, ...publicJwk } = stored.privateJwk;
  const jwks: JSONWebKeySet = { keys: [{ ...publicJwk, kid: stored.kid, alg: ALG, use: 'sig' }] };
  return {
    issuer: DEV_TOKEN_ISSUER,
    jwks,
    sign: (claims) => signToken(claims, stored.kid, privateKey),
  };
}

async function loadOrCreate(file: string): Promise<StoredKey> {
  try {
    return await load(file);
  } catch (error) {
    if ((error as NodeJS.ErrnoException).code !== 'ENOENT') throw error;
  }
  await create(file);
  return load(file); // whoever won a concurrent create, everyone uses the same key
}

async function load(file: string): Promise<StoredKey> {
  const { mode } = await stat(file);
  if (process.platform !== 'win32' && (mode & 0o077) !== 0) {
    throw new Error(`${file} must not be accessible by group or others (mode ${(mode & 0o777).toString(8)}); chmod 600 it`);
  }
  const parsed = parseStoredKey(await readFile(file, 'utf8'));
  if (parsed === undefined) throw new Error(`${file} is not a meshca dev token issuer key; delete it to start over`);
  return parsed;
}

function parseStoredKey(text: string): StoredKey | undefined {
  try {
    const parsed = JSON.parse(text) as Partial<StoredKey> | null;
    const valid = parsed?.version === 1 && typeof parsed.kid === 'string' && typeof parsed.privateJwk?.d === 'string';
    return valid ? (parsed as StoredKey) : undefined;
  } catch {
    return undefined;
  }
}

/** Write-then-link: the file appears complete or not at all, and an existing one is never replaced. */
async function create(file: string): Promise<void> {
  const { privateKey } = await generateKeyPair(ALG, { extractable: true });
  const privateJwk = await exportJWK(privateKey);
  const kid = await calculateJwkThumbprint(privateJwk); // thumbprints use public members only
  const stored: StoredKey = { version: 1, kid, privateJwk };
  const temp = `${file}.${randomBytes(6).toString('hex')}.tmp`;
  await writeFile(temp, JSON.stringify(stored), { mode: 0o600, flag: 'wx', flush: true });
  try {
    await link(temp, file);
  } catch (error) {
    if ((error as NodeJS.ErrnoException).code !== 'EEXIST') throw error;
  } finally {
    await unlink(temp);
  }
}

async function signToken(claims: DevTokenClaims, kid: string, key: CryptoKey): Promise<string> {
  checkClaims(claims);
  const { namespace, serviceAccount } = claims;
  const iat = Math.floor(Date.now() / 1000);
  return new SignJWT({ 'kubernetes.io': kubernetesClaim(claims) })
    .setProtectedHeader({ alg: ALG, kid, typ: 'JWT' })
    .setIssuer(DEV_TOKEN_ISSUER)
    .setSubject(`system:serviceaccount:${namespace}:${serviceAccount}`)
    .setAudience([claims.audience ?? 'istio-ca'])
    .setIssuedAt(iat)
    .setNotBefore(iat)
    .setExpirationTime(iat + claims.ttlSeconds)
    .setJti(randomUUID())
    .sign(key);
}

function checkClaims(claims: DevTokenClaims): void {
  if (!isNamespaceName(claims.namespace)) throw new RangeError('namespace must be a DNS-1123 label');
  if (!isServiceAccountName(claims.serviceAccount)) throw new RangeError('serviceAccount must be a DNS-1123 subdomain');
  if (!Number.isInteger(claims.ttlSeconds) || claims.ttlSeconds <= 0) {
    throw new RangeError('ttlSeconds must be a positive integer');
  }
}

/** Same layout the API server writes; uids are stable per object name, as real uids are per object. */
function kubernetesClaim(claims: DevTokenClaims): Record<string, unknown> {
  const { namespace, serviceAccount, podName, podUid, nodeName } = claims;
  return {
    namespace,
    serviceaccount: { name: serviceAccount, uid: stableUid('serviceaccount', namespace, serviceAccount) },
    ...(podName === undefined ? {} : { pod: { name: podName, uid: podUid ?? stableUid('pod', namespace, podName) } }),
    ...(nodeName === undefined ? {} : { node: { name: nodeName, uid: stableUid('node', nodeName) } }),
  };
}

function stableUid(...parts: string[]): string {
  const hex = createHash('sha256').update(parts.join('/')).digest('hex');
  return `${hex.slice(0, 8)}-${hex.slice(8, 12)}-${hex.slice(12, 16)}-${hex.slice(16, 20)}-${hex.slice(20, 32)}`;
}
