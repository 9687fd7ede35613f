import { createServer as createTcpServer } from 'node:net';
import {
  createSecureServer,
  createServer as createPlainServer,
  constants,
  type Http2Server,
  type Http2SecureServer,
  type IncomingHttpHeaders,
  type SecureServerOptions,
  type ServerHttp2Stream,
} from 'node:http2';
import { status } from '@grpc/grpc-js';
import type { Logger } from 'pino';
import type { ServingCredentials, ServingIdentity } from '../authority/serving.js';
import { listenOn, type ListenAddress } from '../net.js';
import type { Metrics } from '../observability/metrics.js';
import { ConnectionAdmission, RateLimitedReport, type ConnectionCaps } from './connection-limits.js';
import { istioCertificateServiceDefinition } from './proto.js';
import { SessionRegistry } from './sessions.js';
import { unaryMethods, type ServiceDescription, type UnaryHandlers, type UnaryMethod } from './unary.js';
import { refuse, UnaryExchange, writeTo, type ExchangeEvents, type ExchangeLimits } from './unary-exchange.js';

/**
 * HTTP/2 memory bounds. istio-agent sends a token (~1-2 KiB) and a few short headers per call, so
 * 16 KiB of headers is generous; 2 MiB of nghttp2 memory per connection holds 16 such streams many
 * times over. Beyond either, Node refuses the stream (or the session) instead of buffering.
 */
export const MAX_HEADER_LIST_BYTES = 16 * 1024;
export const MAX_SESSION_MEMORY_MIB = 2;
/** Largest response: a trust bundle set with many federated domains still fits. */
const MAX_RESPONSE_BYTES = 1024 * 1024;

