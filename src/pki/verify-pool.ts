import { availableParallelism } from 'node:os';
import { Worker } from 'node:worker_threads';
import { signatureCheck, verifyCsrSignature, verifyCsrSignatureNow, type CertificationRequest, type SignatureCheck } from './csr.js';
import { PkiError } from './errors.js';

/**
 * Worker threads that verify CSR signatures. node:crypto decodes the public key on the calling
 * thread even in the callback form (~150-200 µs for an EC point under OpenSSL 3), which made key
 * import the largest cost on the event loop; here import and verify both happen off it.
 */
const VERIFIER_SOURCE = `
const { parentPort } = require('node:worker_threads');
const { verify } = require('node:crypto');
parentPort.on('message', (batch) => {
  const results = batch.checks.map((c) => {
    try { return verify(c.hash, c.data, c.key, c.signature) ? 1 : 0; } catch (error) { return String(error && error.message); }
  });
  parentPort.postMessage({ id: batch.id, results });
});
`;

type Result = 0 | 1 | string;

interface Pending {
  readonly check: SignatureCheck;
  resolve(valid: boolean): void;
  reject(error: Error): void;
}

class VerifierThread {
  private readonly worker = new Worker(VERIFIER_SOURCE, { eval: true });
  private readonly batches = new Map<number, Pending[]>();
  private nextId = 1;
  failed = false;

  constructor() {
    this.worker.unref();
    this.worker.on('message', (reply: { id: number; results: Result[] }) => this.settle(reply));
    this.worker.on('error', (error) => this.fail(error));
    this.worker.on('exit', () => this.fail(new Error('the CSR verifier thread exited')));
  }

  get load(): number {
    let n = 0;
    for (const batch of this.batches.values()) n += batch.length;
    return n;
  }

  send(batch: Pending[]): void {
    const id = this.nextId++;
    this.batches.set(id, batch);
    this.worker.postMessage({ id, checks: batch.map((p) => p.check) });
  }

  terminate(): Promise<number> {
    this.failed = true;
    return this.worker.terminate();
  }

  private settle(reply: { id: number; results: Result[] }): void {
    const batch = this.batches.get(reply.id) ?? [];
    this.batches.delete(reply.id);
    batch.forEach((p, i) => {
      const result = reply.results[i];
      if (typeof result === 'string') p.reject(new PkiError('ERR_CSR_UNSUPPORTED_KEY', `signature check failed: ${result}`));
      else p.resolve(result === 1);
    });
  }

  private fail(error: Error): void {
    this.failed = true;
    for (const batch of this.batches.values()) batch.forEach((p) => p.reject(error));
    this.batches.clear();
  }
}

/**
 * cores - 1 (1-4). Size 0 verifies on the event loop: on one core a verifier thread adds no
 * parallelism, only hand-offs (~30-90 µs less CPU per check measured in-process without it, not
 * yet confirmed end to end, so it is an option, not the default).
 */
export function defaultVerifierThreads(): number {
  return Math.max(1, Math.min(4, availableParallelism() - 1));
}

/** Batches the checks of one event-loop turn to the least loaded thread; with size 0, verifies on the event loop. */
export class CsrVerifierPool {
  private readonly threads: VerifierThread[];
  private queue: Pending[] = [];
  private scheduled = false;

  constructor(size = defaultVerifierThreads()) {
    this.threads = Array.from({ length: Math.max(0, size) }, () => new VerifierThread());
  }

  verify(csr: CertificationRequest): Promise<boolean> {
    if (this.threads.length === 0) {
      try {
        return Promise.resolve(verifyCsrSignatureNow(csr));
      } catch (error) {
        return Promise.reject(error);
      }
    }
    let check: SignatureCheck;
    try {
      check = signatureCheck(csr);
    } catch (error) {
      return Promise.reject(error);
    }
    if (this.threads.every((t) => t.failed)) return verifyCsrSignature(csr);
    return new Promise((resolve, reject) => {
      this.queue.push({ check, resolve, reject });
      if (!this.scheduled) {
        this.scheduled = true;
        setImmediate(() => this.dispatch());
      }
    });
  }

  async close(): Promise<void> {
    await Promise.all(this.threads.map((t) => t.terminate()));
  }

  private dispatch(): void {
    this.scheduled = false;
    const batch = this.queue;
    this.queue = [];
    const live = this.threads.filter((t) => !t.failed);
    // A server fault, not the CSR's: the caller maps it to UNAVAILABLE so istio-agent retries.
    if (live.length === 0) return batch.forEach((p) => p.reject(new Error('no CSR verifier thread is running')));
    live.reduce((a, b) => (b.load < a.load ? b : a)).send(batch);
  }
}
