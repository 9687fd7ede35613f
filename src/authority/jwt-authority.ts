import { randomBytes, type KeyObject } from 'node:crypto';
import { SignJWT } from 'jose';
import type { Logger } from 'pino';
import { generateKeyPair, openPrivateKey, sealPrivateKey } from '../pki/keys.js';
import type { JwtAuthorityChange, JwtAuthorityRecord, Store } from '../store/types.js';
import { AuthorityError } from './errors.js';
import { ACTIVATE_FRACTION, PREPARE_FRACTION } from './auto-rotation.js';

/** Key types a JWT-SVID signing key may have, with their JWS algorithm (ES256 is the default). */
export const JWT_KEY_ALGORITHMS = { 'ec-p256': 'ES256', 'ec-p384': 'ES384', 'rsa-2048': 'RS256' } as const;
export type JwtKeyType = keyof typeof JWT_KEY_ALGORITHMS;

export function parseJwtKeyType(input: string): JwtKeyType {
  if (input in JWT_KEY_ALGORITHMS) return input as JwtKeyType;
  throw new AuthorityError(
    'ERR_AUTHORITY_INVALID',
    `unsupported JWT key type "${input}"; use one of ${Object.keys(JWT_KEY_ALGORITHMS).join(', ')}`,
  );
}

/** A published JWT key: what the SPIFFE bundle lists with use "jwt-svid". */
export interface PublishedJwtKey {
  readonly kid: string;
  readonly state: JwtAuthorityRecord['state'];
  readonly algorithm: string;
  readonly publicJwk: Readonly<Record<string, string>>;
  readonly notAfter: Date;
}

export interface JwtSvidClaims {
  readonly sub: string;
  readonly aud: readonly string[];
  readonly iat: number;
  readonly exp: number;
  readonly jti: string;
}

/** The active JWT signing key. The private key lives only in an ES private field. */
export class JwtSigner {
  readonly #key: KeyObject;

  constructor(
    readonly kid: string,
    readonly algorithm: string,
    readonly notAfter: Date,
    key: KeyObject,
  ) {
    this.#key = key;
  }