export interface GrpcLimits extends ConnectionCaps {
  /** Largest request accepted; bigger ones get RESOURCE_EXHAUSTED before they are buffered. */
  readonly maxMessageBytes: number;
  readonly maxConcurrentStreams: number;
  /** Server-side keepalive pings detect dead peers (Node's HTTP/2 layer bounds ping floods). */
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
  /** istio.v1.auth.IstioCertificateService's handlers. */
  readonly handlers: UnaryHandlers;
  /** More services on the same listener (meshca.v1's JWT-SVID and bundle services). */
  readonly services?: readonly { readonly definition: ServiceDescription; readonly handlers: UnaryHandlers }[];
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
 * meshca's gRPC port: unary gRPC over node:http2, TLS from meshca's serving identity. Not grpc-js's
 * server, which costs ~15–25 µs more per call (docs/performance.md, eighth pass); the parts of it
 * meshca relied on (message and header limits, deadlines, keepalive, idle and age GOAWAY, drain)
 * are in unary-exchange.ts and sessions.ts.
 */
export async function startGrpcServer(options: GrpcServerOptions): Promise<GrpcServer> {
  const { limits, metrics, logger } = options;
  const istio = { definition: istioCertificateServiceDefinition() as unknown as ServiceDescription, handlers: options.handlers };
  const methods = [istio, ...(options.services ?? [])].flatMap((service) => unaryMethods(service.definition, service.handlers));
  const exchangeLimits: ExchangeLimits = {
    maxMessageBytes: limits.maxMessageBytes,
    maxResponseBytes: MAX_RESPONSE_BYTES,
    requestReadTimeoutMs: limits.requestReadTimeoutMs,
  };
  const events: ExchangeEvents = {
    onReadTimeout: () => metrics.requestReadTimeouts.inc(),
    onInternalError: (err, path) => logger.error({ err, path }, 'unexpected error in a gRPC handler'),
  };
  const sessions = new SessionRegistry({
    keepaliveTimeMs: limits.keepaliveTimeMs,
    keepaliveTimeoutMs: 20_000,
    maxConnectionIdleMs: limits.maxConnectionIdleMs,
    maxConnectionAgeMs: limits.maxConnectionAgeMs,
    maxConnectionAgeGraceMs: 30_000,
  });
  const http2 = http2Server(options);
  http2.on('session', (session) => sessions.track(session));
  http2.on('stream', unaryStreamHandler(methods, exchangeLimits, events));
  // meshca owns the listening socket so it can refuse connections before TLS or HTTP/2 state exists.
  const admission = new ConnectionAdmission(limits, {
    onOpenChange: (open) => metrics.grpcConnections.set(open),
    onRefused: (reason, peer) => {
      metrics.grpcRefusedConnections.inc({ reason });
      refusals.note({ reason, peer });
    },
  });
  const refusals = refusalLog(logger, limits);
  const listener = createTcpServer((socket) => (admission.admit(socket) ? http2.emit('connection', socket) : socket.destroy()));
  const address = await listenOn(listener, options.listen);
  return {
    address,
    close: async (timeoutMs) => {
      listener.close();
      await sessions.drain(timeoutMs);
      http2.close();
    },
  };
}

/** Serves each HTTP/2 stream as one unary gRPC call of `methods` (also used by bench/transport.mjs). */
export function unaryStreamHandler(
  methods: readonly UnaryMethod[],
  limits: ExchangeLimits,
  events: ExchangeEvents,
): (stream: ServerHttp2Stream, headers: IncomingHttpHeaders) => void {
  const byPath = new Map(methods.map((method) => [method.path, method]));
  return (stream, headers) => {
    stream.on('error', () => undefined); // a reset stream emits 'close' too, which the exchange handles
    const method = routeOf(stream, headers, byPath);
    if (method) new UnaryExchange(stream, headers, method, limits, events);
  };
}

/** The method a stream asks for, or undefined once it has been refused (not gRPC, unknown method, compressed). */
function routeOf(
  stream: ServerHttp2Stream,
  headers: IncomingHttpHeaders,
  methods: ReadonlyMap<string, UnaryMethod>,
): UnaryMethod | undefined {
  const contentType = headers['content-type'];
  if (typeof contentType !== 'string' || !contentType.startsWith('application/grpc')) {
    writeTo(stream, () => {
      stream.respond({ ':status': constants.HTTP_STATUS_UNSUPPORTED_MEDIA_TYPE }, { endStream: true });
      if (!stream.readableEnded) stream.close(constants.NGHTTP2_NO_ERROR);
    });
    return undefined;
  }
  const path = headers[':path'] ?? '';
  const method = methods.get(path);
  if (!method) {
    refuse(stream, status.UNIMPLEMENTED, `the server does not implement the method ${path}`);
    return undefined;
  }
  const encoding = headers['grpc-encoding'];
  if (encoding !== undefined && encoding !== 'identity') {
    refuse(stream, status.UNIMPLEMENTED, `grpc-encoding "${String(encoding)}" is not supported`, { 'grpc-accept-encoding': 'identity' });
    return undefined;
  }
  return method;
}

/**
 * The HTTP/2 server with meshca's bounds: SETTINGS advertise the stream and header-list limits,
 * nghttp2's memory per connection is capped, and a TLS handshake must finish within the read
 * timeout. A renewed serving certificate is used for new handshakes without dropping connections.
 */
function http2Server(options: GrpcServerOptions): Http2Server | Http2SecureServer {
  const { limits } = options;
  const common = {
    settings: { maxConcurrentStreams: limits.maxConcurrentStreams, maxHeaderListSize: MAX_HEADER_LIST_BYTES },
    maxHeaderListPairs: 64,
    maxSessionMemory: MAX_SESSION_MEMORY_MIB,
  };
  if (options.plaintext) return createPlainServer(common);
  const server = createSecureServer({
    ...common,
    ...tlsOf(options.serving.current()),
    handshakeTimeout: limits.requestReadTimeoutMs,
    unknownProtocolTimeout: limits.requestReadTimeoutMs,
  } satisfies SecureServerOptions);
  options.serving.onRenew((credentials) => server.setSecureContext(tlsOf(credentials)));
  server.on('secureConnection', (socket) => socket.on('error', () => undefined));
  server.on('tlsClientError', () => undefined);
  return server;
}

function tlsOf(credentials: ServingCredentials): { cert: string; key: string } {
  return { cert: credentials.certificateChainPem, key: credentials.privateKeyPem };
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
