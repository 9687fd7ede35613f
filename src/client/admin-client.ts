import { request } from 'node:https';
import { MeshcaError } from '../errors.js';

/** An error answer of the admin API: the server's stable code, its message and details. */
export class AdminApiError extends MeshcaError {
  override readonly name = 'AdminApiError';
  constructor(
    readonly status: number,
    code: string,
    message: string,
    readonly details: Record<string, unknown> = {},
    /** The server's next step in API terms; the CLI replaces it with its own. */
    readonly next?: string,
  ) {
    super(code, message, { retryable: status >= 500 });
  }

  /** The message without the API's next step. */
  get domainMessage(): string {
    return this.next !== undefined && this.message.endsWith(`; ${this.next}`) ? this.message.slice(0, -this.next.length - 2) : this.message;
  }
}

export interface AdminClientOptions {
  /** e.g. https://localhost:8443 */
  readonly url: string;
  readonly token: string;
  /** PEM roots to verify the admin server with (meshca's own bundle). */
  readonly ca: string;
}

/** A small client for meshca's admin API, used by the CLI. */
export class AdminClient {
  private readonly base: URL;

  constructor(private readonly options: AdminClientOptions) {
    this.base = new URL(options.url);
  }

  json<T>(method: string, path: string, body?: unknown): Promise<T> {
    return this.send(method, path, body).then((r) => JSON.parse(r.toString('utf8')) as T);
  }

  send(method: string, path: string, body?: unknown): Promise<Buffer> {
    const payload = body === undefined ? undefined : JSON.stringify(body);
    const headers: Record<string, string> = { authorization: `Bearer ${this.options.token}` };
    if (payload !== undefined) headers['content-type'] = 'application/json';
    return new Promise((resolve, reject) => {
      const req = request(
        {
          host: this.base.hostname,
          port: this.base.port || 443,
          path,
          method,
          headers,
          ca: this.options.ca,
          servername: this.base.hostname,
        },
        (res) => {
          const chunks: Buffer[] = [];
          res.on('data', (c: Buffer) => chunks.push(c));
          res.on('end', () => {
            const data = Buffer.concat(chunks);
            if ((res.statusCode ?? 500) < 400) return resolve(data);
            const parsed = safeJson(data);
            reject(
              new AdminApiError(
                res.statusCode ?? 500,
                String(parsed.code ?? 'ERR_HTTP'),
                String(parsed.message ?? `HTTP ${res.statusCode}`),
                (parsed.details as Record<string, unknown>) ?? {},
                typeof parsed.next === 'string' ? parsed.next : undefined,
              ),
            );
          });
        },
      );
      req.on('error', (e) =>
        reject(new Error(`cannot reach the admin API at ${this.options.url}: ${e.message} (is "meshca serve" running? check --admin-url)`)),
      );
      req.end(payload);
    });
  }
}

function safeJson(data: Buffer): Record<string, unknown> {
  try {
    return JSON.parse(data.toString('utf8')) as Record<string, unknown>;
  } catch {
    return {};
  }
}
