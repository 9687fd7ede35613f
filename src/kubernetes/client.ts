/**
 * A small Kubernetes API client on node:https.
 *
 * Why not @kubernetes/client-node: meshca calls eight endpoints. Doing it on node:https keeps the
 * dependency tree (and its supply chain) unchanged, and gives exact control over what the CA's hot
 * path needs: a keep-alive agent with the cluster CA, a per-attempt deadline, retries with jittered
 * backoff only where the API could not answer (network, 429, 5xx), and a client-side token bucket
 * (qps/burst, as client-go's) that fails fast instead of queueing without bound. client-node 1.x
 * offers none of the latter three out of the box, and its 2.x line no longer supports Node 20.
 */

import { readFileSync } from 'node:fs';
import { MeshcaError } from '../errors.js';
import * as https from 'node:https';
import type { IncomingMessage } from 'node:http';
import type { Logger } from 'pino';
import type { KubeConnection } from './connection.js';
import { TokenBucket } from './rate-limiter.js';
import type { Status, WatchEvent } from './types.js';

export interface KubeClientOptions {
  readonly connection: KubeConnection;
  /** Sustained requests per second (default 50) and burst (default 100). */
  readonly qps?: number;
  readonly burst?: number;
  /** Deadline of one attempt, response body included (default 5 s). Also the longest wait for a rate-limit token. */
  readonly timeoutMs?: number;
  /** Attempts per request for retryable failures (default 3). */
  readonly maxAttempts?: number;
  /** First backoff (default 200 ms), doubled per attempt, full jitter, capped at 2 s. */
  readonly backoffMs?: number;
  readonly logger?: Logger;
}

/**
 * A failed API call. `retryable` means the API gave no answer (network error, timeout, 429, 5xx,
 * client-side rate limit); callers on the gRPC path turn that into UNAVAILABLE, never into a verdict.
 */
export class KubeApiError extends MeshcaError<'ERR_KUBE_API'> {
  override readonly name = 'KubeApiError';

  constructor(
    /** HTTP status; 0 when there was no response. */
    readonly status: number,
    /** metav1.Status reason (NotFound, Conflict, AlreadyExists, ...) or a transport label. */
    readonly reason: string,
    message: string,
    retryable: boolean,
    options?: { readonly cause?: unknown },
  ) {
    super('ERR_KUBE_API', message, { cause: options?.cause, retryable });
  }
}

export const isNotFound = (error: unknown): boolean => error instanceof KubeApiError && error.status === 404;
export const isConflict = (error: unknown): boolean => error instanceof KubeApiError && error.status === 409;

const MAX_BODY_BYTES = 32 * 1024 * 1024;
const TOKEN_FILE_REFRESH_MS = 60_000;
const MAX_BACKOFF_MS = 2_000;

type Query = Readonly<Record<string, string | number | boolean | undefined>>;

interface RawResponse {
  readonly status: number;
  readonly headers: IncomingMessage['headers'];
  readonly body: Buffer;
}

export class KubeClient {
  readonly description: string;
  readonly namespace: string | undefined;
  readonly #connection: KubeConnection;
  readonly #agent: https.Agent;
  readonly #bucket: TokenBucket;
  readonly #timeoutMs: number;
  readonly #maxAttempts: number;
  readonly #backoffMs: number;
  readonly #logger: Logger | undefined;
  #token: { value: string; readAt: number } | undefined;

  constructor(options: KubeClientOptions) {
    const c = options.connection;
    this.#connection = c;
    this.description = c.description;
    this.namespace = c.namespace;
    this.#timeoutMs = options.timeoutMs ?? 5_000;
    this.#maxAttempts = Math.max(1, options.maxAttempts ?? 3);
    this.#backoffMs = options.backoffMs ?? 200;
    this.#bucket = new TokenBucket(options.qps ?? 50, options.burst ?? 100);
    this.#logger = options.logger;
    this.#agent = new https.Agent({ keepAlive: true, maxSockets: 64, ...this.#tlsOptions() });
    if (c.insecureSkipTlsVerify)
      this.#logger?.warn({ api: c.description }, 'insecure-skip-tls-verify: the Kubernetes API server is not authenticated');
  }

  get<T>(path: string, query?: Query): Promise<T> {
    return this.request<T>('GET', path, { query });
  }

  post<T>(path: string, body: unknown): Promise<T> {
    return this.request<T>('POST', path, { body });
  }

  put<T>(path: string, body: unknown): Promise<T> {
    return this.request<T>('PUT', path, { body });
  }

