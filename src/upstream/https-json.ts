/** JSON over HTTPS for the upstream CA clients (node:https: a custom CA per upstream, no extra dependency). */
import * as https from 'node:https';
import { UpstreamError } from '../authority/errors.js';

export interface JsonResponse {
  readonly status: number;
  /** Parsed JSON body; undefined when the body was empty or not JSON. */
  readonly body: unknown;
}

export interface JsonRequest {
  readonly method: 'GET' | 'POST' | 'PUT';
  readonly url: URL;
  readonly headers?: Readonly<Record<string, string>>;
  readonly body?: unknown;
  /** PEM roots that verify the server; default: Node's. */
  readonly ca?: string;
  readonly timeoutMs: number;
}

/** Far above any answer an upstream CA gives (a certificate chain); bounds memory on a hostile server. */
const MAX_BODY_BYTES = 1024 * 1024;

/** Resolves with any HTTP status; rejects with ERR_UPSTREAM_UNAVAILABLE when there is no answer at all. */
export function requestJson(request: JsonRequest): Promise<JsonResponse> {
  const payload = request.body === undefined ? undefined : JSON.stringify(request.body);
  const headers: Record<string, string> = { accept: 'application/json', ...request.headers };
  if (payload !== undefined) headers['content-type'] = 'application/json';
  return new Promise((resolve, reject) => {
    const fail = (reason: string, cause?: unknown) =>
      reject(
        new UpstreamError('ERR_UPSTREAM_UNAVAILABLE', `${request.method} ${request.url.origin}${request.url.pathname}: ${reason}`, {
          cause,
        }),
      );
    const req = https.request(
      request.url,
      { method: request.method, headers, ca: request.ca, timeout: request.timeoutMs, minVersion: 'TLSv1.2' },
      (res) => {
        const chunks: Buffer[] = [];
        let size = 0;
        res.on('data', (chunk: Buffer) => {
          size += chunk.length;
          if (size > MAX_BODY_BYTES) req.destroy(new Error(`response larger than ${MAX_BODY_BYTES} bytes`));
          else chunks.push(chunk);
        });
        res.on('end', () => resolve({ status: res.statusCode ?? 0, body: parseJson(Buffer.concat(chunks).toString('utf8')) }));
        res.on('error', (error) => fail(error.message, error));
      },
    );
    req.on('timeout', () => req.destroy(new Error(`no answer within ${request.timeoutMs} ms`)));
    req.on('error', (error) => fail(error.message, error));
    req.end(payload);
  });
}

function parseJson(text: string): unknown {
  if (text.trim() === '') return undefined;
  try {
    return JSON.parse(text) as unknown;
  } catch {
    return undefined;
  }
}
