import { get, request } from 'node:https';

export interface AdminResponse {
  readonly status: number;
  readonly headers: Record<string, string | string[] | undefined>;
  readonly text: string;
  readonly body: Buffer;
  json<T = Record<string, unknown>>(): T;
}

export interface AdminTarget {
  readonly port: number;
  /** PEM roots the client trusts for the server's certificate. */
  readonly roots: string;
  readonly token?: string;
  /** Client certificate for mutual TLS. */
  readonly client?: { readonly key: string; readonly cert: string };
}

/** A real HTTPS request to the admin API, verifying the server against the mesh roots. */
export function adminCall(
  target: AdminTarget,
  method: string,
  path: string,
  options: { body?: unknown; raw?: Buffer; token?: string | null; headers?: Record<string, string> } = {},
): Promise<AdminResponse> {
  const token = options.token === null ? undefined : (options.token ?? target.token);
  const body = options.raw ?? (options.body === undefined ? undefined : JSON.stringify(options.body));
  const headers: Record<string, string> = { ...(options.headers ?? {}) };
  if (token) headers.authorization = `Bearer ${token}`;
  if (options.raw === undefined && body !== undefined) headers['content-type'] = 'application/json';
  return new Promise((resolve, reject) => {
    const req = request(
      {
        host: '127.0.0.1',
        port: target.port,
        path,
        method,
        headers,
        ca: target.roots,
        servername: 'localhost',
        key: target.client?.key,
        cert: target.client?.cert,
      },
      (res) => {
        const chunks: Buffer[] = [];
        res.on('data', (c: Buffer) => chunks.push(c));
        res.on('end', () => {
          const body = Buffer.concat(chunks);
          const text = body.toString('utf8');
          resolve({ status: res.statusCode ?? 0, headers: res.headers, text, body, json: <T>() => JSON.parse(text) as T });
        });
      },
    );
    req.on('error', reject);
    req.end(body);
  });
}

/** The public trust bundle, fetched the way a bootstrapping client would (trust on first use: it is public data). */
export function publicBundle(port: number): Promise<string> {
  return new Promise((resolve, reject) => {
    get({ host: '127.0.0.1', port, path: '/v1/bundle', rejectUnauthorized: false }, (res) => {
      let text = '';
      res.on('data', (c: Buffer) => (text += c.toString()));
      res.on('end', () => resolve(text));
    }).on('error', reject);
  });
}
