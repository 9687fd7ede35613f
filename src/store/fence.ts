import { AsyncLocalStorage } from 'node:async_hooks';

/** Proof that this process held a singleton lease: the store refuses a fenced write once the epoch moved on. */
export interface LeaseFence {
  readonly name: string;
  readonly holder: string;
  readonly epoch: number;
}

const current = new AsyncLocalStorage<LeaseFence>();

/**
 * Runs a singleton job with its fence in scope: every store write the job makes (through any
 * number of layers, without passing the fence along) checks it inside the write's transaction.
 */
export function runFenced<T>(fence: LeaseFence, job: () => Promise<T>): Promise<T> {
  return current.run(fence, job);
}

/** The fence of the singleton job this call runs in, if any. */
export function currentFence(): LeaseFence | undefined {
  return current.getStore();
}

/** Runs a singleton job's pass only on the replica that holds its lease; undefined elsewhere. */
export interface SingletonGate {
  <T>(job: () => Promise<T>): Promise<T | undefined>;
  /** Whether this process holds the lease now (as of its last renewal); absent when it never can. */
  readonly held?: () => boolean;
}
