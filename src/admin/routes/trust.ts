import type { FastifyInstance } from 'fastify';
import type { CertificateAuthority } from '../../authority/lifecycle.js';
import { spiffeBundle } from '../../spiffe/bundle.js';
import { errorReply } from '../schemas.js';

export interface TrustRoutesOptions {
  readonly ca: CertificateAuthority;
  readonly refreshHintSeconds: number;
}

/** Public trust data: the bundle in PEM and SPIFFE forms, with an ETag from the sequence. */
export function trustRoutes(app: FastifyInstance, options: TrustRoutesOptions): void {
  app.get<{ Querystring: { format: 'pem' | 'spiffe' } }>(
    '/v1/bundle',
    {
      schema: {
        summary: 'Trust bundle: every trusted root (public)',
        security: [],
        querystring: { type: 'object', properties: { format: { type: 'string', enum: ['pem', 'spiffe'], default: 'pem' } }, additionalProperties: false },
        response: { 400: errorReply },
      },
    },
    async (request, reply) => {
      const snapshot = options.ca.current();
      const etag = `"bundle-${snapshot.bundleSequence}-${request.query.format}"`;
      void reply.header('etag', etag).header('cache-control', `max-age=${Math.min(60, options.refreshHintSeconds)}`);
      if (request.headers['if-none-match'] === etag) return reply.code(304).send();
      if (request.query.format === 'spiffe') {
        return reply.type('application/json').send(JSON.stringify(spiffeBundle(snapshot.roots, snapshot.bundleSequence, options.refreshHintSeconds)));
      }
      return reply.type('application/x-pem-file').send(snapshot.rootsPem);
    },
  );
}
