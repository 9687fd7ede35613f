import { availableParallelism } from 'node:os';
import { WorkerClient, workerModule } from '../workers/rpc.js';
import {
  signatureCheck,
  verifyCsrSignature,
  verifyCsrSignatureNow,
  type CertificationRequest,
  type CheckResult,
  type SignatureCheck,
} from './csr.js';
import { PkiError } from './errors.js';
import { type EcdsaVerifierKind, verifyEcdsaNatively } from './native-ecdsa.js';
import type { VerifierThreadData } from './verify-worker.js';

/**
 * Worker threads that verify CSR signatures. node:crypto decodes the public key on the calling
 * thread even in the callback form (~150-200 µs for an EC point under OpenSSL 3), which made key
 * import the largest cost on the event loop; here import and verify both happen off it.
 */
type VerifierThread = WorkerClient<readonly SignatureCheck[], CheckResult[]>;

interface Pending {
  readonly check: SignatureCheck;
  resolve(valid: boolean): void;
  reject(error: Error): void;
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
  /** Checks in flight per thread (a thread's load). */
  private readonly load = new Map<VerifierThread, number>();
  private queue: Pending[] = [];
  private scheduled = false;

  /** `ecdsa: 'native'` needs the addon built (the composition root checks with nativeEcdsaUnavailable()). */
  constructor(
    size = defaultVerifierThreads(),
    private readonly ecdsa: EcdsaVerifierKind = 'node',
  ) {
    const module = workerModule(import.meta.url, './verify-worker.js');
    const workerData: VerifierThreadData = { ecdsa };
    this.threads = Array.from(
      { length: Math.max(0, size) },
      () => new WorkerClient(module, { name: 'CSR verifier', workerData, unref: true }),
    );
  }

  verify(csr: CertificationRequest): Promise<boolean> {
    let check: SignatureCheck;
    try {
      if (this.threads.length === 0 && this.ecdsa === 'node') return Promise.resolve(verifyCsrSignatureNow(csr));
      check = signatureCheck(csr);
      if (this.threads.length === 0)
        return new Promise((resolve, reject) => settle({ check, resolve, reject }, this.verifyNow(csr, check)));
    } catch (error) {
      return Promise.reject(error);
    }
    if (this.threads.every((t) => !t.healthy)) return verifyCsrSignature(csr);
    return new Promise((resolve, reject) => {
      this.queue.push({ check, resolve, reject });
      if (!this.scheduled) {
        this.scheduled = true;
        setImmediate(() => this.dispatch());
      }
    });
  }

  /** On the event loop: natively for an EC point, else through node:crypto. */
  private verifyNow(csr: CertificationRequest, check: SignatureCheck): CheckResult {
    return 'ecPoint' in check ? verifyEcdsaNatively(check) : verifyCsrSignatureNow(csr) ? 1 : 0;
  }

  async close(): Promise<void> {
    await Promise.all(this.threads.map((t) => t.terminate()));
  }

  private dispatch(): void {
    this.scheduled = false;
    const batch = this.queue;
    this.queue = [];
    const live = this.threads.filter((t) => t.healthy);
    // A server fault, not the CSR's: the caller maps it to UNAVAILABLE so istio-agent retries.
    if (live.length === 0) return batch.forEach((p) => p.reject(new Error('no CSR verifier thread is running')));
    const thread = live.reduce((a, b) => (this.loadOf(b) < this.loadOf(a) ? b : a));
    this.load.set(thread, this.loadOf(thread) + batch.length);
    thread
      .call(batch.map((p) => p.check))
      .then(
        (results) => batch.forEach((p, i) => settle(p, results[i])),
        (error: Error) => batch.forEach((p) => p.reject(error)),
      )
      .finally(() => this.load.set(thread, this.loadOf(thread) - batch.length));
  }

  private loadOf(thread: VerifierThread): number {
    return this.load.get(thread) ?? 0;
  }
}

function settle(pending: Pending, result: CheckResult | undefined): void {
  if (typeof result === 'string' || result === undefined)
    pending.reject(new PkiError('ERR_CSR_UNSUPPORTED_KEY', `signature check failed: ${result ?? 'no result'}`));
  else pending.resolve(result === 1);
}
