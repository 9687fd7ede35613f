/** Worker thread of the CSR verifier pool: imports each public key and checks the signature off the event loop. */
import { KeyObject, verify, webcrypto, type VerifyJsonWebKeyInput, type VerifyPublicKeyInput } from 'node:crypto';
import { workerData } from 'node:worker_threads';
import { serveRequests } from '../workers/rpc.js';
import type { CheckResult, SignatureCheck } from './csr.js';
import { type EcdsaVerifierKind, verifyEcdsaNatively } from './native-ecdsa.js';

export interface VerifierThreadData {
  readonly ecdsa: EcdsaVerifierKind;
}

const ecdsa: EcdsaVerifierKind = (workerData as VerifierThreadData | undefined)?.ecdsa ?? 'node';

/**
 * An uncompressed EC point goes through WebCrypto's raw import: it decodes the point (refusing one
 * off the curve) and runs the same full key check as a JWK import, yet import + verify measured
 * 22 µs less CPU than through JWK (123 against 145 µs for P-256 on one core).
 */
async function publicKey(check: SignatureCheck): Promise<KeyObject | VerifyPublicKeyInput | VerifyJsonWebKeyInput> {
  if ('key' in check) return check.key;
  const { namedCurve, point } = check.ecPoint;
  return KeyObject.from(await webcrypto.subtle.importKey('raw', point, { name: 'ECDSA', namedCurve }, true, ['verify']));
}

export async function runCheck(check: SignatureCheck): Promise<CheckResult> {
  try {
    if (ecdsa === 'native' && 'ecPoint' in check) return verifyEcdsaNatively(check);
    return verify(check.hash, check.data, await publicKey(check), check.signature) ? 1 : 0;
  } catch (error) {
    return error instanceof Error ? error.message : String(error);
  }
}

serveRequests<readonly SignatureCheck[], CheckResult[]>((checks) => Promise.all(checks.map(runCheck)));
