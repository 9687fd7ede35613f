import { experimental, Server, ServerCredentials, type ServiceDefinition, type UntypedServiceImplementation } from '@grpc/grpc-js';
import type { ServingCredentials, ServingIdentity } from '../authority/serving.js';
import { formatAddress, type ListenAddress } from '../net.js';
import { istioCertificateServiceDefinition } from './proto.js';

export interface GrpcLimits {
  /** Largest request accepted; bigger ones get RESOURCE_EXHAUSTED from grpc-js before parsing. */
  readonly maxMessageBytes: number;
  readonly maxConcurrentStreams: number;
  /** Server-side keepalive pings detect dead peers (grpc-js has no client ping-rate enforcement; Node's HTTP/2 layer bounds ping floods). */
  readonly keepaliveTimeMs: number;
  readonly maxConnectionIdleMs: number;
  readonly maxConnectionAgeMs: number;
}

export interface GrpcServerOptions {
  readonly listen: ListenAddress;
  /** Plain-text h2c: only for local testing or behind a TLS-terminating proxy. */
  readonly plaintext: boolean;
  readonly serving: ServingIdentity;
  readonly handlers: UntypedServiceImplementation;
  /** More services on the same listener (meshca.v1's JWT-SVID and bundle services). */
  readonly services?: readonly { readonly definition: ServiceDefinition; readonly handlers: UntypedServiceImplementation }[];
  readonly limits: GrpcLimits;
}

export interface GrpcServer {
  readonly address: ListenAddress;
  /** Stops accepting, waits for in-flight calls up to the timeout, then cancels the rest. */
  close(timeoutMs: number): Promise<void>;
}

/**
 * grpc-js certificate provider fed by meshca's own serving identity, so a renewed certificate is
 * used for new handshakes without restarting the server or dropping connections.
 */
class ServingCertificateProvider implements experimental.CertificateProvider {
  private readonly listeners = new Set<experimental.IdentityCertificateUpdateListener>();
  private latest: experimental.IdentityCertificateUpdate;

  constructor(serving: ServingIdentity) {
    this.latest = toUpdate(serving.current());
    serving.onRenew((credentials) => {
      this.latest = toUpdate(credentials);
      this.listeners.forEach((listener) => listener(this.latest));
    });
  }

  addCaCertificateListener(): void {}
  removeCaCertificateListener(): void {}
  addIdentityCertificateListener(listener: experimental.IdentityCertificateUpdateListener): void {
    this.listeners.add(listener);
    // grpc-js registers its context watcher only after this returns, so deliver asynchronously.
    queueMicrotask(() => this.listeners.has(listener) && listener(this.latest));
  }
  removeIdentityCertificateListener(listener: experimental.IdentityCertificateUpdateListener): void {
    this.listeners.delete(listener);
  }
}

function toUpdate(credentials: ServingCredentials): experimental.IdentityCertificateUpdate {
  return { certificate: Buffer.from(credentials.certificateChainPem), privateKey: Buffer.from(credentials.privateKeyPem) };
}

export async function startGrpcServer(options: GrpcServerOptions): Promise<GrpcServer> {
  const { limits } = options;
  const server = new Server({
    'grpc.max_receive_message_length': limits.maxMessageBytes,
    'grpc.max_send_message_length': 1024 * 1024,
    'grpc.max_concurrent_streams': limits.maxConcurrentStreams,
    'grpc.keepalive_time_ms': limits.keepaliveTimeMs,
    'grpc.keepalive_timeout_ms': 20_000,
    'grpc.max_connection_idle_ms': limits.maxConnectionIdleMs,
    'grpc.max_connection_age_ms': limits.maxConnectionAgeMs,
    'grpc.max_connection_age_grace_ms': 30_000,
    // channelz keeps per-call statistics nobody reads here; it costs CPU on every call.
    'grpc.enable_channelz': 0,
  });
  server.addService(istioCertificateServiceDefinition(), options.handlers);
  for (const service of options.services ?? []) server.addService(service.definition, service.handlers);
  const credentials = options.plaintext
    ? ServerCredentials.createInsecure()
    : experimental.createCertificateProviderServerCredentials(new ServingCertificateProvider(options.serving), null, false);
  const port = await new Promise<number>((resolve, reject) =>
    server.bindAsync(formatAddress(options.listen), credentials, (error, bound) => (error ? reject(error) : resolve(bound))),
  );
  return { address: { host: options.listen.host, port }, close: (timeoutMs) => drain(server, timeoutMs) };
}

function drain(server: Server, timeoutMs: number): Promise<void> {
  return new Promise((resolve) => {
    const timer = setTimeout(() => {
      server.forceShutdown();
      resolve();
    }, timeoutMs);
    server.tryShutdown(() => {
      clearTimeout(timer);
      resolve();
    });
  });
}
