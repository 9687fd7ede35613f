/**
 * Admission for CreateCertificate: at most `limit` calls are worked on at once; later arrivals wait
 * in arrival order and start as earlier ones finish.
 *
 * Without it, a burst of thousands of calls (every sidecar after a root rotation) interleaves at
 * every stage: each call's signing and store write queue behind everybody else's token check, so
 * nearly all of them finish near the end of the burst, and all of them hold their pipeline state
 * at once. With it, calls already in progress finish first and memory stays bounded by `limit`.
 */
export class AdmissionGate {
  #active = 0;
  /** FIFO of waiting callers; `#head` is the next one (shifting a large array is O(n)). */
  #waiting: (() => void)[] = [];
  #head = 0;

  constructor(readonly limit: number) {
    if (!Number.isInteger(limit) || limit < 1) throw new RangeError('the admission limit must be a positive integer');
  }

  get active(): number {
    return this.#active;
  }

  get queued(): number {
    return this.#waiting.length - this.#head;
  }

  /**
   * Undefined when the call may start right away (no promise on the common path); otherwise a
   * promise that resolves at its turn. Either way the caller must call release() once when done.
   */
  enter(): Promise<void> | undefined {
    if (this.#active < this.limit && this.queued === 0) {
      this.#active++;
      return undefined;
    }
    return new Promise((resolve) => this.#waiting.push(resolve));
  }

  /** Ends one admitted call; the longest-waiting one (if any) takes its place. */
  release(): void {
    if (this.queued === 0) {
      this.#active--;
      return;
    }
    const next = this.#waiting[this.#head]!;
    this.#head++;
    if (this.#head > 1024 && this.#head * 2 > this.#waiting.length) {
      this.#waiting = this.#waiting.slice(this.#head);
      this.#head = 0;
    }
    next(); // the slot passes on: #active is unchanged
  }
}
