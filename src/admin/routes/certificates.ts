import { InvalidInputError } from '../errors.js';
import type { FastifyInstance } from 'fastify';
import type { Inventory } from '../../authority/inventory.js';
import { pemEncode } from '../../pki/pem.js';
import { normalizeSerialHex } from '../../pki/serial.js';
import type { CertificateStatus, CertificateSummary } from '../../store/types.js';
import { certificateSummary, errorReply, itemList, pageQuery, protectedErrors, stringFields } from '../schemas.js';

interface ListQuery {
  readonly spiffeId?: string;
  readonly authorityId?: string;
  readonly status?: CertificateStatus;
  readonly limit: number;
  readonly cursor?: string;
}

/** An audit event as the API shows it. */
const auditEvent = {
  type: 'object',
  properties: {
    id: { type: 'integer' },
    ...stringFields('at', 'actor', 'action', 'target', 'result').properties,
    details: { type: 'object', additionalProperties: true },
  },
} as const;

export function summaryView(c: CertificateSummary) {
  return {
    serial: c.serialHex,
    spiffeId: c.spiffeId,
    callerId: c.callerId,
    authorityId: c.authorityId,
    clusterId: c.clusterId,
    notBefore: c.notBefore.toISOString(),
    notAfter: c.notAfter.toISOString(),
    issuedAt: c.issuedAt.toISOString(),
    status: c.status,
    revokedAt: c.revokedAt?.toISOString() ?? null,
    revocationReason: c.revocationReason,
  };
}

export const serialParams = {
  type: 'object',
  properties: { serial: { type: 'string', pattern: '^[0-9a-fA-F:]{1,120}$' } },
  required: ['serial'],
} as const;

/** Serial from the URL in the API's canonical form (lowercase hex, no leading zeros). */
export function canonicalSerial(input: string): string {
  const serial = normalizeSerialHex(input);
  if (!serial) throw new InvalidInputError(`"${input}" is not a hex serial number`);
  return serial;
}

/** The issued-certificate inventory. */
export function certificateRoutes(app: FastifyInstance, inventory: Inventory): void {
  app.get<{ Querystring: ListQuery }>(
    '/v1/certificates',
    {
      schema: {
        summary: 'Issued certificates, newest first, paginated',
        querystring: {
          type: 'object',
          properties: {
            spiffeId: { type: 'string', maxLength: 2048 },
            authorityId: { type: 'string', maxLength: 64 },
            status: { type: 'string', enum: ['active', 'expired', 'revoked'] },
            ...pageQuery,
          },
          additionalProperties: false,
        },
        response: {
          200: itemList(certificateSummary, { paged: true }),
          ...protectedErrors,
        },
      },
    },
    async (request) => {
      const page = await inventory.certificates(request.query);
      return { items: page.items.map(summaryView), nextCursor: page.nextCursor };
    },
  );

  app.get<{ Params: { serial: string } }>(
    '/v1/certificates/:serial',
    {
      schema: {
        summary: 'One issued certificate with its PEM',
        params: serialParams,
        response: {
          200: { type: 'object', properties: { ...certificateSummary.properties, pem: { type: 'string' } } },
          404: errorReply,
          ...protectedErrors,
        },
      },
    },
    async (request, reply) => {
      const serial = canonicalSerial(request.params.serial);
      const certificate = await inventory.certificate(serial);
      if (!certificate) return reply.code(404).send({ code: 'ERR_CERTIFICATE_NOT_FOUND', message: `no certificate with serial ${serial}` });
      return { ...summaryView(certificate), pem: pemEncode(certificate.der, 'CERTIFICATE') };
    },
  );

  app.get<{ Querystring: { limit: number; cursor?: string } }>(
    '/v1/audit',
    {
      schema: {
        summary: 'Audit events, newest first, paginated',
        querystring: { type: 'object', properties: { ...pageQuery }, additionalProperties: false },
        response: {
          200: itemList(auditEvent, { paged: true }),
          ...protectedErrors,
        },
      },
    },
    async (request) => {
      const page = await inventory.audit(request.query.limit, request.query.cursor);
      return { items: page.items.map((e) => ({ ...e, at: e.at.toISOString() })), nextCursor: page.nextCursor };
    },
  );
}
