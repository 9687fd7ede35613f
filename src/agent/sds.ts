import { randomBytes } from 'node:crypto';
import {
  status,
  type ServerDuplexStream,
  type ServerUnaryCall,
  type sendUnaryData,
  type ServiceDefinition,
  type UntypedServiceImplementation,
} from '@grpc/grpc-js';
import { loadSync } from '@grpc/proto-loader';
import type { Logger } from 'pino';
import { PROTO_ROOT } from '../grpc/proto.js';
import type { AgentMetrics } from './metrics.js';
import { svidPem, type AgentState } from './state.js';

/** Istio's agent names: the workload certificate and the roots to validate peers with. */
export const SDS_DEFAULT = 'default';
export const SDS_ROOTCA = 'ROOTCA';
const SECRET_TYPE = 'type.googleapis.com/envoy.extensions.transport_sockets.tls.v3.Secret';

export function sdsDefinition(): ServiceDefinition {
  const definition = loadSync('envoy/service/secret/v3/sds.proto', {
    includeDirs: [PROTO_ROOT],
    keepCase: true,
    defaults: true,
    oneofs: true,
  });
  return definition['envoy.service.secret.v3.SecretDiscoveryService'] as ServiceDefinition;
}

interface DiscoveryRequest {
  readonly version_info: string;
  readonly node?: { readonly id: string } | null;
  readonly resource_names: readonly string[];
  readonly type_url: string;
  readonly response_nonce: string;
}

interface DiscoveryResponse {
  readonly version_info: string;
  readonly resources: readonly object[];
  readonly type_url: string;
  readonly nonce: string;
}

/** The secrets that exist now, among the requested names (Any in the form proto-loader encodes by @type). */
function secrets(state: AgentState, names: readonly string[]): object[] {
  const svid = state.currentSvid();
  const out: object[] = [];
  for (const name of names) {
    if (name === SDS_DEFAULT && svid) {
      const { chainPem, keyPem } = svidPem(svid);
      out.push({
        '@type': SECRET_TYPE,
        name,
        tls_certificate: { certificate_chain: { inline_bytes: Buffer.from(chainPem) }, private_key: { inline_bytes: Buffer.from(keyPem) } },
      });
    }
    if (name === SDS_ROOTCA && state.ownBundle()) {
      out.push({ '@type': SECRET_TYPE, name, validation_context: { trusted_ca: { inline_bytes: Buffer.from(state.allRootsPem()) } } });
    }
  }
  return out;
}

/**
 * Envoy's SecretDiscoveryService (state-of-the-world): a response with the requested secrets on every
 * new subscription, and a push to every stream when the SVID or the bundles change. Requests that only
 * ACK or NACK the last response (same nonce, same names) get no answer, as xDS requires.
 */
export function sdsHandlers(options: {
  readonly state: AgentState;
  readonly metrics: AgentMetrics;
  readonly logger: Logger;
}): UntypedServiceImplementation {
  const { state, metrics, logger } = options;
  let version = 0;
  state.onChange(() => version++);
  const respond = (names: readonly string[]): DiscoveryResponse | undefined => {
    const resources = secrets(state, names);
    return resources.length === 0
      ? undefined
      : { version_info: String(version), resources, type_url: SECRET_TYPE, nonce: randomBytes(8).toString('hex') };
  };

  const StreamSecrets = (call: ServerDuplexStream<DiscoveryRequest, DiscoveryResponse>): void => {
    metrics.workloadCalls.inc({ method: 'StreamSecrets', code: 'OK' });
    let names: readonly string[] = [];
    let lastNonce = '';
    const push = () => {
      const response = respond(names);
      if (!response) return;
      lastNonce = response.nonce;
      call.write(response);
    };
    const unsubscribe = state.onChange(push);
    call.on('data', (request: DiscoveryRequest) => {
      if (request.type_url && request.type_url !== SECRET_TYPE) {
        call.emit('error', { code: status.INVALID_ARGUMENT, details: `this SDS server serves ${SECRET_TYPE} only` });
        return;
      }
      const requested = [...request.resource_names];
      const same = requested.length === names.length && requested.every((n) => names.includes(n));
      if (request.response_nonce && request.response_nonce === lastNonce && same) return; // ACK/NACK
      names = requested;
      logger.debug({ node: request.node?.id, names }, 'SDS subscription');
      push();
    });
    const end = () => unsubscribe();
    call.on('end', () => {
      end();
      call.end();
    });
    call.on('cancelled', end);
    call.on('error', end);
  };

  const FetchSecrets = (call: ServerUnaryCall<DiscoveryRequest, DiscoveryResponse>, callback: sendUnaryData<DiscoveryResponse>): void => {
    const response = respond(call.request.resource_names);
    metrics.workloadCalls.inc({ method: 'FetchSecrets', code: response ? 'OK' : 'UNAVAILABLE' });
    if (response) callback(null, response);
    else callback({ code: status.UNAVAILABLE, details: 'the requested secrets are not available yet' });
  };

  return {
    StreamSecrets: StreamSecrets as UntypedServiceImplementation[string],
    FetchSecrets: FetchSecrets as UntypedServiceImplementation[string],
  };
}
