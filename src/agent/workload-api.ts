import {
  loadPackageDefinition,
  type Metadata,
  status,
  type sendUnaryData,
  type ServerUnaryCall,
  type ServerWritableStream,
  type ServiceClientConstructor,
  type ServiceDefinition,
  type UntypedServiceImplementation,
} from '@grpc/grpc-js';
import { loadSync } from '@grpc/proto-loader';
import { createLocalJWKSet, decodeJwt, jwtVerify, type JSONWebKeySet, type JWTPayload } from 'jose';
import type { Logger } from 'pino';
import { PROTO_ROOT } from '../grpc/proto.js';
import { parseSpiffeId } from '../spiffe/id.js';
import type { AgentMetrics } from './metrics.js';
import type { AgentState, TrustDomainBundle, X509Svid } from './state.js';

/** The SPIFFE Workload API's service definition, from the spec's workload.proto (unchanged). */
export function workloadApiDefinition(): ServiceDefinition {
  const loaded = loadPackageDefinition(
    loadSync('spiffe/workload/workload.proto', { includeDirs: [PROTO_ROOT], keepCase: true, defaults: true, oneofs: true }),
  ) as unknown as {
    SpiffeWorkloadAPI: ServiceClientConstructor;
  };
  return loaded.SpiffeWorkloadAPI.service;
}

/** A JWT-SVID for the agent's identity (minted by meshca, cached by the agent). */
export type JwtSvidSource = (audiences: readonly string[]) => Promise<{ spiffeId: string; token: string }>;

export interface WorkloadApiOptions {
  readonly state: AgentState;
  readonly jwtSvids: JwtSvidSource;
  readonly metrics: AgentMetrics;
  readonly logger: Logger;
}

/** Workload API errors carry a gRPC status; anything else is UNAVAILABLE (meshca could not be reached). */
class WorkloadApiError extends Error {
  constructor(
    readonly code: status,
    message: string,
  ) {
    super(message);
  }
}

const SECURITY_HEADER = 'workload.spiffe.io';

/** The Workload API spec's guard against SSRF: every call carries `workload.spiffe.io: true`. */
function checkSecurityHeader(metadata: Metadata): void {
  if (metadata.get(SECURITY_HEADER)[0] !== 'true')
    throw new WorkloadApiError(status.INVALID_ARGUMENT, 'security header missing from request (workload.spiffe.io: true)');
}

const trustDomainId = (td: string) => `spiffe://${td}`;
const concat = (ders: readonly Buffer[]) => Buffer.concat(ders.map((d) => Buffer.from(d)));

function x509SvidResponse(state: AgentState, svid: X509Svid) {
  return {
    svids: [
      {
        spiffe_id: svid.spiffeId,
        x509_svid: concat(svid.chainDer),
        x509_svid_key: svid.keyPkcs8Der,
        bundle: concat(state.ownBundle()?.x509Roots ?? []),
        hint: '',
      },
    ],
    crl: [],
    federated_bundles: Object.fromEntries(state.federatedBundles().map((b) => [trustDomainId(b.trustDomain), concat(b.x509Roots)])),
  };
}

function x509BundlesResponse(state: AgentState) {
  return {
    crl: [],
    bundles: Object.fromEntries([...state.bundles().values()].map((b) => [trustDomainId(b.trustDomain), concat(b.x509Roots)])),
  };
}

function jwtBundlesResponse(state: AgentState) {
  return {
    bundles: Object.fromEntries(
      [...state.bundles().values()].map((b) => [trustDomainId(b.trustDomain), Buffer.from(JSON.stringify({ keys: b.jwtKeys }))]),
    ),
  };
}

/**
 * A server stream that sends the full state at once (when there is one) and again on every change
 * that affects it, until the client goes away.
 */
function streamState(
  state: AgentState,
  call: ServerWritableStream<unknown, unknown>,
  build: () => object | undefined,
  relevant: (change: 'svid' | 'bundles') => boolean,
): void {
  const send = () => {
    const message = build();
    if (message) call.write(message);
  };
  const unsubscribe = state.onChange((change) => relevant(change) && send());
  const end = () => unsubscribe();
  call.on('cancelled', end);
  call.on('close', end);
  call.on('error', end);
  send();
}

