/**
 * A token bucket like client-go's flowcontrol: `qps` tokens per second, at most `burst` saved up.
 * Callers reserve a token and wait for it; a reservation that would wait longer than the caller's
 * budget is refused at once (nothing reserved), so an overloaded API fails fast instead of queueing.
 */
export class TokenBucket {
  #tokens: number;
  #updatedAt: number;

  constructor(
    private readonly qps: number,
    private readonly burst: number,
    private readonly nowMs: () => number = () => performance.now(),
  ) {
    if (!(qps > 0) || !(burst >= 1)) throw new RangeError('qps must be > 0 and burst >= 1');
    this.#tokens = burst;
    this.#updatedAt = nowMs();
  }

  /** Milliseconds to wait before the reserved token may be used; undefined if over `maxWaitMs`. */
  reserve(maxWaitMs: number): number | undefined {
    const now = this.nowMs();
    this.#tokens = Math.min(this.burst, this.#tokens + ((now - this.#updatedAt) * this.qps) / 1000);
    this.#updatedAt = now;
    const waitMs = this.#tokens >= 1 ? 0 : ((1 - this.#tokens) * 1000) / this.qps;
    if (waitMs > maxWaitMs) return undefined;
    this.#tokens -= 1; // may go negative: later callers queue behind this one
    return waitMs;
  }
}
