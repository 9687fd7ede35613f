import { X509Certificate } from 'node:crypto';

/** SPIFFE Trust Domain and Bundle spec: a JWK Set; X.509 authorities without kid, JWT authorities with one. */
export interface SpiffeBundle {
  readonly keys: readonly SpiffeBundleKey[];
  readonly spiffe_sequence: number;
  readonly spiffe_refresh_hint: number;
}

export interface SpiffeBundleKey {
  readonly kty: string;
  readonly use: 'x509-svid' | 'jwt-svid';
  readonly x5c?: readonly [string];
  readonly kid?: string;
  readonly [parameter: string]: unknown;
}

/** A JWT-SVID signing key as the bundle publishes it. */
export interface JwtBundleKey {
  readonly kid: string;
  readonly publicJwk: Readonly<Record<string, string>>;
}

const PUBLIC_JWK_PARAMS = new Set(['kty', 'crv', 'x', 'y', 'n', 'e']);

function publicParams(jwk: Readonly<Record<string, unknown>>): Record<string, unknown> {
  return Object.fromEntries(Object.entries(jwk).filter(([k]) => PUBLIC_JWK_PARAMS.has(k)));
}

/** The JWK of a root certificate's public key, with its certificate as the single x5c entry. */
export function bundleKey(rootDer: Buffer): SpiffeBundleKey {
  const jwk = new X509Certificate(rootDer).publicKey.export({ format: 'jwk' }) as Record<string, unknown>;
  return { ...publicParams(jwk), kty: String(jwk.kty), use: 'x509-svid', x5c: [rootDer.toString('base64')] };
}

export function jwtBundleKey(key: JwtBundleKey): SpiffeBundleKey {
  return { ...publicParams(key.publicJwk), kty: String(key.publicJwk.kty), use: 'jwt-svid', kid: key.kid };
}

export function spiffeBundle(
  rootDers: readonly Buffer[],
  sequence: number,
  refreshHintSeconds: number,
  jwtKeys: readonly JwtBundleKey[] = [],
): SpiffeBundle {
  return {
    keys: [...rootDers.map(bundleKey), ...jwtKeys.map(jwtBundleKey)],
    spiffe_sequence: sequence,
    spiffe_refresh_hint: refreshHintSeconds,
  };
}
