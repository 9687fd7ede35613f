import { createServer as createTcpServer } from 'node:net';
import { experimental, Server, ServerCredentials, type ServiceDefinition, type UntypedServiceImplementation } from '@grpc/grpc-js';
import type { Logger } from 'pino';
import type { ServingCredentials, ServingIdentity } from '../authority/serving.js';
import { listenOn, type ListenAddress } from '../net.js';
import type { Metrics } from '../observability/metrics.js';
import { ConnectionAdmission, RateLimitedReport, type ConnectionCaps } from './connection-limits.js';
import { istioCertificateServiceDefinition } from './proto.js';
import { requestReadDeadline } from './read-deadline.js';

/**
 * HTTP/2 memory bounds. istio-agent sends a token (~1-2 KiB) and a few short headers per call, so
 * 16 KiB of headers is generous; 2 MiB of nghttp2 memory per connection holds 16 such streams many
 * times over. Beyond either, Node refuses the stream (or the session) instead of buffering.
 */
export const MAX_HEADER_LIST_BYTES = 16 * 1024;
export const MAX_SESSION_MEMORY_MIB = 2;

export interface GrpcLimits extends ConnectionCaps {
  /** Largest request accepted; bigger ones get RESOURCE_EXHAUSTED from grpc-js before parsing. */
  readonly maxMessageBytes: number;
  readonly maxConcurrentStreams: number;
  /** Server-side keepalive pings detect dead peers (grpc-js has no client ping-rate enforcement; Node's HTTP/2 layer bounds ping floods). */
  readonly keepaliveTimeMs: number;
  readonly maxConnectionIdleMs: number;
  readonly maxConnectionAgeMs: number;
  /** A call whose request message is not complete this long after its headers is cancelled; also the TLS handshake deadline. */
  readonly requestReadTimeoutMs: number;
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
  readonly metrics: Metrics;
  readonly logger: Logger;
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
  const { limits, metrics } = options;
  const server = new Server({
    'grpc.max_receive_message_length': limits.maxMessageBytes,
    'grpc.max_send_message_length': 1024 * 1024,
    'grpc.max_concurrent_streams': limits.maxConcurrentStreams,
    'grpc-node.max_session_memory': MAX_SESSION_MEMORY_MIB,
    'grpc.keepalive_time_ms': limits.keepaliveTimeMs,
    'grpc.keepalive_timeout_ms': 20_000,
    'grpc.max_connection_idle_ms': limits.maxConnectionIdleMs,
    'grpc.max_connection_age_ms': limits.maxConnectionAgeMs,
    'grpc.max_connection_age_grace_ms': 30_000,
    // channelz keeps per-call statistics nobody reads here; it costs CPU on every call.
    'grpc.enable_channelz': 0,
    interceptors: [requestReadDeadline(limits.requestReadTimeoutMs, () => metrics.requestReadTimeouts.inc())],
  });
  server.addService(istioCertificateServiceDefinition(), options.handlers);
  for (const service of options.services ?? []) server.addService(service.definition, service.handlers);
  const credentials = options.plaintext
    ? ServerCredentials.createInsecure()
    : withHttp2Limits(
        experimental.createCertificateProviderServerCredentials(new ServingCertificateProvider(options.serving), null, false),
        limits,
      );
  // meshca owns the listening socket so it can refuse connections before TLS or HTTP/2 state exists.
  const injector = server.createConnectionInjector(credentials);
  const admission = new ConnectionAdmission(limits, {
    onOpenChange: (open) => metrics.grpcConnections.set(open),
    onRefused: (reason, peer) => {
      metrics.grpcRefusedConnections.inc({ reason });
      refusals.note({ reason, peer });
    },
  });
  const refusals = refusalLog(options.logger, limits);
  const listener = createTcpServer((socket) => (admission.admit(socket) ? injector.injectConnection(socket) : socket.destroy()));
  const address = await listenOn(listener, options.listen);
  return {
    address,
    close: async (timeoutMs) => {
      listener.close();
      await drain(server, timeoutMs);
      injector.destroy();
    },
  };
}

/** One warning per 10 s at most, naming the latest refused peer and how many were refused since the last line. */
function refusalLog(logger: Logger, caps: ConnectionCaps) {
  let latest = { reason: '', peer: '' };
  const report = new RateLimitedReport(10_000, (refused) =>
    logger.warn(
      { ...latest, refused, maxConnections: caps.maxConnections, maxConnectionsPerPeer: caps.maxConnectionsPerPeer },
      'refusing gRPC connections over --max-connections / --max-connections-per-peer',
    ),
  );
  return {
    note: (refusal: { reason: string; peer: string }) => {
      latest = refusal;
      report.note();
    },
  };
}

/**
 * grpc-js only forwards max_concurrent_streams into the HTTP/2 SETTINGS; the header-list bound and
 * the TLS handshake deadline go through the credentials' server constructor options (merged last).
 */
function withHttp2Limits(credentials: ServerCredentials, limits: GrpcLimits): ServerCredentials {
  const base = credentials._getConstructorOptions.bind(credentials);
  credentials._getConstructorOptions = () => ({
    ...base(),
    settings: { maxConcurrentStreams: limits.maxConcurrentStreams, maxHeaderListSize: MAX_HEADER_LIST_BYTES },
    maxHeaderListPairs: 64,
    handshakeTimeout: limits.requestReadTimeoutMs,
  });
  return credentials;
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