  /** JWT-SVID header per the spec: alg, kid, typ JWT. */
  sign(claims: JwtSvidClaims): Promise<string> {
    return new SignJWT({ jti: claims.jti })
      .setProtectedHeader({ alg: this.algorithm, kid: this.kid, typ: 'JWT' })
      .setSubject(claims.sub)
      .setAudience([...claims.aud])
      .setIssuedAt(claims.iat)
      .setExpirationTime(claims.exp)
      .sign(this.#key);
  }
}

export interface JwtTrust {
  readonly signer: JwtSigner;
  /** Prepared, active and retired keys, oldest first. */
  readonly published: readonly PublishedJwtKey[];
  /** The store's bundle sequence when this view was loaded. */
  readonly bundleSequence: number;
}

export type JwtRotationStep =
  | { readonly kind: 'bootstrap' }
  | { readonly kind: 'prepare' }
  | { readonly kind: 'activate'; readonly kid: string; readonly retire: string | undefined }
  | { readonly kind: 'remove'; readonly kid: string }
  | { readonly kind: 'wait'; readonly until: number | undefined };

function lifetimePoint(key: JwtAuthorityRecord, fraction: number): number {
  const start = key.createdAt.getTime();
  return start + (key.notAfter.getTime() - start) * fraction;
}

/**
 * The next JWT key step from the stored keys alone (so a restart resumes where it stopped), like the
 * CA's automatic rotation: prepare the next key at 1/2 of the active key's lifetime (it is published
 * at once, so verifiers learn it before it signs), activate it at 5/6 (or, if prepared late, halfway
 * between its preparation and the active key's end), keep the retired key published until no token
 * it signed can still be valid (its notAfter), then remove it.
 */
export function planJwtRotation(keys: readonly JwtAuthorityRecord[], now: number): JwtRotationStep {
  const active = keys.find((k) => k.state === 'active');
  const prepared = keys
    .filter((k) => k.state === 'prepared' && k.notAfter.getTime() > now)
    .sort((a, b) => b.createdAt.getTime() - a.createdAt.getTime())[0];
  const expiredRetired = keys.find((k) => k.state === 'retired' && k.notAfter.getTime() <= now);
  if (expiredRetired) return { kind: 'remove', kid: expiredRetired.kid };
  if (!active) return prepared ? { kind: 'activate', kid: prepared.kid, retire: undefined } : { kind: 'bootstrap' };
  const activeEnd = active.notAfter.getTime();
  if (prepared) {
    const created = prepared.createdAt.getTime();
    const due = Math.min(activeEnd, Math.max(lifetimePoint(active, ACTIVATE_FRACTION), created + (activeEnd - created) / 2));
    return now >= due ? { kind: 'activate', kid: prepared.kid, retire: active.kid } : { kind: 'wait', until: earliest(due, keys) };
  }
  const prepareAt = lifetimePoint(active, PREPARE_FRACTION);
  return now >= prepareAt ? { kind: 'prepare' } : { kind: 'wait', until: earliest(prepareAt, keys) };
}

function earliest(threshold: number, keys: readonly JwtAuthorityRecord[]): number {
  return Math.min(threshold, ...keys.filter((k) => k.state === 'retired').map((k) => k.notAfter.getTime()));
}

export interface JwtAuthorityOptions {
  readonly store: Store;
  readonly kek: Buffer;
  readonly logger: Logger;
  readonly keyType: JwtKeyType;
  /** Lifetime of each signing key; it signs for about half of it. */
  readonly keyTtlMs: number;
  /** The longest check interval; a pass is also scheduled at the next threshold. */
  readonly checkIntervalMs?: number;
  readonly now?: () => Date;
}

const ACTOR = 'jwt-rotation';

/**
 * JWT-SVID signing keys as authorities: prepared → active → retired → removed, each change one
 * journaled store transaction with guards and an audit event, keys sealed under the KEK (AAD = kid),
 * rotated automatically by a timer that re-reads the store on every pass.
 */
export class JwtAuthority {
  private trust!: JwtTrust;
  private timer: NodeJS.Timeout | undefined;
  private running: Promise<JwtRotationStep> | undefined;
  private stopped = false;
  private readonly now: () => Date;
  private readonly listeners: ((trust: JwtTrust) => void)[] = [];

  private constructor(private readonly options: JwtAuthorityOptions) {
    this.now = options.now ?? (() => new Date());
  }

  /** Loads the keys, creating the first one (or catching up on missed steps) before returning. */
  static async open(options: JwtAuthorityOptions): Promise<JwtAuthority> {
    const authority = new JwtAuthority(options);
    for (let i = 0; i < 8; i++) if ((await authority.runOnce()).kind === 'wait') break;
    return authority;
  }

  current(): JwtTrust {
    return this.trust;
  }

  /** Called after every change this process made (not at open). */
  onChange(listener: (trust: JwtTrust) => void): void {
    this.listeners.push(listener);
  }

  /** Starts the rotation timer. */
  start(): this {
    this.schedule();
    return this;
  }

  async stop(): Promise<void> {
    this.stopped = true;
    clearTimeout(this.timer);
    await this.running?.catch(() => undefined);
  }

  /** One rotation step (or none), then a reload of the signing view. */
  runOnce(): Promise<JwtRotationStep> {
    if (this.running) return this.running;
    const pass = this.pass().finally(() => (this.running = undefined));
    this.running = pass;
    return pass;
  }

