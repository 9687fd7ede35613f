import { createServer as createTcpServer, type Socket } from 'node:net';
import { createServer as createTlsServer, type Server as TlsServer } from 'node:tls';
import { status } from '@grpc/grpc-js';
import type { Logger } from 'pino';
import type { ServingCredentials, ServingIdentity } from '../authority/serving.js';
import { listenOn, type ListenAddress } from '../net.js';
import type { Metrics } from '../observability/metrics.js';
import { ConnectionAdmission, RateLimitedReport, type ConnectionCaps } from './connection-limits.js';
import { encodeHeaderBlock } from './h2/hpack.js';
import { istioCertificateServiceDefinition } from './proto.js';
import { H2Connection, type H2Limits, type H2Stream } from './h2/connection.js';
import { SessionRegistry } from './sessions.js';
import { unaryMethods, type ServiceDescription, type UnaryHandlers, type UnaryMethod } from './unary.js';
import { refuse, UnaryExchange, type ExchangeEvents, type ExchangeLimits } from './unary-exchange.js';

/**
 * HTTP/2 memory bounds. istio-agent sends a token (~1-2 KiB) and a few short headers per call, so
 * 16 KiB of headers in at most 64 fields is generous. Unfinished request bodies are bounded by the
 * connection's flow-control window: one largest message (h2Limits).
 */
export const MAX_HEADER_LIST_BYTES = 16 * 1024;
const MAX_HEADER_PAIRS = 64;
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
 * meshca's gRPC port: unary gRPC over meshca's own HTTP/2 server (h2/), TLS from meshca's serving
 * identity. Neither grpc-js's server nor node:http2's, which cost more per call than the rest of
 * the transport (docs/performance.md, eighth and ninth passes); the parts of them meshca relies on
 * (message and header limits, deadlines, keepalive, idle and age GOAWAY, drain) are in h2/,
 * unary-exchange.ts and sessions.ts.
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
  const onStream = unaryStreamHandler(methods, exchangeLimits, events);
  const h2 = h2Limits(limits);
  const serve = (socket: Socket) => {
    const connection = new H2Connection(socket, h2, onStream);
    connection.onInternalError = (err) => logger.error({ err }, 'unexpected error in a gRPC stream handler');
    sessions.track(connection);
  };
  const tls = options.plaintext ? undefined : tlsServer(options, serve);
  // meshca owns the listening socket so it can refuse connections before TLS or HTTP/2 state exists.
  const admission = new ConnectionAdmission(limits, {
    onOpenChange: (open) => metrics.grpcConnections.set(open),
    onRefused: (reason, peer) => {
      metrics.grpcRefusedConnections.inc({ reason });
      refusals.note({ reason, peer });
    },
  });
  const refusals = refusalLog(logger, limits);
  const listener = createTcpServer({ noDelay: true }, (socket) => {
    if (!admission.admit(socket)) socket.destroy();
    else if (tls) tls.emit('connection', socket);
    else serve(socket);
  });
  const address = await listenOn(listener, options.listen);
  return {
    address,
    close: async (timeoutMs) => {
      listener.close();
      await sessions.drain(timeoutMs);
    },
  };
}

/** Serves each HTTP/2 stream as one unary gRPC call of `methods` (also used by bench/transport.mjs). */
export function unaryStreamHandler(
  methods: readonly UnaryMethod[],
  limits: ExchangeLimits,
  events: ExchangeEvents,
): (stream: H2Stream) => void {
  const byPath = new Map(methods.map((method) => [method.path, method]));
  return (stream) => {
    const method = routeOf(stream, byPath);
    if (method) new UnaryExchange(stream, method, limits, events);
  };
}

/** The HTTP/2 bounds of meshca's gRPC port (also used by bench/transport.mjs). */
export function h2Limits(limits: Pick<GrpcLimits, 'maxConcurrentStreams' | 'maxMessageBytes' | 'requestReadTimeoutMs'>): H2Limits {
  // One request message and its 5-byte prefix; a longer one is refused on its prefix anyway.
  const body = Math.min(2 ** 31 - 1, Math.max(65_535, limits.maxMessageBytes + 5));
  return {
    maxConcurrentStreams: limits.maxConcurrentStreams,
    maxHeaderListBytes: MAX_HEADER_LIST_BYTES,
    maxHeaderPairs: MAX_HEADER_PAIRS,
    maxStreamBodyBytes: body,
    // A whole request's bytes return to the window as soon as it is complete, so one message's
    // worth keeps every ordinary call flowing and bounds what a client can leave half-sent.
    connectionWindowBytes: body,
    prefaceTimeoutMs: limits.requestReadTimeoutMs,
  };
}

/** The method a stream asks for, or undefined once it has been refused (not gRPC, unknown method, compressed). */
function routeOf(stream: H2Stream, methods: ReadonlyMap<string, UnaryMethod>): UnaryMethod | undefined {
  const { headers } = stream;
  const contentType = headers['content-type'];
  if (contentType === undefined || !contentType.startsWith('application/grpc')) {
    stream.respondOnly(UNSUPPORTED_MEDIA_TYPE);
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
    refuse(stream, status.UNIMPLEMENTED, `grpc-encoding "${encoding}" is not supported`, [['grpc-accept-encoding', 'identity']]);
    return undefined;
  }
  return method;
}

const UNSUPPORTED_MEDIA_TYPE = encodeHeaderBlock([[':status', '415']]);

/**
 * TLS for the gRPC port: HTTP/2 only (ALPN "h2"), the handshake within the read timeout. A renewed
 * serving certificate is used for new handshakes without dropping connections.
 */
function tlsServer(options: GrpcServerOptions, serve: (socket: Socket) => void): TlsServer {
  const server = createTlsServer({
    ...tlsOf(options.serving.current()),
    ALPNProtocols: ['h2'],
    handshakeTimeout: options.limits.requestReadTimeoutMs,
  });
  options.serving.onRenew((credentials) => server.setSecureContext(tlsOf(credentials)));
  server.on('secureConnection', (socket) => {
    socket.on('error', () => undefined);
    if (socket.alpnProtocol === 'h2') serve(socket);
    else socket.destroy(); // RFC 9113 §3.2: a client that did not negotiate h2 gets nothing
  });
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
