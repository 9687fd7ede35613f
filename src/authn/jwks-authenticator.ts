/** Verifies Kubernetes service-account JWTs against a JWKS and maps them to SPIFFE identities. */

import { unwatchFile, watchFile, type Stats } from 'node:fs';
import { errors, jwtVerify, type JWTPayload, type JWTVerifyGetKey, type JWTVerifyOptions } from 'jose';
import { parseTrustDomain } from '../spiffe/id.js';
import { checkTokenShape, checkTokenSize } from './bearer.js';
import { AuthenticationError, type AuthenticationErrorCode } from './errors.js';
import { RefreshingKeySet } from './key-set.js';
import { createJwksLoader, type JwksSource } from './jwks-source.js';
import { identityFromClaims, type TokenIdentity } from './subject.js';
import { TokenCache, type CacheStats } from './token-cache.js';
import type { AuthenticationContext, Authenticator, CallerIdentity } from './types.js';

/** Asymmetric only: an HS* token "signed" with a public key (key confusion) never reaches key lookup. */
export const ALLOWED_ALGORITHMS: readonly string[] = ['RS256', 'RS384', 'RS512', 'PS256', 'PS384', 'PS512', 'ES256', 'ES384'];

export interface JwksAuthenticatorOptions {
  readonly trustDomain: string;
  /** Required `iss`. */
  readonly issuer: string;
  /** Accepted `aud` values; any one must appear in the token. */
  readonly audiences: readonly string[];
  readonly jwks: JwksSource;
  /** Verified tokens kept (default 10 000); 0 disables the cache. */
  readonly cacheSize?: number;
  /** Longest a verified token is trusted without re-verifying (default 300); never beyond `exp`. */
  readonly cacheTtlSeconds?: number;
  /** Skew allowed on `exp`/`nbf` (default 5 s; see DEFAULT_CLOCK_TOLERANCE_SECONDS). */
  readonly clockToleranceSeconds?: number;
  /** Clock for claim checks, cache expiry and JWKS refresh cooldowns (tests). */
  readonly now?: () => Date;
  /** Called for each verification answered from the cache (meshca_token_cache_hits_total). */
  readonly onCacheHit?: () => void;
  /** How often a JWKS file is checked for changes (default 2 s); removed keys stop working within that plus one request. */
  readonly fileWatchIntervalMs?: number;
}

export interface JwksAuthenticator extends Authenticator {
  /** Re-reads the key set (SIGHUP). Keeps the current keys and rejects if the source is unavailable. */
  reload(): Promise<void>;
  readonly cacheStats: () => CacheStats;
  /** Stops watching the JWKS file. */
  close(): void;
}

/**
 * The token is minted by the API server and checked by us; with NTP both clocks agree to well under
 * a second. kubelet refreshes tokens at 80% of their life, so `exp` slack never helps an honest
 * caller; it only stretches a stolen token. 5 s absorbs a lagging clock on `nbf` and no more.
 */
export const DEFAULT_CLOCK_TOLERANCE_SECONDS = 5;
const DEFAULT_CACHE_SIZE = 10_000;
const DEFAULT_CACHE_TTL_SECONDS = 300;