  private async pass(): Promise<JwtRotationStep> {
    const { store, logger } = this.options;
    const keys = await store.loadJwtAuthorities();
    const now = this.now();
    const step = planJwtRotation(keys, now.getTime());
    const audit = (action: string, target: string, details: Record<string, unknown> = {}) => ({
      actor: ACTOR,
      action,
      target,
      result: 'ok' as const,
      details,
      at: now,
    });
    let change: JwtAuthorityChange | undefined;
    if (step.kind === 'bootstrap' || step.kind === 'prepare') {
      const record = await this.newKey(step.kind === 'bootstrap' ? 'active' : 'prepared', now);
      change = {
        insert: [record],
        bumpBundleSequence: true,
        audit: audit(`jwt-authority.${step.kind}`, record.kid, { algorithm: record.algorithm, notAfter: record.notAfter.toISOString() }),
      };
    } else if (step.kind === 'activate') {
      const transitions = [
        ...(step.retire ? [{ kid: step.retire, from: ['active'] as const, to: 'retired' as const }] : []),
        { kid: step.kid, from: ['prepared'] as const, to: 'active' as const },
      ];
      change = {
        transitions,
        bumpBundleSequence: false,
        audit: audit('jwt-authority.activate', step.kid, { retired: step.retire ?? null }),
      };
    } else if (step.kind === 'remove') {
      change = {
        transitions: [{ kid: step.kid, from: ['retired'], to: 'removed' }],
        bumpBundleSequence: true,
        audit: audit('jwt-authority.remove', step.kid),
      };
    }
    if (change) {
      await store.applyJwtAuthorityChange(change);
      logger.info(
        { step: step.kind, kid: change.insert?.[0]?.kid ?? (step as { kid?: string }).kid },
        `JWT-SVID signing key rotation: ${step.kind}`,
      );
    }
    if (change || !this.trust) await this.reload();
    if (change) this.listeners.forEach((listener) => listener(this.trust));
    return step;
  }

  /** Rebuilds the signing view from the store. */
  async reload(): Promise<JwtTrust> {
    const keys = await this.options.store.loadJwtAuthorities();
    const active = keys.find((k) => k.state === 'active');
    if (!active) throw new AuthorityError('ERR_AUTHORITY_INCONSISTENT', 'the store has no active JWT-SVID signing key');
    let key: KeyObject;
    try {
      key = openPrivateKey(active.sealedKey, this.options.kek, active.kid);
    } catch {
      throw new AuthorityError(
        'ERR_AUTHORITY_INCONSISTENT',
        `cannot decrypt JWT signing key ${active.kid}: is this the KEK the data dir was created with?`,
      );
    }
    const published = keys
      .filter((k) => k.state !== 'removed')
      .map(({ kid, state, algorithm, publicJwk, notAfter }) => ({ kid, state, algorithm, publicJwk, notAfter }));
    this.trust = {
      signer: new JwtSigner(active.kid, active.algorithm, active.notAfter, key),
      published,
      bundleSequence: await this.options.store.bundleSequence(),
    };
    return this.trust;
  }

  private async newKey(state: 'active' | 'prepared', now: Date): Promise<JwtAuthorityRecord> {
    const { privateKey, publicKey } = await generateKeyPair(this.options.keyType);
    const kid = randomBytes(16).toString('base64url');
    const jwk = publicKey.export({ format: 'jwk' }) as Record<string, string>;
    const publicJwk = Object.fromEntries(['kty', 'crv', 'x', 'y', 'n', 'e'].filter((k) => jwk[k] !== undefined).map((k) => [k, jwk[k]!]));
    return {
      kid,
      state,
      algorithm: JWT_KEY_ALGORITHMS[this.options.keyType],
      publicJwk,
      sealedKey: sealPrivateKey(privateKey, this.options.kek, kid),
      notAfter: new Date(now.getTime() + this.options.keyTtlMs),
      createdAt: now,
      updatedAt: now,
    };
  }

  private schedule(delayMs = 0): void {
    if (this.stopped) return;
    this.timer = setTimeout(() => {
      void this.runOnce().then(
        (step) => this.schedule(this.nextDelay(step)),
        (error: unknown) => {
          this.options.logger.warn({ err: error }, `JWT-SVID key rotation failed, retrying: ${(error as Error).message}`);
          this.schedule(this.options.checkIntervalMs ?? 60_000);
        },
      );
    }, delayMs);
    this.timer.unref();
  }

  private nextDelay(step: JwtRotationStep): number {
    const max = this.options.checkIntervalMs ?? 60_000;
    if (step.kind !== 'wait') return 0;
    const until = step.until === undefined ? Infinity : step.until - this.now().getTime() + 1;
    return Math.max(10, Math.min(max, until));
  }
}
