import fastify, { type FastifyInstance, type FastifyRequest } from 'fastify';
import swagger from '@fastify/swagger';
import type { Logger } from 'pino';
import type { Inventory } from '../authority/inventory.js';
import type { CertificateAuthority } from '../authority/lifecycle.js';
import type { TLSSocket } from 'node:tls';
import type { ServingCredentials, ServingIdentity } from '../authority/serving.js';
import { formatAddress, type ListenAddress } from '../net.js';
import type { Metrics } from '../observability/metrics.js';
import { clientSpiffeId, FailureThrottle, requireAdmin } from './auth.js';
import { storeClientStanding } from './client-standing.js';
import { FailedAuthAudit } from './failure-audit.js';
import { adminErrorHandler } from './errors.js';
import { authorityRoutes } from './routes/authorities.js';
import { certificateRoutes } from './routes/certificates.js';
import { crlRoutes, revocationRoutes } from './routes/revocation.js';
import { trustRoutes } from './routes/trust.js';
import { ocspRoutes } from './routes/ocsp.js';
import type { OcspResponder } from '../authority/ocsp.js';
import { istiodRoutes, type IstiodRoutesOptions } from './routes/istiod.js';
import type { RevocationService } from '../authority/revocation.js';
import type { TrustBundles } from '../authority/trust-bundles.js';

export interface AdminApiOptions {
  readonly ca: CertificateAuthority;
  readonly inventory: Inventory;
  readonly revocation: RevocationService;
  readonly adminToken: string;
  readonly clientIds: readonly string[];
  /** Failed authentications per minute (all sources together) answered without delay. */
  readonly maxAuthFailuresPerMinute: number;
  /** Delay of the first failure over that budget (doubling after); tests shorten it. */
  readonly authFailureDelayMs?: number;
  readonly logger: Logger;
  readonly metrics: Metrics;
  readonly bodyLimitBytes: number;
  readonly requestTimeoutMs: number;
  readonly refreshHintSeconds: number;
  /** SPIFFE bundle with JWT keys and federated bundles (GET /v1/bundles/federated). */
  readonly bundles?: TrustBundles;
  /** The OCSP responder (public POST/GET /v1/ocsp); absent = not served. */
  readonly ocsp?: OcspResponder;
  /** Re-issues meshca's serving certificate (authority revoke with reissue=true). */
  readonly reissueServing?: () => Promise<void>;
  /** POST /v1/profiles/istiod/issue; absent = route not served. */
  readonly istiod?: IstiodRoutesOptions;
}

