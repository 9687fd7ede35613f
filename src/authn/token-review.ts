/**
 * Token validation by the Kubernetes API server (authentication.k8s.io/v1 TokenReview), as istiod
 * does for clusters whose tokens it cannot verify offline, and the issuer-based combination with JWKS.
 */

import { decodeJwt } from 'jose';
import { parseTrustDomain, workloadId } from '../spiffe/id.js';
import { checkTokenShape } from './bearer.js';
import { AuthenticationError } from './errors.js';
import { parseServiceAccountSubject, type TokenIdentity } from './subject.js';
import { TokenCache, type CacheStats } from './token-cache.js';
import type { AuthenticationContext, Authenticator, CallerIdentity } from './types.js';

/** What the API server answered (TokenReview.status). */
export interface TokenReviewResult {
  readonly authenticated?: boolean;
  readonly user?: {
    readonly username?: string;
    readonly uid?: string;
    readonly groups?: readonly string[];
    readonly extra?: Readonly<Record<string, readonly string[]>>;
  };
  readonly audiences?: readonly string[];
  readonly error?: string;
}

/** Posts a TokenReview; rejects when the API server gives no answer (any rejection means "unavailable"). */
export interface TokenReviewer {
  readonly description: string;
  review(token: string, audiences: readonly string[]): Promise<TokenReviewResult>;
}

export interface TokenReviewAuthenticatorOptions {
  readonly trustDomain: string;
  /** Sent as spec.audiences; status.audiences must intersect them. */
  readonly audiences: readonly string[];
  readonly reviewer: TokenReviewer;
  /** Accepted tokens are trusted without a new review until min(token exp, this) (default 5 min). */
  readonly positiveTtlMs?: number;
  /** Rejected tokens are answered from the cache this long (default 2 s), so a retry storm costs one review. */
  readonly negativeTtlMs?: number;
  readonly cacheSize?: number;
  readonly now?: () => Date;
}

export interface TokenReviewAuthenticator extends Authenticator {
  readonly cacheStats: () => CacheStats;
}

const SERVICE_ACCOUNTS_GROUP = 'system:serviceaccounts';
const EXTRA_POD_NAME = 'authentication.kubernetes.io/pod-name';
const EXTRA_POD_UID = 'authentication.kubernetes.io/pod-uid';
const EXTRA_NODE_NAME = 'authentication.kubernetes.io/node-name';

type Verdict = { readonly ok: true; readonly identity: TokenIdentity } | { readonly ok: false; readonly error: AuthenticationError };

export function createTokenReviewAuthenticator(options: TokenReviewAuthenticatorOptions): TokenReviewAuthenticator {
  const trustDomain = parseTrustDomain(options.trustDomain);
  if (options.audiences.length === 0) throw new TypeError('audiences must not be empty');
  const audiences = [...options.audiences];
  const now = options.now ?? (() => new Date());
  const positiveTtlMs = options.positiveTtlMs ?? 300_000;
  const negativeTtlMs = options.negativeTtlMs ?? 2_000;
  const cache = new TokenCache<Verdict>(options.cacheSize ?? 10_000);
  // ztunnel sends many requests with one token at once: they share one review.
  const inFlight = new Map<string, Promise<Verdict>>();

  async function review(token: string, key: string): Promise<Verdict> {
    let status: TokenReviewResult;
    try {
      status = await options.reviewer.review(token, audiences);
    } catch (cause) {
      // Never a verdict: the caller retries (gRPC UNAVAILABLE) and nothing is cached.
      throw new AuthenticationError(
        'ERR_AUTHN_BACKEND_UNAVAILABLE',
        `TokenReview on ${options.reviewer.description} failed: ${(cause as Error).message}`,
        { cause },
      );
    }
    const current = now().getTime();
    let verdict: Verdict;
    try {
      verdict = { ok: true, identity: identityFromReview(status, token, audiences, trustDomain) };
    } catch (error) {
      if (!(error instanceof AuthenticationError)) throw error;
      verdict = { ok: false, error };
    }
    const expiresAt = verdict.ok ? Math.min(verdict.identity.expiresAtMs, current + positiveTtlMs) : current + negativeTtlMs;
    cache.set(key, verdict, expiresAt);
    return verdict;
  }

  async function authenticate(ctx: AuthenticationContext): Promise<CallerIdentity> {
    const token = checkTokenShape(ctx.token);
    const key = TokenCache.keyOf(token);
    let verdict = cache.get(key, now().getTime());
    if (verdict === undefined) {
      let pending = inFlight.get(key);
      if (pending === undefined) {
        pending = review(token, key).finally(() => inFlight.delete(key));
        inFlight.set(key, pending);
      }
      verdict = await pending;
    }
    if (!verdict.ok) throw new AuthenticationError(verdict.error.code, verdict.error.message);
    const { expiresAtMs, ...rest } = verdict.identity;
    return { ...rest, clusterId: ctx.clusterId, expiresAt: new Date(expiresAtMs) };
  }

  return { authenticate, cacheStats: () => cache.stats() };
}