  /** One API call with throttling, a deadline per attempt and retries of retryable failures. */
  async request<T>(method: string, path: string, options: { query?: Query; body?: unknown } = {}): Promise<T> {
    const url = this.#url(path, options.query);
    const body = options.body === undefined ? undefined : Buffer.from(JSON.stringify(options.body));
    for (let attempt = 1; ; attempt++) {
      let failure: KubeApiError;
      try {
        await this.#throttle();
        const response = await this.#send(method, url, body);
        if (response.status >= 200 && response.status < 300) return parseJson<T>(response.body, url);
        failure = apiError(method, url, response);
      } catch (error) {
        failure = error instanceof KubeApiError ? error : transportError(method, url, error);
      }
      if (!failure.retryable || attempt >= this.#maxAttempts || failure.reason === 'RateLimited') throw failure;
      const delay = this.#backoff(attempt, failure);
      this.#logger?.debug(
        { method, path: url.pathname, attempt, status: failure.status, reason: failure.reason, delayMs: Math.round(delay) },
        'retrying Kubernetes API call',
      );
      await sleep(delay);
    }
  }

  /**
   * A watch stream: calls onEvent for each event until the server ends the stream (resolves), the
   * signal aborts (resolves), or an error (rejects; a 410 Gone ERROR event becomes status 410).
   */
  async watch<T>(path: string, query: Query, onEvent: (event: WatchEvent<T>) => void, signal: AbortSignal): Promise<void> {
    if (signal.aborted) return;
    await this.#throttle();
    const url = this.#url(path, { ...query, watch: true });
    const idleMs = (Number(query.timeoutSeconds ?? 300) + 30) * 1000;
    return new Promise<void>((resolve, reject) => {
      const req = https.request(url, { method: 'GET', agent: this.#agent, headers: this.#headers(undefined), ...this.#tlsOptions() });
      let idle: NodeJS.Timeout | undefined;
      const touch = () => {
        clearTimeout(idle);
        idle = setTimeout(
          () => req.destroy(new KubeApiError(0, 'Timeout', `watch ${url.pathname} was idle for ${idleMs} ms`, true)),
          idleMs,
        );
        idle.unref();
      };
      const finish = (error?: unknown) => {
        clearTimeout(idle);
        signal.removeEventListener('abort', abort);
        if (error === undefined || signal.aborted) resolve();
        else reject(error instanceof KubeApiError ? error : transportError('WATCH', url, error));
      };
      const abort = () => req.destroy();
      signal.addEventListener('abort', abort, { once: true });
      touch();
      req.on('error', finish);
      req.on('response', (res) => {
        if (res.statusCode !== 200) {
          collect(res).then((body) => finish(apiError('WATCH', url, { status: res.statusCode ?? 0, headers: res.headers, body })), finish);
          return;
        }
        let buffered = '';
        res.setEncoding('utf8');
        res.on('data', (chunk: string) => {
          touch();
          buffered += chunk;
          let newline: number;
          while ((newline = buffered.indexOf('\n')) !== -1) {
            const line = buffered.slice(0, newline).trim();
            buffered = buffered.slice(newline + 1);
            if (line === '') continue;
            const event = JSON.parse(line) as WatchEvent<T>;
            if (event.type === 'ERROR') {
              const status = event.object as unknown as Status;
              req.destroy();
              finish(
                new KubeApiError(
                  status.code ?? 500,
                  status.reason ?? 'Unknown',
                  `watch ${url.pathname}: ${status.message ?? 'error event'}`,
                  false,
                ),
              );
              return;
            }
            onEvent(event);
          }
        });
        res.on('end', () => finish());
        res.on('error', finish);
        // A cut connection may end the stream without 'end' or 'error'.
        res.on('close', () =>
          finish(res.complete ? undefined : new KubeApiError(0, 'Unavailable', `watch ${url.pathname}: connection closed`, true)),
        );
      });
      req.end();
    });
  }

  close(): void {
    this.#agent.destroy();
  }

  #url(path: string, query: Query | undefined): URL {
    const base = this.#connection.server;
    const url = new URL(base.pathname.replace(/\/$/, '') + path, base);
    for (const [key, value] of Object.entries(query ?? {})) if (value !== undefined) url.searchParams.set(key, String(value));
    return url;
  }

  #tlsOptions(): Pick<https.AgentOptions, 'ca' | 'cert' | 'key' | 'servername' | 'rejectUnauthorized' | 'minVersion'> {
    const c = this.#connection;
    return {
      ca: c.ca,
      cert: c.clientCert,
      key: c.clientKey,
      servername: c.tlsServerName,
      rejectUnauthorized: !c.insecureSkipTlsVerify,
      minVersion: 'TLSv1.2',
    };
  }

