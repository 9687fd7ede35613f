import type { FastifyError, FastifyReply, FastifyRequest } from 'fastify';
import { AuthorityError, type AuthorityErrorCode } from '../authority/errors.js';
import { PkiError } from '../pki/errors.js';
import { SpiffeIdError } from '../spiffe/id.js';
import { StoreError } from '../store/errors.js';

const AUTHORITY_STATUS: Record<AuthorityErrorCode, number> = {
  ERR_AUTHORITY_NOT_FOUND: 404,
  ERR_AUTHORITY_STATE: 409,
  ERR_AUTHORITY_IN_USE: 409,
  ERR_AUTHORITY_INVALID: 400,
  ERR_AUTHORITY_INCONSISTENT: 500,
};

export interface ErrorBody {
  readonly code: string;
  readonly message: string;
  readonly details?: Readonly<Record<string, unknown>>;
}

/** Maps domain errors to HTTP; anything unexpected is a 500 without internals. */
export function adminErrorHandler(error: FastifyError | Error, request: FastifyRequest, reply: FastifyReply): void {
  const [status, body] = classify(error);
  if (status >= 500) request.log.error({ err: error }, 'admin request failed');
  void reply.code(status).send(body);
}

function classify(error: FastifyError | Error): [number, ErrorBody] {
  if (error instanceof AuthorityError) return [AUTHORITY_STATUS[error.code], { code: error.code, message: error.message, details: error.details }];
  if (error instanceof PkiError || error instanceof SpiffeIdError) return [400, { code: error.code, message: error.message }];
  if (error instanceof StoreError) {
    if (error.code === 'ERR_STORE_CONFLICT') return [409, { code: error.code, message: `${error.message}; the state changed concurrently, re-read and retry` }];
    if (error.code === 'ERR_STORE_BAD_CURSOR') return [400, { code: error.code, message: error.message }];
    if (error.code === 'ERR_STORE_NOT_FOUND') return [404, { code: error.code, message: error.message }];
    if (error.code === 'ERR_STORE_DUPLICATE') return [409, { code: error.code, message: error.message }];
    return [503, { code: error.code, message: 'the store is unavailable; retry later' }];
  }
  const fastifyError = error as FastifyError;
  if (fastifyError.validation) return [400, { code: 'ERR_VALIDATION', message: fastifyError.message }];
  if (fastifyError.statusCode && fastifyError.statusCode < 500) {
    return [fastifyError.statusCode, { code: fastifyError.code ?? 'ERR_BAD_REQUEST', message: fastifyError.message }];
  }
  return [500, { code: 'ERR_INTERNAL', message: 'internal error; see the meshca server log' }];
}
