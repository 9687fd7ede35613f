import { X509Certificate } from 'node:crypto';

/** SPIFFE Trust Domain and Bundle spec: a JWK Set, one X.509 authority per key, no kid. */
export interface SpiffeBundle {
  readonly keys: readonly SpiffeBundleKey[];
  readonly spiffe_sequence: number;
  readonly spiffe_refresh_hint: number;
}

export interface SpiffeBundleKey {
  readonly kty: string;
  readonly use: 'x509-svid';
  readonly x5c: readonly [string];
  readonly [parameter: string]: unknown;
}

const PUBLIC_JWK_PARAMS = new Set(['kty', 'crv', 'x', 'y', 'n', 'e']);

/** The JWK of a root certificate's public key, with its certificate as the single x5c entry. */
export function bundleKey(rootDer: Buffer): SpiffeBundleKey {
  const jwk = new X509Certificate(rootDer).publicKey.export({ format: 'jwk' }) as Record<string, unknown>;
  const params = Object.fromEntries(Object.entries(jwk).filter(([k]) => PUBLIC_JWK_PARAMS.has(k)));
  return { ...params, kty: String(jwk.kty), use: 'x509-svid', x5c: [rootDer.toString('base64')] };
}

export function spiffeBundle(rootDers: readonly Buffer[], sequence: number, refreshHintSeconds: number): SpiffeBundle {
  return { keys: rootDers.map(bundleKey), spiffe_sequence: sequence, spiffe_refresh_hint: refreshHintSeconds };
}
