import type { FastifyInstance } from 'fastify';
import type { CertificateAuthority } from '../../authority/lifecycle.js';
import type { TrustBundles } from '../../authority/trust-bundles.js';
import { spiffeBundle } from '../../spiffe/bundle.js';
import { errorReply } from '../schemas.js';

export interface TrustRoutesOptions {
  readonly ca: CertificateAuthority;
  readonly refreshHintSeconds: number;
  /** The SPIFFE bundle with JWT keys, and federated bundles; without it only X.509 roots are served. */
  readonly bundles?: TrustBundles;
}

/** Public trust data: the bundle in PEM and SPIFFE forms, with an ETag from the sequence. */
export function trustRoutes(app: FastifyInstance, options: TrustRoutesOptions): void {
  app.get<{ Querystring: { format: 'pem' | 'spiffe' } }>(
    '/v1/bundle',
    {
      schema: {
        summary:
          'Trust bundle: every trusted root; with format=spiffe also the JWT-SVID signing keys (use jwt-svid, kid), spiffe_sequence and spiffe_refresh_hint (public)',
        security: [],
        querystring: {
          type: 'object',
          properties: { format: { type: 'string', enum: ['pem', 'spiffe'], default: 'pem' } },
          additionalProperties: false,
        },
        response: { 400: errorReply },
      },
    },
    async (request, reply) => {
      const snapshot = options.ca.current();
      const sequence = options.bundles?.sequence() ?? snapshot.bundleSequence;
      const etag = `"bundle-${sequence}-${request.query.format}"`;
      void reply.header('etag', etag).header('cache-control', `max-age=${Math.min(60, options.refreshHintSeconds)}`);
      if (request.headers['if-none-match'] === etag) return reply.code(304).send();
      if (request.query.format === 'spiffe') {
        const bundle = options.bundles?.own() ?? spiffeBundle(snapshot.roots, sequence, options.refreshHintSeconds);
        return reply.type('application/json').send(JSON.stringify(bundle));
      }
      return reply.type('application/x-pem-file').send(snapshot.rootsPem);
    },
  );
  const bundles = options.bundles;
  if (!bundles) return;
  app.get(
    '/v1/bundles/federated',
    {
      schema: {
        summary: 'Last good SPIFFE bundle of every --federate-with trust domain, keyed by trust domain name (public)',
        security: [],
      },
    },
    async (_request, reply) => {
      void reply.header('cache-control', `max-age=${Math.min(60, options.refreshHintSeconds)}`);
      return reply.type('application/json').send(JSON.stringify(Object.fromEntries(bundles.federated())));
    },
  );
}