/** Handlers of SpiffeWorkloadAPI for the agent's one identity; the WIT-SVID methods stay UNIMPLEMENTED. */
export function workloadApiHandlers(options: WorkloadApiOptions): UntypedServiceImplementation {
  const { state, metrics, logger } = options;
  const count = (method: string, code: status) => metrics.workloadCalls.inc({ method, code: status[code] });

  const streaming =
    (method: string, build: () => object | undefined, relevant: (change: 'svid' | 'bundles') => boolean) =>
    (call: ServerWritableStream<unknown, unknown>) => {
      try {
        checkSecurityHeader(call.metadata);
      } catch (error) {
        count(method, (error as WorkloadApiError).code);
        call.emit('error', { code: (error as WorkloadApiError).code, details: (error as Error).message });
        return;
      }
      count(method, status.OK);
      streamState(state, call, build, relevant);
    };

  const unary =
    <Req, Res>(method: string, handle: (request: Req) => Promise<Res>) =>
    (call: ServerUnaryCall<Req, Res>, callback: sendUnaryData<Res>) => {
      void (async () => {
        checkSecurityHeader(call.metadata);
        return handle(call.request);
      })().then(
        (response) => {
          count(method, status.OK);
          callback(null, response);
        },
        (error: unknown) => {
          const code = error instanceof WorkloadApiError ? error.code : status.UNAVAILABLE;
          count(method, code);
          if (!(error instanceof WorkloadApiError))
            logger.warn({ err: error, method }, `Workload API ${method} failed: ${(error as Error).message}`);
          callback({ code, details: (error as Error).message });
        },
      );
    };

  return {
    FetchX509SVID: streaming(
      'FetchX509SVID',
      () => {
        const svid = state.currentSvid();
        return svid && state.ownBundle() ? x509SvidResponse(state, svid) : undefined;
      },
      () => true,
    ),
    FetchX509Bundles: streaming(
      'FetchX509Bundles',
      () => (state.ownBundle() ? x509BundlesResponse(state) : undefined),
      (change) => change === 'bundles',
    ),
    FetchJWTBundles: streaming(
      'FetchJWTBundles',
      () => (state.ownBundle() ? jwtBundlesResponse(state) : undefined),
      (change) => change === 'bundles',
    ),
    FetchJWTSVID: unary('FetchJWTSVID', async (request: { audience?: string[]; spiffe_id?: string }) => {
      const audiences = (request.audience ?? []).filter((a) => a.length > 0);
      if (audiences.length === 0) throw new WorkloadApiError(status.INVALID_ARGUMENT, 'audience must be specified');
      const own = state.currentSvid()?.spiffeId;
      if (request.spiffe_id && own && request.spiffe_id !== own)
        throw new WorkloadApiError(status.PERMISSION_DENIED, `this agent serves ${own} only, not ${request.spiffe_id}`);
      const minted = await options.jwtSvids(audiences);
      return { svids: [{ spiffe_id: minted.spiffeId, svid: minted.token, hint: '' }] };
    }) as UntypedServiceImplementation[string],
    ValidateJWTSVID: unary('ValidateJWTSVID', async (request: { audience?: string; svid?: string }) => {
      if (!request.audience) throw new WorkloadApiError(status.INVALID_ARGUMENT, 'audience must be specified');
      if (!request.svid) throw new WorkloadApiError(status.INVALID_ARGUMENT, 'svid must be specified');
      const payload = await validateJwtSvid(request.svid, request.audience, state.bundles());
      return { spiffe_id: payload.sub, claims: toProtoStruct(payload) };
    }) as UntypedServiceImplementation[string],
  };
}

const JWT_ALGORITHMS = ['ES256', 'ES384', 'ES512', 'RS256', 'RS384', 'RS512', 'PS256', 'PS384', 'PS512'];

/**
 * JWT-SVID validation per the spec: the subject's trust domain selects the bundle, the kid its key,
 * the signature must verify with an asymmetric algorithm, aud must contain the audience, exp must
 * not have passed. Every failure is INVALID_ARGUMENT.
 */
export async function validateJwtSvid(
  token: string,
  audience: string,
  bundles: ReadonlyMap<string, TrustDomainBundle>,
): Promise<JWTPayload & { sub: string }> {
  const invalid = (why: string) => new WorkloadApiError(status.INVALID_ARGUMENT, `invalid JWT-SVID: ${why}`);
  let unverified: JWTPayload;
  try {
    unverified = decodeJwt(token);
  } catch {
    throw invalid('not a JWS compact serialization');
  }
  let trustDomain: string;
  try {
    trustDomain = parseSpiffeId(String(unverified.sub ?? '')).trustDomain;
  } catch {
    throw invalid('sub is not a SPIFFE ID');
  }
  const bundle = bundles.get(trustDomain);
  if (!bundle) throw invalid(`no bundle for trust domain ${trustDomain}`);
  try {
    const { payload } = await jwtVerify(token, createLocalJWKSet({ keys: bundle.jwtKeys } as unknown as JSONWebKeySet), {
      audience,
      algorithms: JWT_ALGORITHMS,
      requiredClaims: ['sub', 'aud', 'exp'],
    });
    return payload as JWTPayload & { sub: string };
  } catch (error) {
    throw invalid((error as Error).message);
  }
}

type ProtoValue =
  | { kind: 'nullValue'; nullValue: 0 }
  | { kind: 'numberValue'; numberValue: number }
  | { kind: 'stringValue'; stringValue: string }
  | { kind: 'boolValue'; boolValue: boolean }
  | { kind: 'structValue'; structValue: { fields: Record<string, ProtoValue> } }
  | { kind: 'listValue'; listValue: { values: ProtoValue[] } };

/** JSON to google.protobuf.Struct as proto-loader encodes it. */
export function toProtoStruct(object: object): { fields: Record<string, ProtoValue> } {
  return { fields: Object.fromEntries(Object.entries(object).map(([k, v]) => [k, toProtoValue(v)])) };
}

function toProtoValue(value: unknown): ProtoValue {
  if (value === null || value === undefined) return { kind: 'nullValue', nullValue: 0 };
  if (typeof value === 'number') return { kind: 'numberValue', numberValue: value };
  if (typeof value === 'boolean') return { kind: 'boolValue', boolValue: value };
  if (typeof value === 'string') return { kind: 'stringValue', stringValue: value };
  if (Array.isArray(value)) return { kind: 'listValue', listValue: { values: value.map(toProtoValue) } };
  return { kind: 'structValue', structValue: toProtoStruct(value as object) };
}
