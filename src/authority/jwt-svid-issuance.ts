import { randomUUID } from 'node:crypto';
import type { CallerIdentity } from '../authn/index.js';
import { StoreError } from '../store/errors.js';
import type { Store } from '../store/types.js';
import { IssuanceError, identityDenied } from './errors.js';
import type { JwtAuthority } from './jwt-authority.js';

export interface JwtSvidPolicy {
  /** Lifetime when none is requested (--jwt-svid-ttl, 5 minutes by default). */
  readonly defaultTtlMs: number;
  /** Longer requested lifetimes are clamped to this (--jwt-svid-max-ttl). */
  readonly maxTtlMs: number;
}

export interface JwtSvidRequest {
  readonly caller: CallerIdentity;
  readonly audiences: readonly string[];
  /** ≤ 0: the default lifetime. */
  readonly ttlSeconds: number;
}

export interface MintedJwtSvid {
  readonly token: string;
  readonly spiffeId: string;
  readonly kid: string;
  readonly jti: string;
  readonly expiresAt: Date;
}

const MAX_AUDIENCES = 16;
const MAX_AUDIENCE_BYTES = 512;

/**
 * Mints JWT-SVIDs for the caller's own identity (JWT-SVID spec: sub, aud, exp, iat; header alg, kid,
 * typ). The token is returned only after its record (never the token itself) is committed, and the
 * record is refused for a denied identity in the same statement that inserts it: a deny that
 * committed first is always seen, as for certificates (store/types.ts, refuseIfDenied).
 */
export class JwtSvidIssuance {
  private readonly now: () => Date;

  constructor(
    private readonly authority: JwtAuthority,
    private readonly store: Store,
    private readonly policy: JwtSvidPolicy,
    now?: () => Date,
  ) {
    this.now = now ?? (() => new Date());
  }

  async mint(request: JwtSvidRequest): Promise<MintedJwtSvid> {
    const audiences = checkAudiences(request.audiences);
    const spiffeId = request.caller.spiffeId;
    const signer = this.authority.current().signer;
    const now = this.now();
    const requestedMs = request.ttlSeconds > 0 ? request.ttlSeconds * 1000 : this.policy.defaultTtlMs;
    const expiresMs = Math.min(now.getTime() + Math.min(requestedMs, this.policy.maxTtlMs), signer.notAfter.getTime());
    const iat = Math.floor(now.getTime() / 1000);
    const exp = Math.floor(expiresMs / 1000);
    if (exp <= iat) throw new IssuanceError('ERR_CA_NOT_READY', 'the JWT signing key is at its end; retry once the next key is active');
    const jti = randomUUID();
    const token = await signer.sign({ sub: spiffeId, aud: audiences, iat, exp, jti }).catch((error: unknown) => {
      throw new IssuanceError('ERR_ISSUANCE_FAILED', `signing failed: ${(error as Error).message}`);
    });
    const expiresAt = new Date(exp * 1000);
    await this.store
      .recordJwtSvid({ jti, spiffeId, callerId: request.caller.spiffeId, audiences, kid: signer.kid, issuedAt: now, expiresAt })
      .catch((error: unknown) => {
        if (error instanceof StoreError && error.code === 'ERR_STORE_DENIED') throw identityDenied(spiffeId);
        throw new IssuanceError('ERR_ISSUANCE_FAILED', `could not record the JWT-SVID: ${(error as Error).message}`);
      });
    return { token, spiffeId, kid: signer.kid, jti, expiresAt };
  }
}

function checkAudiences(audiences: readonly string[]): string[] {
  const unique = [...new Set(audiences)];
  if (unique.length === 0)
    throw new IssuanceError('ERR_JWT_REQUEST_INVALID', 'a JWT-SVID needs at least one audience (the service it is presented to)');
  if (unique.length > MAX_AUDIENCES) throw new IssuanceError('ERR_JWT_REQUEST_INVALID', `at most ${MAX_AUDIENCES} audiences per JWT-SVID`);
  for (const audience of unique) {
    const control = [...audience].some((c) => c.charCodeAt(0) < 0x20);
    if (audience.length === 0 || Buffer.byteLength(audience) > MAX_AUDIENCE_BYTES || control) {
      throw new IssuanceError('ERR_JWT_REQUEST_INVALID', `audiences must be 1-${MAX_AUDIENCE_BYTES} bytes without control characters`);
    }
  }
  return unique;
}
