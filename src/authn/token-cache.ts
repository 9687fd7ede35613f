/**
 * A bounded LRU of verified tokens. Keys are SHA-256 digests of the token, not the token: a heap
 * dump then holds no usable bearer credentials, and 10k entries cost ~1 MiB instead of ~10+ MiB.
 * The price is one hash per request (~1-2 µs for a 1 KiB token), small next to a signature check.
 */

import { digest } from '../pki/digest.js';

export interface CacheStats {
  readonly size: number;
  readonly hits: number;
  readonly misses: number;
}

interface Entry<V> {
  readonly value: V;
  readonly expiresAtMs: number;
}

export class TokenCache<V> {
  readonly #entries = new Map<string, Entry<V>>();
  readonly #maxSize: number;
  #hits = 0;
  #misses = 0;

  constructor(maxSize: number) {
    if (!Number.isInteger(maxSize) || maxSize < 0) throw new RangeError('cacheSize must be a non-negative integer');
    this.#maxSize = maxSize;
  }

  static keyOf(token: string): string {
    return digest('sha256', token, 'base64');
  }

  /** Returns the value only while it is unexpired; an expired entry is dropped, never returned. */
  get(key: string, nowMs: number): V | undefined {
    const entry = this.#entries.get(key);
    if (entry === undefined || entry.expiresAtMs <= nowMs) {
      if (entry !== undefined) this.#entries.delete(key);
      this.#misses += 1;
      return undefined;
    }
    this.#entries.delete(key); // re-insert: Map order is our recency order
    this.#entries.set(key, entry);
    this.#hits += 1;
    return entry.value;
  }

  set(key: string, value: V, expiresAtMs: number): void {
    if (this.#maxSize === 0) return;
    this.#entries.delete(key);
    this.#entries.set(key, { value, expiresAtMs });
    if (this.#entries.size > this.#maxSize) this.#entries.delete(this.#entries.keys().next().value!);
  }

  clear(): void {
    this.#entries.clear();
  }

  stats(): CacheStats {
    return { size: this.#entries.size, hits: this.#hits, misses: this.#misses };
  }
}
