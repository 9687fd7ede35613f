/**
 * The native ECDSA verifier (native/ecdsa_verify.c, built by `npm ci` when a C toolchain is
 * present). It checks a CSR's self-signature on P-256/P-384 with the same OpenSSL checks as
 * node:crypto minus the public-key order test that every Node import path runs and that cannot
 * fail on these cofactor-1 curves: ~65 µs instead of ~135 µs per CSR.
 */
import { createRequire } from 'node:module';
import { fileURLToPath } from 'node:url';
import type { CheckResult, EcPublicPoint } from './csr.js';

/** How CSR signatures on EC keys are checked: the native addon, or node:crypto. */
export type EcdsaVerifierKind = 'native' | 'node';

interface NativeAddon {
  verify(curve: number, hash: number, point: Uint8Array, data: Uint8Array, signature: Uint8Array): number;
}

export interface EcSignature {
  readonly hash: string;
  readonly data: Uint8Array;
  readonly signature: Uint8Array;
  readonly ecPoint: EcPublicPoint;
}

const ADDON = fileURLToPath(new URL('../../native/build/Release/meshca_native.node', import.meta.url));
const CURVES: Readonly<Record<EcPublicPoint['namedCurve'], number>> = { 'P-256': 0, 'P-384': 1 };
const HASHES: Readonly<Record<string, number>> = { sha256: 0, sha384: 1, sha512: 2 };

type Load = { readonly addon: NativeAddon } | { readonly addon?: undefined; readonly reason: string };
let load: Load | undefined;

/** Loads the addon once per thread; the reason says why it is missing (and how to build it). */
function loadAddon(): Load {
  if (load) return load;
  try {
    load = { addon: createRequire(import.meta.url)(ADDON) as NativeAddon };
  } catch (error) {
    const detail = (error as NodeJS.ErrnoException).code === 'MODULE_NOT_FOUND' ? 'not built' : (error as Error).message;
    load = { reason: `${ADDON}: ${detail} (install python3, make and g++, then run "npm run build:native")` };
  }
  return load;
}

/** Undefined when the addon is available; otherwise why not. */
export function nativeEcdsaUnavailable(): string | undefined {
  const loaded = loadAddon();
  return loaded.addon ? undefined : loaded.reason;
}

/** 1 valid, 0 invalid, or an error message for a point that is not a public key; the addon must be loaded. */
export function verifyEcdsaNatively(check: EcSignature): CheckResult {
  const { addon } = loadAddon();
  const hash = HASHES[check.hash];
  if (!addon || hash === undefined) throw new Error(`native ECDSA verifier cannot check ${check.hash} signatures here`);
  const result = addon.verify(CURVES[check.ecPoint.namedCurve], hash, check.ecPoint.point, check.data, check.signature);
  return result === 1 ? 1 : result === 0 ? 0 : `the ${check.ecPoint.namedCurve} public key is not a point on the curve`;
}