export async function createJwksAuthenticator(options: JwksAuthenticatorOptions): Promise<JwksAuthenticator> {
  const trustDomain = parseTrustDomain(options.trustDomain);
  const verifyOptions = buildVerifyOptions(options);
  const now = options.now ?? (() => new Date());
  const keySet = await RefreshingKeySet.open(await createJwksLoader(options.jwks), { nowMs: () => now().getTime() });
  const stopWatching =
    'file' in options.jwks ? watchKeyFile(options.jwks.file, keySet, options.fileWatchIntervalMs ?? 2000) : () => undefined;
  const toleranceMs = (options.clockToleranceSeconds ?? DEFAULT_CLOCK_TOLERANCE_SECONDS) * 1000;
  const cache = new TokenCache<TokenIdentity>(options.cacheSize ?? DEFAULT_CACHE_SIZE);
  const cacheTtlMs = (options.cacheTtlSeconds ?? DEFAULT_CACHE_TTL_SECONDS) * 1000;

  let cachedGeneration = keySet.generation;

  async function authenticate(ctx: AuthenticationContext): Promise<CallerIdentity> {
    // The shape check waits for a cache miss: a cached digest is of a token that passed it.
    const cacheKey = TokenCache.keyOf(checkTokenSize(ctx.token));
    // When the keys change (e.g. one was removed) earlier verdicts no longer hold.
    if (keySet.generation !== cachedGeneration) {
      cache.clear();
      cachedGeneration = keySet.generation;
    }
    const current = now();
    const cached = cache.get(cacheKey, current.getTime());
    if (cached !== undefined) {
      options.onCacheHit?.();
      return toCallerIdentity(cached, ctx.clusterId);
    }

    checkTokenShape(ctx.token);
    const generation = keySet.generation;
    const payload = await verify(ctx.token, keySet.getKey, { ...verifyOptions, currentDate: current });
    // jose checks `iat` only with maxTokenAge; a token "issued" in the future is forged or from a broken clock.
    if (typeof payload.iat === 'number' && payload.iat * 1000 > current.getTime() + toleranceMs) {
      throw new AuthenticationError('ERR_TOKEN_NOT_YET_VALID', 'token was issued in the future (iat is beyond the clock-skew allowance)');
    }
    const identity = identityFromClaims(payload, trustDomain);
    // Not cached if the set changed mid-verification: the verdict may rest on a removed key.
    if (keySet.generation === generation) {
      cache.set(cacheKey, identity, Math.min(identity.expiresAtMs, current.getTime() + cacheTtlMs));
    }
    return toCallerIdentity(identity, ctx.clusterId);
  }

  return { authenticate, reload: () => keySet.reload(), cacheStats: () => cache.stats(), close: stopWatching };
}

/**
 * Re-reads the JWKS file when its stat changes (mtime, size or inode: a Kubernetes ConfigMap update
 * swaps a symlink), so a removed key stops verifying within seconds instead of at the next
 * SIGHUP or max-age refresh. The new generation empties the token cache on the next request.
 */
function watchKeyFile(file: string, keySet: RefreshingKeySet, intervalMs: number): () => void {
  const listener = (current: Stats, previous: Stats) => {
    if (current.mtimeMs === previous.mtimeMs && current.size === previous.size && current.ino === previous.ino) return;
    keySet.reload().catch(() => undefined); // an unreadable intermediate state keeps the current keys; the next change retries
  };
  watchFile(file, { interval: intervalMs, persistent: false }, listener);
  return () => unwatchFile(file, listener);
}

function buildVerifyOptions(options: JwksAuthenticatorOptions): JWTVerifyOptions {
  if (options.issuer === '') throw new TypeError('issuer must not be empty');
  if (options.audiences.length === 0) throw new TypeError('audiences must not be empty');
  const clockTolerance = options.clockToleranceSeconds ?? DEFAULT_CLOCK_TOLERANCE_SECONDS;
  if (!(clockTolerance >= 0)) throw new RangeError('clockToleranceSeconds must be >= 0');
  return {
    algorithms: [...ALLOWED_ALGORITHMS],
    issuer: options.issuer,
    audience: [...options.audiences],
    requiredClaims: ['exp', 'sub'], // no `exp` would mean a token valid forever
    clockTolerance,
  };
}

/** jwtVerify plus the documented loop for kid-less tokens that match several keys. */
async function verify(token: string, getKey: JWTVerifyGetKey, options: JWTVerifyOptions): Promise<JWTPayload> {
  try {
    return (await jwtVerify(token, getKey, options)).payload;
  } catch (error) {
    if (!(error instanceof errors.JWKSMultipleMatchingKeys)) throw mapJoseError(error);
    return verifyWithEach(token, error, options);
  }
}

async function verifyWithEach(token: string, candidates: errors.JWKSMultipleMatchingKeys, options: JWTVerifyOptions): Promise<JWTPayload> {
  for await (const key of candidates) {
    try {
      return (await jwtVerify(token, key, options)).payload;
    } catch (error) {
      if (!(error instanceof errors.JWSSignatureVerificationFailed)) throw mapJoseError(error);
    }
  }
  throw mapJoseError(new errors.JWSSignatureVerificationFailed());
}

