/** Store errors with stable codes; nothing outside store/ sees engine errors. */
import { MeshcaError } from '../errors.js';

export type StoreErrorCode =
  /** A guarded transition found another state (another replica or request got there first); the message names it. */
  | 'ERR_STORE_CONFLICT'
  /** The record a change refers to does not exist (unknown authority id). */
  | 'ERR_STORE_NOT_FOUND'
  /** The schema cannot be brought to what this build expects; the store refuses to open. */
  | 'ERR_STORE_MIGRATION'
  /** I/O failure, lock timeout, or the store is closed; retrying later may succeed. */
  | 'ERR_STORE_UNAVAILABLE'
  /** A unique key already exists (serial number, authority id or fingerprint). */
  | 'ERR_STORE_DUPLICATE'
  /** A paging cursor that this store did not produce. */
  | 'ERR_STORE_BAD_CURSOR'
  /** Free space on the data volume is under --min-free-disk; new issuance records are refused. */
  | 'ERR_STORE_DISK_LOW'
  /** An issuance record for an identity on the deny-list (IssuedCertificateRecord.refuseIfDenied). */
  | 'ERR_STORE_DENIED';

export class StoreError extends MeshcaError<StoreErrorCode> {
  override readonly name = 'StoreError';
  constructor(code: StoreErrorCode, message: string, options?: { cause?: unknown }) {
    super(code, message, { cause: options?.cause, retryable: code === 'ERR_STORE_UNAVAILABLE' || code === 'ERR_STORE_CONFLICT' });
  }
}
