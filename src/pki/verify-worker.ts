/** Worker thread of the CSR verifier pool: imports each public key and checks the signature off the event loop. */
import { verify } from 'node:crypto';
import { serveRequests } from '../workers/rpc.js';
import type { SignatureCheck } from './csr.js';

/** Per check: 1 valid, 0 invalid, or the message of the error the key or signature raised. */
export type CheckResult = 0 | 1 | string;

export function runChecks(checks: readonly SignatureCheck[]): CheckResult[] {
  return checks.map((c) => {
    try {
      return verify(c.hash, c.data, c.key, c.signature) ? 1 : 0;
    } catch (error) {
      return error instanceof Error ? error.message : String(error);
    }
  });
}

serveRequests<readonly SignatureCheck[], CheckResult[]>(runChecks);