  #headers(body: Buffer | undefined): Record<string, string> {
    const headers: Record<string, string> = { accept: 'application/json', 'user-agent': 'meshca' };
    const token = this.#bearerToken();
    if (token !== undefined) headers.authorization = `Bearer ${token}`;
    if (body !== undefined) {
      headers['content-type'] = 'application/json';
      headers['content-length'] = String(body.length);
    }
    return headers;
  }

  /** Projected service-account tokens rotate: re-read the file every minute, keep the last good one. */
  #bearerToken(): string | undefined {
    const { token, tokenFile } = this.#connection;
    if (tokenFile === undefined) return token;
    const now = Date.now();
    if (this.#token === undefined || now - this.#token.readAt > TOKEN_FILE_REFRESH_MS) {
      try {
        this.#token = { value: readFileSync(tokenFile, 'utf8').trim(), readAt: now };
      } catch (error) {
        if (this.#token === undefined)
          throw new KubeApiError(0, 'Unauthorized', `cannot read token file ${tokenFile}: ${(error as Error).message}`, true);
        this.#logger?.warn({ tokenFile, err: error }, 'cannot re-read the Kubernetes token file; using the previous token');
      }
    }
    return this.#token!.value;
  }

  async #throttle(): Promise<void> {
    const wait = this.#bucket.reserve(this.#timeoutMs);
    if (wait === undefined) throw new KubeApiError(0, 'RateLimited', 'client-side rate limit reached (--kube-qps/--kube-burst)', true);
    if (wait > 0) await sleep(wait);
  }

  #send(method: string, url: URL, body: Buffer | undefined): Promise<RawResponse> {
    return new Promise<RawResponse>((resolve, reject) => {
      const req = https.request(url, { method, agent: this.#agent, headers: this.#headers(body), ...this.#tlsOptions() });
      const timer = setTimeout(
        () => req.destroy(new KubeApiError(0, 'Timeout', `${method} ${url.pathname} timed out after ${this.#timeoutMs} ms`, true)),
        this.#timeoutMs,
      );
      req.on('error', (error) => {
        clearTimeout(timer);
        reject(error);
      });
      req.on('response', (res) => {
        collect(res).then(
          (data) => {
            clearTimeout(timer);
            resolve({ status: res.statusCode ?? 0, headers: res.headers, body: data });
          },
          (error: unknown) => {
            clearTimeout(timer);
            reject(error);
          },
        );
      });
      req.end(body);
    });
  }

  #backoff(attempt: number, failure: KubeApiError & { retryAfterMs?: number }): number {
    const exponential = Math.min(MAX_BACKOFF_MS, this.#backoffMs * 2 ** (attempt - 1));
    return Math.max(failure.retryAfterMs ?? 0, Math.random() * exponential);
  }
}

function collect(res: IncomingMessage): Promise<Buffer> {
  return new Promise((resolve, reject) => {
    const chunks: Buffer[] = [];
    let size = 0;
    res.on('data', (chunk: Buffer) => {
      size += chunk.length;
      if (size > MAX_BODY_BYTES) {
        res.destroy(new KubeApiError(0, 'TooLarge', `response exceeds ${MAX_BODY_BYTES} bytes`, false));
        return;
      }
      chunks.push(chunk);
    });
    res.on('end', () => resolve(Buffer.concat(chunks)));
    res.on('error', reject);
    res.on('aborted', () => reject(new Error('response aborted')));
  });
}

function parseJson<T>(body: Buffer, url: URL): T {
  try {
    return JSON.parse(body.toString('utf8')) as T;
  } catch (cause) {
    throw new KubeApiError(0, 'BadResponse', `${url.pathname}: the API server's response is not JSON`, true, { cause });
  }
}

function apiError(method: string, url: URL, response: RawResponse): KubeApiError & { retryAfterMs?: number } {
  let status: Partial<Status> = {};
  try {
    status = JSON.parse(response.body.toString('utf8')) as Status;
  } catch {
    // not a metav1.Status (a proxy's error page): fall back to the HTTP status
  }
  const code = response.status;
  const retryable = code === 429 || code >= 500;
  const reason = status.reason || (code === 429 ? 'TooManyRequests' : `HTTP${code}`);
  const error = new KubeApiError(
    code,
    reason,
    `${method} ${url.pathname}: ${code} ${status.message ?? reason}`,
    retryable,
  ) as KubeApiError & { retryAfterMs?: number };
  const retryAfter = Number(response.headers['retry-after']);
  if (retryable && Number.isFinite(retryAfter) && retryAfter > 0) error.retryAfterMs = Math.min(MAX_BACKOFF_MS, retryAfter * 1000);
  return error;
}

function transportError(method: string, url: URL, error: unknown): KubeApiError {
  if (error instanceof KubeApiError) return error;
  const code = (error as NodeJS.ErrnoException).code;
  return new KubeApiError(0, 'Unavailable', `${method} ${url.origin}${url.pathname}: ${code ?? (error as Error).message}`, true, {
    cause: error,
  });
}

function sleep(ms: number): Promise<void> {
  return new Promise((resolve) => setTimeout(resolve, ms));
}
