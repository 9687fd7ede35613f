import type { FastifyError, FastifyReply, FastifyRequest } from 'fastify';
import { AuthorityError } from '../authority/errors.js';
import { MeshcaError } from '../errors.js';

/** A request value the route's schema cannot express (a serial's form, a lifetime's range). */
export class InvalidInputError extends MeshcaError<'ERR_VALIDATION'> {
  override readonly name = 'InvalidInputError';
  constructor(message: string) {
    super('ERR_VALIDATION', message);
  }
}

/** The admin transport's one code → HTTP status table (docs/errors.md); unlisted codes are 500 without their message. */
const HTTP_STATUS: Readonly<Record<string, number>> = {
  ERR_VALIDATION: 400,
  ERR_AUTHORITY_NOT_FOUND: 404,
  ERR_AUTHORITY_STATE: 409,
  ERR_AUTHORITY_IN_USE: 409,
  ERR_AUTHORITY_INVALID: 400,
  ERR_AUTHORITY_INCONSISTENT: 500,
  ERR_STORE_CONFLICT: 409,
  ERR_STORE_BAD_CURSOR: 400,
  ERR_STORE_NOT_FOUND: 404,
  ERR_STORE_DUPLICATE: 409,
  ERR_STORE_UNAVAILABLE: 503,
  // Parsing what the request carries (PEM, certificates, keys, SPIFFE IDs) fails on the input.
  ERR_PEM_MALFORMED: 400,
  ERR_CSR_MALFORMED: 400,
  ERR_CSR_UNSUPPORTED_KEY: 400,
  ERR_CSR_UNSUPPORTED_SIGNATURE: 400,
  ERR_CERT_MALFORMED: 400,
  ERR_KEY_MISMATCH: 400,
  ERR_KEY_UNSEALABLE: 400,
  ERR_KEY_UNSUPPORTED: 400,
  ERR_CHAIN_INVALID: 400,
  ERR_CERT_EXPIRED: 400,
  ERR_CERT_NOT_YET_VALID: 400,
  ERR_KEK_INVALID: 400,
  ERR_CA_SPEC_INVALID: 400,
  ERR_CRL_SPEC_INVALID: 400,
  ERR_OCSP_MALFORMED: 400,
  // An upstream-signed certificate that cannot be attached (issue 15).
  ERR_UPSTREAM_NOT_CA: 400,
  ERR_UPSTREAM_PATHLEN: 400,
  ERR_UPSTREAM_LIFETIME: 400,
  ERR_UPSTREAM_TRUST_DOMAIN: 400,
  ERR_SPIFFE_SCHEME: 400,
  ERR_SPIFFE_TRUST_DOMAIN: 400,
  ERR_SPIFFE_PATH: 400,
  ERR_SPIFFE_TOO_LONG: 400,
  ERR_SPIFFE_NOT_WORKLOAD: 400,
};

/** How an API client takes the next step; the CLI says the same in its own terms (commands/admin.ts). */
const NEXT_STEP: Readonly<Record<string, string>> = {
  ERR_AUTHORITY_NOT_FOUND: 'list them with GET /v1/authorities',
  ERR_STORE_CONFLICT: 'the state changed concurrently, re-read and retry',
};

export interface ErrorBody {
  readonly code: string;
  readonly message: string;
  /** What to do next, in API terms (also at the end of message). */
  readonly next?: string;
  readonly details?: Readonly<Record<string, unknown>>;
}

/** Maps domain errors to HTTP; anything unexpected is a 500 without internals. */
export function adminErrorHandler(error: FastifyError | Error, request: FastifyRequest, reply: FastifyReply): void {
  const [status, body] = classify(error);
  if (status >= 500) request.log.error({ err: error }, 'admin request failed');
  void reply.code(status).send(body);
}

function classify(error: FastifyError | Error): [number, ErrorBody] {
  if (error instanceof MeshcaError) {
    const status = HTTP_STATUS[error.code] ?? 500;
    if (status === 503) return [503, { code: error.code, message: 'the store is unavailable; retry later' }];
    if (status >= 500 && !(error instanceof AuthorityError))
      return [500, { code: 'ERR_INTERNAL', message: 'internal error; see the meshca server log' }];
    const next = NEXT_STEP[error.code];
    const body = next ? { code: error.code, message: `${error.message}; ${next}`, next } : { code: error.code, message: error.message };
    return [status, error instanceof AuthorityError ? { ...body, details: error.details } : body];
  }
  const fastifyError = error as FastifyError;
  if (fastifyError.validation) return [400, { code: 'ERR_VALIDATION', message: validationMessage(fastifyError) }];
  if (fastifyError.statusCode && fastifyError.statusCode < 500) {
    return [fastifyError.statusCode, { code: fastifyError.code ?? 'ERR_BAD_REQUEST', message: fastifyError.message }];
  }
  return [500, { code: 'ERR_INTERNAL', message: 'internal error; see the meshca server log' }];
}

/** Ajv's message, plus the allowed values where the schema lists them. */
function validationMessage(error: FastifyError): string {
  const allowed = (error.validation ?? []).flatMap((v) => {
    const values = (v.params as { allowedValues?: unknown[] }).allowedValues;
    return Array.isArray(values) ? [`${v.instancePath || 'value'}: one of ${values.map(String).join(', ')}`] : [];
  });
  return allowed.length > 0 ? `${error.message} (${allowed.join('; ')})` : error.message;
}
