import type { Logger } from 'pino';

/**
 * A background loop of passes (automatic rotation, upstream renewal): one pass at a time, the next
 * one scheduled from what the last found, the timer never keeping the process alive, and stop()
 * waiting for a pass in progress so it commits before the store closes.
 */
export abstract class PassLoop<Pass> {
  private timer: NodeJS.Timeout | undefined;
  private running: Promise<Pass> | undefined;
  private stopped = false;

  protected constructor(
    private readonly loopLogger: Logger,
    /** Prefix of the log line when a pass throws. */
    private readonly label: string,
    /** Delay after a pass that threw. */
    private readonly fallbackDelayMs: number,
  ) {}

  /** Starts the timer; the first pass runs at once. */
  start(): this {
    this.schedule(0);
    return this;
  }

  /** One pass now, or the one already running. */
  runOnce(): Promise<Pass> {
    if (this.running) return this.running;
    const pass = this.pass().finally(() => (this.running = undefined));
    this.running = pass;
    return pass;
  }

  /** Stops the timer and waits for a pass in progress. */
  async stop(): Promise<void> {
    this.stopped = true;
    clearTimeout(this.timer);
    this.onStop();
    await this.running?.catch(() => undefined);
  }

  protected abstract pass(): Promise<Pass>;

  /** How long after this pass the next one runs. */
  abstract nextDelay(pass: Pass): number;

  /** Called by stop() before waiting for the running pass (e.g. to abort a long wait). */
  protected onStop(): void {}

  private schedule(delayMs: number): void {
    if (this.stopped) return;
    this.timer = setTimeout(() => {
      void this.runOnce()
        .then((pass) => this.schedule(this.nextDelay(pass)))
        .catch((error: unknown) => {
          this.loopLogger.warn({ err: error }, `${this.label}: check failed: ${(error as Error).message}`);
          this.schedule(this.fallbackDelayMs);
        });
    }, delayMs);
    this.timer.unref();
  }
}

/** The usual delay: soon after a step, else the next known threshold, at most the check interval. */
export function thresholdDelay(performed: boolean, until: Date | undefined, now: Date, checkIntervalMs: number): number {
  if (performed) return Math.min(1000, checkIntervalMs);
  const toThreshold = until ? until.getTime() - now.getTime() + 1 : Infinity;
  return Math.max(10, Math.min(checkIntervalMs, toThreshold, 2 ** 31 - 1));
}
