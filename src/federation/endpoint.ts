import { request } from 'node:https';
import { MeshcaError } from '../errors.js';
import type { SpiffeBundle } from '../spiffe/bundle.js';

/** A failed bundle fetch; the federation keeps its last good bundle. */
export class FederationError extends MeshcaError<'ERR_FEDERATION_FETCH' | 'ERR_FEDERATION_BUNDLE'> {
  override readonly name = 'FederationError';
  constructor(code: 'ERR_FEDERATION_FETCH' | 'ERR_FEDERATION_BUNDLE', message: string) {
    super(code, message, { retryable: true });
  }
}

const MAX_BUNDLE_BYTES = 1024 * 1024;

/**
 * GET a SPIFFE bundle from a bundle endpoint, https_web profile: the server is authenticated with
 * ordinary Web PKI (system roots, or the given PEM roots instead).
 */
export function fetchBundleDocument(url: string, caPem: string | undefined, timeoutMs = 10_000): Promise<string> {
  return new Promise((resolve, reject) => {
    const req = request(url, { method: 'GET', ca: caPem, timeout: timeoutMs, headers: { accept: 'application/json' } }, (res) => {
      const chunks: Buffer[] = [];
      let size = 0;
      res.on('data', (chunk: Buffer) => {
        size += chunk.length;
        if (size > MAX_BUNDLE_BYTES)
          req.destroy(new FederationError('ERR_FEDERATION_FETCH', `the bundle at ${url} is larger than ${MAX_BUNDLE_BYTES} bytes`));
        else chunks.push(chunk);
      });
      res.on('end', () => {
        if (res.statusCode !== 200) reject(new FederationError('ERR_FEDERATION_FETCH', `${url} answered HTTP ${res.statusCode}`));
        else resolve(Buffer.concat(chunks).toString('utf8'));
      });
      res.on('error', reject);
    });
    req.on('timeout', () => req.destroy(new FederationError('ERR_FEDERATION_FETCH', `${url} did not answer within ${timeoutMs} ms`)));
    req.on('error', (error) =>
      reject(
        error instanceof FederationError ? error : new FederationError('ERR_FEDERATION_FETCH', `fetching ${url} failed: ${error.message}`),
      ),
    );
    req.end();
  });
}

/** Checks a fetched document is a SPIFFE bundle: keys with a known use, one x5c per X.509 authority, a kid per JWT authority. */
export function parseBundleDocument(trustDomain: string, text: string): SpiffeBundle {
  let doc: unknown;
  try {
    doc = JSON.parse(text);
  } catch {
    throw new FederationError('ERR_FEDERATION_BUNDLE', `the bundle of ${trustDomain} is not JSON`);
  }
  const bundle = doc as Partial<SpiffeBundle>;
  if (!bundle || !Array.isArray(bundle.keys))
    throw new FederationError('ERR_FEDERATION_BUNDLE', `the bundle of ${trustDomain} has no "keys" array`);
  const x509 = bundle.keys.filter((k) => k.use === 'x509-svid');
  if (x509.length === 0) throw new FederationError('ERR_FEDERATION_BUNDLE', `the bundle of ${trustDomain} has no X.509 authority`);
  for (const key of bundle.keys) {
    if (key.use === 'x509-svid' && (!Array.isArray(key.x5c) || key.x5c.length !== 1))
      throw new FederationError('ERR_FEDERATION_BUNDLE', `an X.509 authority of ${trustDomain} lacks its single x5c certificate`);
    if (key.use === 'jwt-svid' && typeof key.kid !== 'string')
      throw new FederationError('ERR_FEDERATION_BUNDLE', `a JWT authority of ${trustDomain} has no kid`);
  }
  return {
    keys: bundle.keys.filter((k) => k.use === 'x509-svid' || k.use === 'jwt-svid'),
    spiffe_sequence: typeof bundle.spiffe_sequence === 'number' ? bundle.spiffe_sequence : 0,
    spiffe_refresh_hint: typeof bundle.spiffe_refresh_hint === 'number' ? bundle.spiffe_refresh_hint : 0,
  };
}
