import type { KeyObject } from 'node:crypto';
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
import { signOnThreadPool, type IssuerHash, type TbsSigner } from './leaf.js';
import { type EcdsaVerifierKind, verifyEcdsaNatively } from './native-ecdsa.js';
import type { VerifierBatch, VerifierItem, VerifierOutcome, VerifierThreadData } from './verify-worker.js';

/**
 * Proof of possession before signing: the issuer signs a workload's leaf only once the CSR's own
 * signature holds. `signerFor(csr)` is a TbsSigner that checks first; it rejects with PkiError
 * ERR_CSR_SIGNATURE_INVALID (the CSR's fault), ERR_CSR_UNSUPPORTED_KEY (its key is unusable) or
 * ERR_VERIFIER_UNAVAILABLE (ours), and with any other error when signing itself failed.
 */
export interface CsrVerifier {
  signerFor(csr: CertificationRequest): TbsSigner;
}

/** Checks on libuv's pool through node:crypto, then signs there: no threads of its own (tools, tests). */
export const threadPoolCsrVerifier: CsrVerifier = {
  signerFor: (csr) => async (hash, tbs, key) => {
    if (!(await verifyCsrSignature(csr))) throw invalidSignature();
    return signOnThreadPool(hash, tbs, key);
  },
};

/**
 * Worker threads that verify CSR signatures. node:crypto decodes the public key on the calling
 * thread even in the callback form (~150-200 µs for an EC point under OpenSSL 3), which made key
 * import the largest cost on the event loop; here import and verify both happen off it. An
 * issuance's leaf is signed by the same thread in the same batch once its CSR checked out, which
 * saves the per-certificate trip through libuv's pool (a wake-up there and one back).
 */
type VerifierThread = WorkerClient<VerifierBatch, VerifierOutcome[]>;

/**
 * Checks per message to a thread. A burst admits many calls at once; sent as one batch, the event
 * loop would wait for the whole batch while the thread works, then the thread for the event loop.
 * In slices, the event loop carries on with the first results while the thread checks the next
 * (rotation burst, 5,000 workloads: the event loop busy ~95 % of the time instead of ~75 %).
 * Steady load rarely fills a slice (about 5 checks per batch at 32 callers).
 */
export const MAX_VERIFIER_BATCH = 16;

interface Pending {
  readonly check: SignatureCheck;
  readonly sign?: { readonly hash: IssuerHash; readonly tbs: Buffer; readonly key: KeyObject };
  resolve(outcome: VerifierOutcome): void;
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

/** Sends the checks of one event-loop turn, in slices, each to the least loaded thread; with size 0, verifies on the event loop. */
export class CsrVerifierPool implements CsrVerifier {
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

  /** Whether the CSR's self-signature holds (false when it does not, PkiError when its key is unusable). */
  async verify(csr: CertificationRequest): Promise<boolean> {
    if (this.allDown()) return this.verifyHere(csr);
    return checkVerdict(await this.enqueue({ check: signatureCheck(csr) }));
  }

  signerFor(csr: CertificationRequest): TbsSigner {
    return async (hash, tbs, key) => {
      if (this.allDown()) {
        if (!(await this.verifyHere(csr))) throw invalidSignature();
        return signOnThreadPool(hash, tbs, key);
      }
      const outcome = await this.enqueue({ check: signatureCheck(csr), sign: { hash, tbs, key } });
      if (typeof outcome === 'object') {
        if ('signature' in outcome)
          return Buffer.from(outcome.signature.buffer, outcome.signature.byteOffset, outcome.signature.byteLength);
        throw new Error(outcome.signingFailed); // the issuance reports it as "signing failed: …"
      }
      if (!checkVerdict(outcome)) throw invalidSignature();
      throw new Error('the verifier thread checked the CSR but did not sign');
    };
  }

  async close(): Promise<void> {
    await Promise.all(this.threads.map((t) => t.terminate()));
  }

  /** On the event loop (size 0), or through node:crypto on libuv's pool when every thread died. */
  private async verifyHere(csr: CertificationRequest): Promise<boolean> {
    if (this.threads.length > 0) return verifyCsrSignature(csr);
    if (this.ecdsa === 'node') return verifyCsrSignatureNow(csr);
    const check = signatureCheck(csr);
    return checkVerdict('ecPoint' in check ? verifyEcdsaNatively(check) : verifyCsrSignatureNow(csr) ? 1 : 0);
  }

  /** No thread takes requests: none was started (size 0) or every one has died. */
  private allDown(): boolean {
    return this.threads.every((t) => !t.healthy);
  }

  private enqueue(request: Omit<Pending, 'resolve' | 'reject'>): Promise<VerifierOutcome> {
    return new Promise((resolve, reject) => {
      this.queue.push({ ...request, resolve, reject });
      if (!this.scheduled) {
        this.scheduled = true;
        setImmediate(() => this.dispatch());
      }
    });
  }

  private dispatch(): void {
    this.scheduled = false;
    const queued = this.queue;
    this.queue = [];
    for (let i = 0; i < queued.length; i += MAX_VERIFIER_BATCH) this.send(queued.slice(i, i + MAX_VERIFIER_BATCH));
  }

  private send(batch: Pending[]): void {
    const live = this.threads.filter((t) => t.healthy);
    // A server fault, not the CSR's: the caller maps it to UNAVAILABLE so istio-agent retries.
    if (live.length === 0) return batch.forEach((p) => p.reject(unavailable('no CSR verifier thread is running')));
    const thread = live.reduce((a, b) => (this.loadOf(b) < this.loadOf(a) ? b : a));
    this.load.set(thread, this.loadOf(thread) + batch.length);
    thread
      .call(toBatch(batch))
      .then(
        (outcomes) => batch.forEach((p, i) => (outcomes[i] === undefined ? p.reject(unavailable('no result')) : p.resolve(outcomes[i]))),
        (error: Error) => batch.forEach((p) => p.reject(unavailable(error.message))),
      )
      .finally(() => this.load.set(thread, this.loadOf(thread) - batch.length));
  }

  private loadOf(thread: VerifierThread): number {
    return this.load.get(thread) ?? 0;
  }
}

/** Each issuer key once per batch; each TBS as an exact-size copy (a view of a pooled Buffer would clone its 8 KiB slab). */
function toBatch(batch: readonly Pending[]): VerifierBatch {
  const keys: KeyObject[] = [];
  const items = batch.map(({ check, sign }): VerifierItem => {
    if (!sign) return { check };
    let key = keys.indexOf(sign.key);
    if (key < 0) key = keys.push(sign.key) - 1;
    return { check, sign: { key, hash: sign.hash, tbs: new Uint8Array(sign.tbs) } };
  });
  return { keys, items };
}

/** 1 valid, 0 invalid; a message is a key the thread could not use: the CSR's fault. */
function checkVerdict(result: CheckResult | VerifierOutcome): boolean {
  if (typeof result === 'object') throw unavailable('the verifier thread signed where it was asked only to check');
  if (typeof result === 'string') throw new PkiError('ERR_CSR_UNSUPPORTED_KEY', `signature check failed: ${result}`);
  return result === 1;
}

function invalidSignature(): PkiError {
  return new PkiError('ERR_CSR_SIGNATURE_INVALID', 'CSR signature does not verify: the CSR was altered or not signed by its key');
}

function unavailable(why: string): PkiError {
  return new PkiError('ERR_VERIFIER_UNAVAILABLE', `the CSR signature could not be checked: ${why}`);
}
