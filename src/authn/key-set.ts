/**
 * A JWKS that refreshes itself: on an unknown key (rotation) and when older than its max age, with a
 * cooldown so a flood of unknown kids cannot hammer the issuer. The same policy covers files and URLs.
 * Built on jose's createLocalJWKSet, which imports each JWK once per algorithm and caches it.
 */

import { createLocalJWKSet, errors, type CryptoKey, type JSONWebKeySet } from 'jose';
import { AuthenticationError } from './errors.js';
import type { JwksLoader } from './jwks-source.js';

export interface KeySetTiming {
  readonly nowMs: () => number;
  /** Minimum time between two fetches (default 30 s, as jose's createRemoteJWKSet). */
  readonly cooldownMs?: number;
  /** Age after which the set is re-fetched in the background (default 10 min). */
  readonly maxAgeMs?: number;
}

type LocalSet = ReturnType<typeof createLocalJWKSet>;
type KeyArgs = Parameters<LocalSet>;

export class RefreshingKeySet {
  readonly #loader: JwksLoader;
  readonly #nowMs: () => number;
  readonly #cooldownMs: number;
  readonly #maxAgeMs: number;
  #local: LocalSet;
  #fingerprint: string;
  #loadedAt: number;
  #attemptedAt: number;
  #lastFailure: AuthenticationError | undefined;
  #pending: Promise<void> | undefined;
  /** Bumped whenever the keys change, so callers can drop results verified under the old set. */
  generation = 0;

  private constructor(loader: JwksLoader, jwks: JSONWebKeySet, timing: KeySetTiming) {
    this.#loader = loader;
    this.#nowMs = timing.nowMs;
    this.#cooldownMs = timing.cooldownMs ?? 30_000;
    this.#maxAgeMs = timing.maxAgeMs ?? 600_000;
    this.#local = createLocalJWKSet(jwks);
    this.#fingerprint = JSON.stringify(jwks.keys);
    this.#loadedAt = this.#attemptedAt = this.#nowMs();
  }

  /** Loads the set once; rejects (ERR_JWKS_UNAVAILABLE) so a misconfigured server fails at start. */
  static async open(loader: JwksLoader, timing: KeySetTiming): Promise<RefreshingKeySet> {
    return new RefreshingKeySet(loader, await loader.load(), timing);
  }

  /** Key resolver for jose's jwtVerify. */
  readonly getKey = async (...[header, token]: KeyArgs): Promise<CryptoKey> => {
    if (this.#loader.refreshable && this.#age() > this.#maxAgeMs && !this.#coolingDown()) {
      void this.#refresh(); // stale-while-revalidate: never block a request on routine refresh
    }
    try {
      return await this.#local(header, token);
    } catch (error) {
      if (!(error instanceof errors.JWKSNoMatchingKey) || !this.#loader.refreshable) throw error;
      return this.#retryAfterRefresh(error, header, token);
    }
  };

  /** Forced re-read (SIGHUP). Keeps the current keys and rejects if the source is unavailable. */
  async reload(): Promise<void> {
    if (!this.#loader.refreshable) return;
    await this.#refresh();
    if (this.#lastFailure !== undefined) throw this.#lastFailure;
  }

  async #retryAfterRefresh(notFound: errors.JWKSNoMatchingKey, ...args: KeyArgs): Promise<CryptoKey> {
    if (this.#pending === undefined && this.#coolingDown()) throw this.#lastFailure ?? notFound;
    await this.#refresh();
    // If the issuer is down we cannot tell "unknown key" from "not fetched yet": let the caller retry.
    if (this.#lastFailure !== undefined) throw this.#lastFailure;
    return this.#local(...args);
  }

  /** Single-flight: concurrent callers share one fetch. Never rejects; failures land in #lastFailure. */
  #refresh(): Promise<void> {
    this.#pending ??= this.#fetch().finally(() => {
      this.#pending = undefined;
    });
    return this.#pending;
  }

  async #fetch(): Promise<void> {
    this.#attemptedAt = this.#nowMs();
    try {
      this.#apply(await this.#loader.load());
      this.#lastFailure = undefined;
    } catch (error) {
      this.#lastFailure = toUnavailable(error, this.#loader.description);
    }
  }

  #apply(jwks: JSONWebKeySet): void {
    this.#loadedAt = this.#nowMs();
    const fingerprint = JSON.stringify(jwks.keys);
    if (fingerprint === this.#fingerprint) return; // keep jose's imported-key cache warm
    this.#local = createLocalJWKSet(jwks);
    this.#fingerprint = fingerprint;
    this.generation += 1;
  }

  #age(): number {
    return this.#nowMs() - this.#loadedAt;
  }

  #coolingDown(): boolean {
    return this.#nowMs() - this.#attemptedAt < this.#cooldownMs;
  }
}

function toUnavailable(error: unknown, description: string): AuthenticationError {
  if (error instanceof AuthenticationError) return error;
  return new AuthenticationError('ERR_JWKS_UNAVAILABLE', `cannot load ${description}`, { cause: error });
}
