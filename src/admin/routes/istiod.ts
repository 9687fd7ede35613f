import type { FastifyInstance } from 'fastify';
import type { IssuanceService } from '../../authority/issuance.js';
import type { CertificateAuthority } from '../../authority/lifecycle.js';
import { parseDuration } from '../../duration.js';
import { issueIstiodCertificate } from '../../authority/istiod-profile.js';
import { errorReply, protectedErrors } from '../schemas.js';

export interface IstiodRoutesOptions {
  readonly ca: CertificateAuthority;
  readonly issuance: IssuanceService;
  readonly trustDomain: string;
  readonly clusterId: string;
  /** Lifetime when the body names none. */
  readonly defaultTtlMs: number;
  /** Longer requested lifetimes are clamped to this (docs/architecture.md; --max-ttl). */
  readonly maxTtlMs: number;
}

interface IssueBody {
  readonly namespace: string;
  readonly revisions?: string[];
  readonly ttl?: string;
}

const dnsLabel = { type: 'string', minLength: 1, maxLength: 63, pattern: '^[a-z0-9]([-a-z0-9]*[a-z0-9])?$' } as const;

/** istiod's serving certificate (docs/architecture.md), for operators who install it themselves. */
export function istiodRoutes(app: FastifyInstance, options: IstiodRoutesOptions): void {
  app.post<{ Body: IssueBody }>(
    '/v1/profiles/istiod/issue',
    {
      schema: {
        summary:
          "Issue istiod's serving certificate: DNS SANs istiod.<ns>.svc (+ istiod-<rev>.<ns>.svc) and spiffe://<td>/ns/<ns>/sa/istiod, with a new key",
        body: {
          type: 'object',
          properties: {
            namespace: dnsLabel,
            revisions: { type: 'array', items: { ...dnsLabel, maxLength: 56 }, maxItems: 32, default: [] },
            ttl: { type: 'string', maxLength: 32, description: "e.g. 24h; clamped to the server's --max-ttl" },
          },
          required: ['namespace'],
          additionalProperties: false,
        },
        response: {
          200: {
            type: 'object',
            properties: {
              spiffeId: { type: 'string' },
              dnsNames: { type: 'array', items: { type: 'string' } },
              serial: { type: 'string' },
              notAfter: { type: 'string', format: 'date-time' },
              files: {
                type: 'object',
                description: 'Write tls.crt and tls.key to /var/run/secrets/istiod/tls and root-cert.pem to /var/run/secrets/istiod/ca',
                properties: { 'tls.crt': { type: 'string' }, 'tls.key': { type: 'string' }, 'root-cert.pem': { type: 'string' } },
                required: ['tls.crt', 'tls.key', 'root-cert.pem'],
              },
            },
            required: ['spiffeId', 'dnsNames', 'serial', 'notAfter', 'files'],
          },
          ...protectedErrors,
          500: errorReply,
        },
      },
    },
    async (request, reply) => {
      const { namespace, revisions = [], ttl } = request.body;
      let ttlMs = options.defaultTtlMs;
      if (ttl !== undefined) {
        try {
          ttlMs = parseDuration(ttl);
        } catch (error) {
          return reply.code(400).send({ code: 'ERR_VALIDATION', message: `ttl: ${(error as Error).message}` });
        }
        if (ttlMs <= 0) return reply.code(400).send({ code: 'ERR_VALIDATION', message: 'ttl must be positive' });
      }
      const issued = await issueIstiodCertificate(options.ca, options.issuance, {
        trustDomain: options.trustDomain,
        namespace,
        revisions,
        ttlMs: Math.min(ttlMs, options.maxTtlMs),
        requestedBy: 'admin',
        clusterId: options.clusterId,
      });
      void reply.header('cache-control', 'no-store');
      return {
        spiffeId: issued.spiffeId,
        dnsNames: issued.dnsNames,
        serial: issued.serialHex,
        notAfter: issued.notAfter.toISOString(),
        files: issued.files,
      };
    },
  );
}
