import type { FastifyInstance, FastifyReply, FastifyRequest } from 'fastify';
import { REVOCATION_REASONS, type CertificateRevocationList, type RevocationService } from '../../authority/revocation.js';
import { pemEncode } from '../../pki/pem.js';
import type { RevocationReason } from '../../store/types.js';
import { authorityIdParams, certificateSummary, errorReply, itemList, protectedErrors, stringFields } from '../schemas.js';
import { canonicalSerial, serialParams, summaryView } from './certificates.js';

export interface RevocationRoutesOptions {
  readonly revocation: RevocationService;
  readonly actor: (request: FastifyRequest) => string;
  readonly onRevoked: (count: number) => void;
}

const reason = { type: 'string', enum: [...REVOCATION_REASONS] } as const;
const spiffeId = { type: 'string', minLength: 10, maxLength: 2048, pattern: '^spiffe://' } as const;
const crlQuery = {
  type: 'object',
  properties: { format: { type: 'string', enum: ['der', 'pem'], default: 'der' } },
  additionalProperties: false,
} as const;

/**
 * Public: CRLs. `GET /v1/crl` is the active intermediate's in DER (existing consumers), and with
 * ?format=pem the complete published set, concatenated (openssl -CRLfile, Envoy's crl).
 */
export function crlRoutes(app: FastifyInstance, revocation: RevocationService): void {
  const send = (crls: readonly CertificateRevocationList[], format: string, reply: FastifyReply) => {
    const nextUpdate = new Date(Math.min(...crls.map((c) => c.nextUpdate.getTime())));
    void reply.header('etag', `"crl-${crls.map((c) => c.crlNumber).join('.')}"`).header('expires', nextUpdate.toUTCString());
    if (format === 'pem') return reply.type('application/x-pem-file').send(crls.map((c) => pemEncode(c.der, 'X509 CRL')).join(''));
    return reply.type('application/pkix-crl').send(crls[0]!.der);
  };
  app.get<{ Querystring: { format: string } }>(
    '/v1/crl',
    {
      schema: {
        summary: "DER: the active intermediate's CRL; PEM: every published CRL, the active intermediate's first (public)",
        security: [],
        querystring: crlQuery,
        response: { 400: errorReply },
      },
    },
    async (request, reply) =>
      send(request.query.format === 'pem' ? await revocation.crlSet() : [await revocation.activeCrl()], request.query.format, reply),
  );
  app.get<{ Params: { id: string }; Querystring: { format: string } }>(
    '/v1/authorities/:id/crl',
    {
      schema: {
        summary: 'CRL of one authority: an intermediate lists revoked leaves, a root revoked intermediates (public)',
        security: [],
        params: authorityIdParams,
        querystring: crlQuery,
        response: { 400: errorReply, 404: errorReply, 409: errorReply },
      },
    },
    async (request, reply) => send([await revocation.crl(request.params.id)], request.query.format, reply),
  );
}

/** Protected: revoke by serial or identity, and the deny-list. */
export function revocationRoutes(app: FastifyInstance, options: RevocationRoutesOptions): void {
  const { revocation } = options;
  app.post<{ Params: { serial: string }; Body: { reason: RevocationReason } }>(
    '/v1/certificates/:serial/revoke',
    {
      schema: {
        summary: 'Revoke one certificate (idempotent: the original time is kept)',
        params: serialParams,
        body: { type: 'object', properties: { reason }, required: ['reason'], additionalProperties: false },
        response: { 200: certificateSummary, 404: errorReply, ...protectedErrors },
      },
    },
    async (request, reply) => {
      const serial = canonicalSerial(request.params.serial);
      const revoked = await revocation.revokeCertificate(serial, request.body.reason, options.actor(request));
      if (!revoked) return reply.code(404).send({ code: 'ERR_CERTIFICATE_NOT_FOUND', message: `no certificate with serial ${serial}` });
      options.onRevoked(1);
      return summaryView(revoked);
    },
  );

  app.post<{ Body: { spiffeId: string; reason: RevocationReason; deny: boolean } }>(
    '/v1/identities/revoke',
    {
      schema: {
        summary: 'Revoke every unexpired certificate of an identity; deny=true also refuses new ones',
        body: {
          type: 'object',
          properties: { spiffeId, reason, deny: { type: 'boolean', default: false } },
          required: ['spiffeId', 'reason'],
          additionalProperties: false,
        },
        response: {
          200: { type: 'object', properties: { spiffeId: { type: 'string' }, revoked: { type: 'integer' }, denied: { type: 'boolean' } } },
          ...protectedErrors,
        },
      },
    },
    async (request) => {
      const { spiffeId: id, reason: why, deny } = request.body;
      const { revoked } = await revocation.revokeIdentity(id, why, deny, options.actor(request));
      options.onRevoked(revoked);
      return { spiffeId: id, revoked, denied: deny };
    },
  );

  app.get(
    '/v1/identities/deny',
    {
      schema: {
        summary: 'The deny-list',
        response: {
          200: itemList(stringFields('spiffeId', 'reason', 'actor', 'at'), { paged: false }),
          ...protectedErrors,
        },
      },
    },
    async () => ({
      items: (await revocation.denied()).map((d) => ({ ...d, at: d.at.toISOString() })),
    }),
  );

  app.delete<{ Params: { spiffeId: string } }>(
    '/v1/identities/deny/:spiffeId',
    {
      schema: {
        summary: 'Allow a denied identity again (URL-encode the SPIFFE ID)',
        params: { type: 'object', properties: { spiffeId }, required: ['spiffeId'] },
        response: {
          200: { type: 'object', properties: { spiffeId: { type: 'string' }, allowed: { type: 'boolean' } } },
          404: errorReply,
          ...protectedErrors,
        },
      },
    },
    async (request, reply) => {
      const allowed = await revocation.allowIdentity(request.params.spiffeId, options.actor(request));
      if (!allowed) return reply.code(404).send({ code: 'ERR_NOT_DENIED', message: `${request.params.spiffeId} is not on the deny-list` });
      return { spiffeId: request.params.spiffeId, allowed };
    },
  );
}