/** Istio's getTokenReviewResult, plus the audience check the TokenReview API asks clients to make. */
function identityFromReview(status: TokenReviewResult, token: string, audiences: readonly string[], trustDomain: string): TokenIdentity {
  if (status.authenticated !== true) {
    // status.error is the API server's text ("token has expired", "invalid bearer token", ...); it never contains the token.
    throw new AuthenticationError(
      'ERR_TOKEN_SIGNATURE',
      `the Kubernetes API did not authenticate the token${status.error ? `: ${status.error.slice(0, 200)}` : ''}`,
    );
  }
  // An authenticated review with no status.audiences means "valid for the API server", not for us.
  if (!(status.audiences ?? []).some((audience) => audiences.includes(audience))) {
    throw new AuthenticationError('ERR_TOKEN_AUDIENCE', `token audience is not accepted (expected one of ${audiences.join(', ')})`);
  }
  const user = status.user ?? {};
  if (!(user.groups ?? []).includes(SERVICE_ACCOUNTS_GROUP)) {
    throw new AuthenticationError('ERR_TOKEN_SUBJECT', `the token's user is not in group ${SERVICE_ACCOUNTS_GROUP}`);
  }
  const { namespace, serviceAccount } = parseServiceAccountSubject(user.username);
  const extra = user.extra ?? {};
  return {
    namespace,
    serviceAccount,
    spiffeId: workloadId(trustDomain, namespace, serviceAccount),
    ...optional('podName', extra[EXTRA_POD_NAME]),
    ...optional('podUid', extra[EXTRA_POD_UID]),
    ...optional('nodeName', extra[EXTRA_NODE_NAME]),
    expiresAtMs: tokenExpiry(token),
  };
}

function optional(key: 'podName' | 'podUid' | 'nodeName', values: readonly string[] | undefined): Partial<TokenIdentity> {
  const value = values?.[0];
  return typeof value === 'string' && value !== '' ? { [key]: value } : {};
}

/**
 * The token's own `exp`: the API server just verified the signature, so the claim is authentic.
 * Legacy secret-based tokens have none; they are then bounded by the positive TTL alone.
 */
function tokenExpiry(token: string): number {
  try {
    const exp = decodeJwt(token).exp;
    return typeof exp === 'number' ? exp * 1000 : Number.POSITIVE_INFINITY;
  } catch {
    return Number.POSITIVE_INFINITY;
  }
}

/**
 * JWKS first, TokenReview for the rest: a token whose (unverified) `iss` names a configured JWKS
 * issuer is decided by that authenticator alone; any other token goes to `fallback`. Routing on an
 * unverified claim is safe because both sides verify fully; `iss` only picks who does.
 */
export function createIssuerRouter(byIssuer: ReadonlyMap<string, Authenticator>, fallback: Authenticator): Authenticator {
  const routes = new Map(byIssuer);
  return {
    authenticate(ctx: AuthenticationContext): Promise<CallerIdentity> {
      let issuer: unknown;
      try {
        issuer = decodeJwt(checkTokenShape(ctx.token)).iss;
      } catch (error) {
        if (error instanceof AuthenticationError) return Promise.reject(error);
        issuer = undefined; // undecodable payload: let the fallback give its verdict
      }
      const authenticator = (typeof issuer === 'string' ? routes.get(issuer) : undefined) ?? fallback;
      return authenticator.authenticate(ctx);
    },
  };
}
