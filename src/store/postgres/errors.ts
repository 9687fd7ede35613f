import { StoreError } from '../errors.js';

/** Unique indexes that encode replica-wide invariants: hitting one means another replica got there first. */
const INVARIANT_INDEXES: Record<string, string> = {
  authorities_one_prepared_root: 'another root is already prepared (perhaps by another replica); activate or remove it first',
  authorities_one_active_intermediate: 'another intermediate became active concurrently',
};

interface PgError {
  readonly code?: string;
  readonly constraint?: string;
  readonly message?: string;
}

/** PostgreSQL errors become StoreErrors; `what` names the record for constraint failures. */
export function toStoreError(error: unknown, what = 'the record'): StoreError {
  if (error instanceof StoreError) return error;
  const { code, constraint } = (error ?? {}) as PgError;
  const message = error instanceof Error ? error.message : String(error);
  if (code === '23505') {
    const invariant = constraint === undefined ? undefined : INVARIANT_INDEXES[constraint];
    if (invariant) return new StoreError('ERR_STORE_CONFLICT', invariant, { cause: error });
    return new StoreError('ERR_STORE_DUPLICATE', `${what} is already stored (${message})`, { cause: error });
  }
  if (code === '23503') return new StoreError('ERR_STORE_NOT_FOUND', `${what} refers to an authority that is not stored`, { cause: error });
  // Connection refused or lost, timeouts, shutdown, serialization: all worth retrying later.
  return new StoreError('ERR_STORE_UNAVAILABLE', `the PostgreSQL store failed: ${message}`, { cause: error });
}
