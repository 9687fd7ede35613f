import { MeshcaError } from '../errors.js';

/** A caller over its per-identity rate: RESOURCE_EXHAUSTED, which istio-agent retries with backoff. */
export class RateLimitedError extends MeshcaError<'ERR_RATE_LIMITED'> {
  constructor(identity: string) {
    super('ERR_RATE_LIMITED', `${identity} exceeds --rate-limit-per-identity; retry later`, { retryable: true });
  }
}

/**
 * Per-identity token buckets: a misbehaving workload (a crash-looping sidecar) cannot starve
 * the others. Bounded: the least recently used buckets are forgotten beyond `maxIdentities`.
 */
export class IdentityRateLimiter {
  private readonly buckets = new Map<string, { tokens: number; at: number }>();

  constructor(
    private readonly ratePerSecond: number,
    private readonly burst: number,
    private readonly maxIdentities = 100_000,
    private readonly now: () => number = () => performance.now(),
  ) {}

  /** Takes one token for the identity; false when it is over its rate. */
  allow(identity: string): boolean {
    const now = this.now();
    const bucket = this.buckets.get(identity) ?? { tokens: this.burst, at: now };
    this.buckets.delete(identity); // re-insert to keep Map order = recency
    bucket.tokens = Math.min(this.burst, bucket.tokens + ((now - bucket.at) / 1000) * this.ratePerSecond);
    bucket.at = now;
    const allowed = bucket.tokens >= 1;
    if (allowed) bucket.tokens -= 1;
    this.buckets.set(identity, bucket);
    if (this.buckets.size > this.maxIdentities) this.buckets.delete(this.buckets.keys().next().value!);
    return allowed;
  }
}
