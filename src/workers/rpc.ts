/**
 * One small typed request/response channel between the main thread and a worker module, shared
 * by the CSR verifiers, the issuance writer and the WAL checkpointer: request ids, a reply per
 * request, and when the worker dies every waiting caller fails at once so its owner can fall back.
 */
import { existsSync } from 'node:fs';
import { fileURLToPath, pathToFileURL } from 'node:url';
import { isMainThread, parentPort, Worker, type Transferable } from 'node:worker_threads';

/** An error as it crosses the thread boundary (an engine code such as SQLITE_FULL, and its message). */
export interface WorkerFailure {
  readonly code: string;
  readonly message: string;
}

type Envelope<Q> = { readonly id: number; readonly request: Q } | { readonly stop: true };
type Reply<R> = { readonly id: number; readonly result: R } | { readonly id: number; readonly failure: WorkerFailure };

/** An Error carrying the worker-side code, so engine-specific mappings still see it. */
export class WorkerCallError extends Error {
  override readonly name = 'WorkerCallError';
  constructor(
    readonly code: string,
    message: string,
  ) {
    super(message);
  }
}

/**
 * The compiled worker module beside `base` (an `import.meta.url`). Under the test runner the
 * sources run as .ts, which a worker thread cannot load, so it uses the tsc output in dist/.
 */
export function workerModule(base: string, name: string): URL {
  const url = new URL(name, base);
  if (existsSync(url)) return url;
  const path = fileURLToPath(url);
  const at = path.lastIndexOf('/src/');
  const compiled = at < 0 ? path : `${path.slice(0, at)}/dist/${path.slice(at + 5)}`;
  if (!existsSync(compiled)) throw new Error(`worker module ${name} is not built (${compiled}): run "npm run build"`);
  return pathToFileURL(compiled);
}

export interface WorkerClientOptions {
  readonly name: string;
  readonly workerData?: unknown;
  /** Let the process exit while the worker idles (workers that hold no state to flush). */
  readonly unref?: boolean;
  /** Called once when the worker stops unexpectedly (crash or exit); the owner falls back. */
  readonly onFailure?: (error: Error) => void;
}

/** The main thread's side: call(request) resolves with the worker's result or rejects with its failure. */
export class WorkerClient<Q, R> {
  private readonly worker: Worker;
  private readonly waiting = new Map<number, { resolve(result: R): void; reject(error: Error): void }>();
  private nextId = 1;
  private failure: Error | undefined;

  constructor(
    module: URL,
    private readonly options: WorkerClientOptions,
  ) {
    this.worker = new Worker(module, { workerData: options.workerData, name: options.name });
    if (options.unref) this.worker.unref();
    this.worker.on('message', (reply: Reply<R>) => this.settle(reply));
    this.worker.on('error', (error) => this.fail(error));
    this.worker.on('exit', (code) => this.fail(new Error(`the ${options.name} thread exited (code ${code})`)));
  }

  /** Whether the worker still takes requests. */
  get healthy(): boolean {
    return this.failure === undefined;
  }

  /** Requests sent and not yet answered. */
  get pending(): number {
    return this.waiting.size;
  }

  call(request: Q, transfer: readonly Transferable[] = []): Promise<R> {
    if (this.failure) return Promise.reject(this.failure);
    const id = this.nextId++;
    return new Promise<R>((resolve, reject) => {
      this.waiting.set(id, { resolve, reject });
      this.worker.postMessage({ id, request } satisfies Envelope<Q>, transfer);
    });
  }

  /** Asks the worker to finish (it closes what it holds) and waits for it to exit; answers already sent still arrive. */
  async stop(timeoutMs = 5000): Promise<void> {
    if (this.failure) return;
    this.failure = new Error(`the ${this.options.name} thread is stopped`);
    const exited = new Promise<void>((resolve) => this.worker.once('exit', () => resolve()));
    this.worker.postMessage({ stop: true } satisfies Envelope<Q>);
    const timer = setTimeout(() => void this.worker.terminate(), timeoutMs);
    await exited;
    clearTimeout(timer);
  }

  /** Ends the worker now; waiting callers fail. */
  async terminate(): Promise<void> {
    this.failure ??= new Error(`the ${this.options.name} thread is stopped`);
    await this.worker.terminate();
  }

  private settle(reply: Reply<R>): void {
    const waiter = this.waiting.get(reply.id);
    this.waiting.delete(reply.id);
    if (!waiter) return;
    if ('failure' in reply) waiter.reject(new WorkerCallError(reply.failure.code, reply.failure.message));
    else waiter.resolve(reply.result);
  }

  private fail(error: Error): void {
    const unexpected = this.failure === undefined;
    this.failure ??= error;
    for (const waiter of this.waiting.values()) waiter.reject(this.failure);
    this.waiting.clear();
    if (unexpected) this.options.onFailure?.(error);
  }
}

/**
 * The worker's side: answers each request with handle(request), which may return a promise (the
 * reply then waits for it; later requests are handled meanwhile); `onStop` closes what the worker holds.
 */
export function serveRequests<Q, R>(handle: (request: Q) => R | Promise<R>, onStop: () => void = () => undefined): void {
  if (isMainThread || !parentPort) throw new Error('serveRequests runs inside a worker thread');
  const port = parentPort;
  port.on('message', (message: Envelope<Q>) => {
    if ('stop' in message) {
      onStop();
      port.close();
      return;
    }
    const { id } = message;
    let result: R | Promise<R>;
    try {
      result = handle(message.request);
    } catch (error) {
      port.postMessage({ id, failure: failureOf(error) } satisfies Reply<R>);
      return;
    }
    if (!(result instanceof Promise)) {
      port.postMessage({ id, result } satisfies Reply<R>);
      return;
    }
    result.then(
      (settled) => port.postMessage({ id, result: settled } satisfies Reply<R>),
      (error: unknown) => port.postMessage({ id, failure: failureOf(error) } satisfies Reply<R>),
    );
  });
}

export function failureOf(error: unknown): WorkerFailure {
  const code = (error as { code?: unknown } | null)?.code;
  return { code: typeof code === 'string' ? code : '', message: error instanceof Error ? error.message : String(error) };
}
