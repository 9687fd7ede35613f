import { status } from '@grpc/grpc-js';
import type { Logger } from 'pino';
import { AuthenticationError, bearerToken, type Authenticator, type CallerIdentity, type ImpersonationAuthorizer } from '../authn/index.js';
import { IssuanceError } from '../authority/errors.js';
import type { IssuanceService } from '../authority/issuance.js';
import type { Metrics } from '../observability/metrics.js';
import { metadataString, type IstioCertificateRequest, type IstioCertificateResponse } from './proto.js';
import { AdmissionGate } from './admission.js';
import { RateLimitedError, type IdentityRateLimiter } from './rate-limit.js';
import { toGrpcFailure, type GrpcFailure } from './status.js';
import { CallFailure, type CallMetadata, type UnaryCall, type UnaryHandlers } from './unary.js';

export interface CertificateServiceOptions {
  readonly authenticator: Authenticator;
  readonly issuance: IssuanceService;
  readonly metrics: Metrics;
  readonly logger: Logger;
  /** Calls processed at once before new ones are shed with RESOURCE_EXHAUSTED (istio-agent retries). */
  readonly maxInFlight: number;
  /** Of those, calls worked on at once; the others wait in arrival order (AdmissionGate). Default: maxInFlight. */
  readonly maxActive?: number;
  readonly maxCsrBytes: number;
  readonly impersonation?: ImpersonationAuthorizer;
  /** Optional per-identity limit; over it, RESOURCE_EXHAUSTED (istio-agent backs off and retries). */
  readonly rateLimiter?: IdentityRateLimiter;
}

/** The client gave up (deadline, cancel) while its call waited for admission: no work is done for it. */
class CancelledWhileWaiting extends Error {}

type Call = UnaryCall<IstioCertificateRequest>;

/** Istio's CreateCertificate: transport concerns only — metadata, status codes, metrics, logs. */
export function certificateServiceHandlers(options: CertificateServiceOptions): UnaryHandlers {
  let inFlight = 0;
  const gate = new AdmissionGate(Math.min(options.maxActive ?? options.maxInFlight, options.maxInFlight));
  const admitted = (call: Call): Promise<IstioCertificateResponse> => {
    if (call.cancelled) return Promise.reject(new CancelledWhileWaiting('the client cancelled the call while it waited for admission'));
    return createCertificate(options, call);
  };
  const CreateCertificate = (call: Call): Promise<IstioCertificateResponse> => {
    const started = process.hrtime.bigint();
    options.metrics.csrCount.inc();
    if (inFlight >= options.maxInFlight) {
      options.metrics.shed.inc();
      return Promise.reject(
        refusal(options, started, {
          code: status.RESOURCE_EXHAUSTED,
          details: 'meshca is overloaded; retry with backoff',
          reason: 'ERR_OVERLOADED',
        }),
      );
    }
    inFlight++;
    options.metrics.inFlight.set(inFlight);
    const turn = gate.enter();
    return (turn ? turn.then(() => admitted(call)) : admitted(call))
      .then(
        (response) => {
          observeDuration(options, started, 'OK');
          return response;
        },
        (error: unknown) => {
          throw refusal(options, started, recordFailure(options, error));
        },
      )
      .finally(() => {
        gate.release();
        options.metrics.inFlight.set(--inFlight);
      });
  };
  return { CreateCertificate };
}

async function createCertificate(options: CertificateServiceOptions, call: Call): Promise<IstioCertificateResponse> {
  const caller = await authenticateCall(options.authenticator, call.metadata);
  const csrPem = call.request.csr ?? '';
  if (Buffer.byteLength(csrPem) > options.maxCsrBytes) {
    throw new IssuanceError('ERR_CSR_REJECTED', `CSR is larger than ${options.maxCsrBytes} bytes`);
  }
  if (options.rateLimiter && !options.rateLimiter.allow(caller.spiffeId)) throw new RateLimitedError(caller.spiffeId);
  const identity = await impersonatedIdentity(options, caller, call.request);
  const issued = await options.issuance.issue({ csrPem, validitySeconds: Number(call.request.validity_duration) || 0, caller, identity });
  options.logger.info(
    {
      spiffeId: issued.spiffeId,
      caller: caller.spiffeId,
      serial: issued.serialHex,
      notAfter: issued.notAfter,
      clusterId: caller.clusterId,
    },
    'issued certificate',
  );
  options.metrics.issued.inc();
  return { cert_chain: issued.chain };
}

async function impersonatedIdentity(
  options: CertificateServiceOptions,
  caller: CallerIdentity,
  request: IstioCertificateRequest,
): Promise<string | undefined> {
  const impersonated = metadataString(request.metadata, 'ImpersonatedIdentity');
  if (!impersonated) return undefined;
  if (!options.impersonation)
    throw new AuthenticationError('ERR_TOKEN_SUBJECT', 'impersonation is not enabled on this CA (--trusted-node-accounts)');
  await options.impersonation(caller, impersonated);
  return impersonated;
}

/** The caller of an Istio-style call: the bearer token and clusterid metadata (also meshca.v1's services). */
export function authenticateCall(authenticator: Authenticator, metadata: CallMetadata): Promise<CallerIdentity> {
  return authenticator.authenticate({
    token: bearerToken(metadata.get('authorization')),
    clusterId: metadata.get('clusterid') ?? '',
  });
}

function recordFailure(options: CertificateServiceOptions, error: unknown): GrpcFailure {
  if (error instanceof CancelledWhileWaiting) return { code: status.CANCELLED, details: error.message, reason: 'ERR_CANCELLED' };
  const failure = toGrpcFailure(error);
  const { metrics } = options;
  if (error instanceof RateLimitedError) metrics.shed.inc();
  else if (error instanceof AuthenticationError) metrics.authenticationFailures.inc();
  else if (error instanceof IssuanceError) {
    if (error.code === 'ERR_CSR_REJECTED' || error.code === 'ERR_CSR_SIGNATURE') metrics.csrParsingErrors.inc();
    if (error.code === 'ERR_IDENTITY_MISMATCH') metrics.idExtractionErrors.inc();
    if (error.code === 'ERR_IDENTITY_DENIED') metrics.denied.inc();
    if (error.code === 'ERR_ISSUANCE_FAILED' || error.code === 'ERR_VERIFIER_UNAVAILABLE' || error.code === 'ERR_DISK_LOW')
      metrics.signErrors.inc({ error: error.code });
    if (error.code === 'ERR_VERIFIER_UNAVAILABLE') options.logger.error({ err: error }, 'CSR verification failed on the server side');
  } else {
    options.logger.error({ err: error }, 'unexpected error in CreateCertificate');
  }
  options.logger.warn({ code: failure.reason, status: status[failure.code], details: failure.details }, 'certificate request refused');
  return failure;
}

function observeDuration(options: CertificateServiceOptions, started: bigint, code: string): void {
  options.metrics.issuanceDuration.observe({ code }, Number(process.hrtime.bigint() - started) / 1e9);
}

/** Records a refused call's duration; returns what the server answers it with. */
function refusal(options: CertificateServiceOptions, started: bigint, failure: GrpcFailure): CallFailure {
  observeDuration(options, started, status[failure.code]);
  return new CallFailure(failure.code, failure.details);
}