function toCallerIdentity(identity: TokenIdentity, clusterId: string): CallerIdentity {
  // Field by field rather than rest/spread, which V8 builds through its slow generic path (~3 µs
  // per call on the hot path). A fresh Date each time: callers may mutate it without touching the cache.
  const caller: Mutable<CallerIdentity> = {
    namespace: identity.namespace,
    serviceAccount: identity.serviceAccount,
    spiffeId: identity.spiffeId,
    clusterId,
    expiresAt: new Date(identity.expiresAtMs),
  };
  if (identity.podName !== undefined) caller.podName = identity.podName;
  if (identity.podUid !== undefined) caller.podUid = identity.podUid;
  if (identity.nodeName !== undefined) caller.nodeName = identity.nodeName;
  return caller;
}

type Mutable<T> = { -readonly [K in keyof T]: T[K] };

/**
 * Translates jose's error classes into stable codes. Messages are ours: jose's claim errors carry
 * the payload, so they are never attached as `cause`. Non-jose errors are bugs and pass through.
 */
export function mapJoseError(error: unknown): unknown {
  if (error instanceof AuthenticationError) return error;
  if (!(error instanceof errors.JOSEError)) return error;
  if (error instanceof errors.JWTClaimValidationFailed) return claimError(error.claim, error.reason);
  const code = JOSE_CODES.find(([type]) => error instanceof type)?.[1] ?? 'ERR_TOKEN_MALFORMED';
  const cause = code === 'ERR_JWKS_UNAVAILABLE' ? { cause: error } : undefined;
  return new AuthenticationError(code, MESSAGES[code], cause);
}

type JoseErrorClass = abstract new (...args: never[]) => errors.JOSEError;

const JOSE_CODES: ReadonlyArray<readonly [JoseErrorClass, AuthenticationErrorCode]> = [
  [errors.JWTExpired, 'ERR_TOKEN_EXPIRED'],
  [errors.JOSEAlgNotAllowed, 'ERR_TOKEN_ALGORITHM'],
  [errors.JWSSignatureVerificationFailed, 'ERR_TOKEN_SIGNATURE'],
  [errors.JWKSNoMatchingKey, 'ERR_TOKEN_KEY_UNKNOWN'],
  [errors.JWKSTimeout, 'ERR_JWKS_UNAVAILABLE'],
  [errors.JWKSInvalid, 'ERR_JWKS_UNAVAILABLE'],
  [errors.JWKInvalid, 'ERR_JWKS_UNAVAILABLE'],
  // JWSInvalid, JWTInvalid, JOSENotSupported (e.g. unknown `crit`) and the rest: malformed.
];

const MESSAGES: Record<AuthenticationErrorCode, string> = {
  ERR_TOKEN_MISSING: 'bearer token is missing',
  ERR_TOKEN_MALFORMED: 'token is malformed',
  ERR_TOKEN_ALGORITHM: `token algorithm is not allowed (allowed: ${ALLOWED_ALGORITHMS.join(', ')})`,
  ERR_TOKEN_SIGNATURE: 'token signature verification failed',
  ERR_TOKEN_EXPIRED: 'token has expired',
  ERR_TOKEN_NOT_YET_VALID: 'token is not yet valid (nbf)',
  ERR_TOKEN_ISSUER: 'token issuer is not accepted',
  ERR_TOKEN_AUDIENCE: 'token audience is not accepted',
  ERR_TOKEN_SUBJECT: 'token subject is not a valid service account',
  ERR_TOKEN_KEY_UNKNOWN: 'token signing key is not in the key set',
  ERR_JWKS_UNAVAILABLE: 'key set is unavailable',
  ERR_CLUSTER_UNKNOWN: 'cluster is not configured',
  ERR_AUTHN_BACKEND_UNAVAILABLE: 'the Kubernetes API is unavailable',
  ERR_IMPERSONATION_DENIED: 'impersonation is not allowed',
};

function claimError(claim: string, reason: string): AuthenticationError {
  const code = claimCode(claim, reason);
  const detail = code === 'ERR_TOKEN_MALFORMED' ? `: claim "${claim}" is ${reason}` : '';
  return new AuthenticationError(code, MESSAGES[code] + detail);
}

function claimCode(claim: string, reason: string): AuthenticationErrorCode {
  if (claim === 'iss') return 'ERR_TOKEN_ISSUER';
  if (claim === 'aud') return 'ERR_TOKEN_AUDIENCE';
  if (claim === 'sub') return 'ERR_TOKEN_SUBJECT';
  if (claim === 'nbf' && reason === 'check_failed') return 'ERR_TOKEN_NOT_YET_VALID';
  return 'ERR_TOKEN_MALFORMED'; // e.g. a non-numeric `exp`, a missing `exp`
}