/** The admin REST API as a Fastify app; `serving` absent builds it for inject() tests (no TLS, no listener). */
export async function buildAdminApi(options: AdminApiOptions, serving?: ServingIdentity): Promise<FastifyInstance> {
  const app = fastify({
    // Paths only: a query string may carry secrets (e.g. a token someone put in the URL).
    loggerInstance: options.logger.child({ component: 'admin' }, { serializers: { req: requestWithoutQuery } }),
    bodyLimit: options.bodyLimitBytes,
    // SPIFFE IDs (up to 2048 bytes) travel URL-encoded in paths; the router's default cap is 100.
    routerOptions: { maxParamLength: 6400 },
    requestTimeout: options.requestTimeoutMs,
    ajv: { customOptions: { removeAdditional: false, coerceTypes: 'array', allErrors: false } },
    ...(serving ? { https: tlsOptions(serving.current(), options.clientIds.length > 0) } : {}),
  }) as unknown as FastifyInstance;
  app.setErrorHandler(adminErrorHandler);
  await app.register(swagger, {
    openapi: {
      info: { title: 'meshca admin API', version: '1' },
      components: { securitySchemes: { bearer: { type: 'http', scheme: 'bearer' } } },
      security: [{ bearer: [] }],
    },
  });
  app.get('/healthz', { schema: { hide: true } }, async () => ({ status: 'ok' }));
  trustRoutes(app, { ca: options.ca, refreshHintSeconds: options.refreshHintSeconds, bundles: options.bundles });
  crlRoutes(app, options.revocation);
  const failures = new FailedAuthAudit(
    (event) => options.inventory.recordEvent(event),
    (error) => options.logger.error({ err: error }, 'could not audit failed admin authentications'),
  );
  app.addHook('onClose', () => failures.close());
  if (options.ocsp) await ocspRoutes(app, options.ocsp);
  await app.register(async (protectedApp) => {
    protectedApp.addHook(
      'onRequest',
      requireAdmin({
        token: options.adminToken,
        clientIds: options.clientIds,
        clientStanding: storeClientStanding(options.inventory),
        throttle: new FailureThrottle({ budgetPerMinute: options.maxAuthFailuresPerMinute, baseDelayMs: options.authFailureDelayMs }),
        onFailure: (request, reason) => authFailure(options, failures, request, reason),
      }),
    );
    const actor = (request: FastifyRequest) => clientSpiffeId(request.raw.socket as TLSSocket) ?? 'admin';
    authorityRoutes(protectedApp, { ca: options.ca, inventory: options.inventory, actor, reissueServing: options.reissueServing });
    certificateRoutes(protectedApp, options.inventory);
    if (options.istiod) istiodRoutes(protectedApp, options.istiod);
    revocationRoutes(protectedApp, { revocation: options.revocation, actor, onRevoked: (n) => options.metrics.revoked.inc(n) });
    protectedApp.get('/v1/openapi.json', { schema: { hide: true } }, async () => app.swagger());
  });
  app.setNotFoundHandler(
    (request, reply) =>
      void reply.code(404).send({ code: 'ERR_NOT_FOUND', message: `no route ${request.method} ${request.url}; see GET /v1/openapi.json` }),
  );
  return app;
}

function authFailure(options: AdminApiOptions, audit: FailedAuthAudit, request: FastifyRequest, reason: string): void {
  const route = `${request.method} ${pathOf(request.url)}`;
  options.metrics.adminAuthFailures.inc();
  request.log.warn({ ip: request.ip, route: route.slice(0, 200), reason }, 'admin authentication failed');
  audit.note(request.ip, route, reason);
}

function pathOf(url: string): string {
  const q = url.indexOf('?');
  return q === -1 ? url : url.slice(0, q);
}

function requestWithoutQuery(request: FastifyRequest) {
  return {
    method: request.method,
    url: pathOf(request.url),
    host: request.host,
    remoteAddress: request.ip,
    remotePort: request.socket?.remotePort,
  };
}

/** Serving certificate; with an mTLS allow-list, also ask for (but do not force) a client certificate from the mesh roots. */
function tlsOptions(credentials: ServingCredentials, requestClientCertificate: boolean) {
  return {
    key: credentials.privateKeyPem,
    cert: credentials.certificateChainPem,
    minVersion: 'TLSv1.2' as const,
    ...(requestClientCertificate ? { requestCert: true, rejectUnauthorized: false, ca: credentials.rootsPem } : {}),
  };
}

export interface AdminServer {
  readonly address: ListenAddress;
  readonly app: FastifyInstance;
  close(): Promise<void>;
}

/** Serves the admin API over HTTPS with meshca's own serving certificate, hot-swapped on renewal. */
export async function startAdminServer(listen: ListenAddress, options: AdminApiOptions, serving: ServingIdentity): Promise<AdminServer> {
  const app = await buildAdminApi(options, serving);
  serving.onRenew((credentials) => {
    const server = app.server as unknown as { setSecureContext?: (o: object) => void };
    server.setSecureContext?.(tlsOptions(credentials, options.clientIds.length > 0));
  });
  await app.listen({ host: listen.host, port: listen.port });
  const bound = app.server.address();
  const address = { host: listen.host, port: typeof bound === 'object' && bound ? bound.port : listen.port };
  options.logger.info({ admin: `https://${formatAddress(address)}` }, 'admin API listening');
  return { address, app, close: () => app.close() };
}
