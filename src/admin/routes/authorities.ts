import { InvalidInputError } from '../errors.js';
import type { FastifyInstance, FastifyRequest } from 'fastify';
import type { Inventory } from '../../authority/inventory.js';
import type { CertificateAuthority } from '../../authority/lifecycle.js';
import { parseDuration } from '../../duration.js';
import { KEY_TYPES, type KeyType } from '../../pki/keys.js';
import type { AuthorityRecord, AuthorityRevocationReason, PendingAuthorityRecord } from '../../store/types.js';
import { AUTHORITY_REVOCATION_REASONS } from '../../authority/revocation.js';
import { isPendingId } from '../../authority/pending.js';
import { pemEncode } from '../../pki/pem.js';
import {
  authorityIdParams,
  authorityOrPendingIdParams,
  authorityView,
  errorReply,
  pendingAuthorityView,
  protectedErrors,
} from '../schemas.js';

export interface AuthorityRoutesOptions {
  readonly ca: CertificateAuthority;
  readonly inventory: Inventory;
  readonly actor: (request: FastifyRequest) => string;
  /** Re-issues meshca's own serving certificate now (revoke with reissue=true); absent in inject() tests. */
  readonly reissueServing?: () => Promise<void>;
}

interface RevokeBody {
  readonly reason: AuthorityRevocationReason;
  readonly reissue: boolean;
}

interface PrepareBody {
  readonly keyType?: KeyType;
  readonly rootTtl?: string;
  readonly intermediateTtl?: string;
}

interface CsrBody {
  readonly keyType?: KeyType;
  readonly subject?: string;
}

interface AttachBody {
  readonly certificate: string;
  readonly chain: string;
}

interface ImportBody {
  readonly caCert: string;
  readonly caKey: string;
  readonly certChain: string;
  readonly rootCert: string;
}

const DURATION = { type: 'string', pattern: '^([0-9]+(\\.[0-9]+)?(ms|s|m|h|d|y))+$', maxLength: 32 } as const;
const PEM = { type: 'string', minLength: 1, maxLength: 65536 } as const;
const authorityList = {
  type: 'object',
  properties: { authorities: { type: 'array', items: authorityView } },
  required: ['authorities'],
} as const;
const inventoryList = {
  type: 'object',
  properties: { authorities: { type: 'array', items: authorityView }, pending: { type: 'array', items: pendingAuthorityView } },
  required: ['authorities', 'pending'],
} as const;
const withConflicts = { ...protectedErrors, 404: errorReply, 409: errorReply } as const;

/** Authority lifecycle (docs/architecture.md): list, prepare, activate, remove, revoke, rotate-intermediate, import, intermediate CSR + attach. */
export function authorityRoutes(app: FastifyInstance, options: AuthorityRoutesOptions): void {
  const { ca, inventory } = options;
  const views = async (ids: readonly string[]) => (await inventory.authorities()).filter((a) => ids.includes(a.id));

  app.get(
    '/v1/authorities',
    {
      schema: {
        summary: 'List roots and intermediates with usage counts, and pending CSRs',
        response: { 200: inventoryList, ...protectedErrors },
      },
    },
    async () => ({
      authorities: await inventory.authorities(),
      pending: (await ca.pendingAuthorities()).map(pendingView),
    }),
  );

  app.post<{ Body: CsrBody }>(
    '/v1/authorities/intermediate-csr',
    {
      schema: {
        summary:
          'Generate an intermediate key (sealed, never leaves meshca) and return its CSR for an upstream CA; the authority is pending until its certificate is attached',
        body: {
          type: ['object', 'null'],
          properties: { keyType: { type: 'string', enum: [...KEY_TYPES] }, subject: { type: 'string', minLength: 1, maxLength: 512 } },
          additionalProperties: false,
        },
        response: { 201: pendingAuthorityView, ...withConflicts },
      },
    },
    async (request, reply) => {
      const body = request.body ?? {};
      const { pending } = await ca.requestIntermediate({ keyType: body.keyType, subject: body.subject }, options.actor(request));
      return reply.code(201).send(pendingView(pending));
    },
  );

  app.post<{ Params: { id: string }; Body: AttachBody }>(
    '/v1/authorities/:id/certificate',
    {
      bodyLimit: 512 * 1024,
      schema: {
        summary:
          'Attach the upstream-signed certificate and its chain (up to the upstream root) to a pending authority; it becomes prepared and the root joins the bundle',
        params: authorityOrPendingIdParams,
        body: {
          type: 'object',
          properties: { certificate: PEM, chain: PEM },
          required: ['certificate', 'chain'],
          additionalProperties: false,
        },
        response: { 200: authorityList, ...withConflicts },
      },
    },
    async (request) => {
      const attached = await ca.attachCertificate(request.params.id, request.body, options.actor(request));
      return { authorities: await views(ids(attached)) };
    },
  );

  app.post<{ Body: PrepareBody }>(
    '/v1/authorities/prepare',
    {
      schema: {
        summary: 'Create a new root and intermediate in state prepared; the root joins the bundle',
        body: {
          type: ['object', 'null'],
          properties: { keyType: { type: 'string', enum: [...KEY_TYPES] }, rootTtl: DURATION, intermediateTtl: DURATION },
          additionalProperties: false,
        },
        response: { 201: authorityList, ...withConflicts },
      },
    },
    async (request, reply) => {
      const body = request.body ?? {};
      const { root, intermediate } = await ca.prepare(
        { keyType: body.keyType, rootTtlMs: ttl(body.rootTtl), intermediateTtlMs: ttl(body.intermediateTtl) },
        options.actor(request),
      );
      return reply.code(201).send({ authorities: await views([root.id, intermediate.id]) });
    },
  );

  app.post<{ Params: { id: string } }>(
    '/v1/authorities/:id/activate',
    {
      schema: {
        summary: 'Make a prepared authority the signer; the previous one retires',
        params: authorityOrPendingIdParams,
        response: { 200: authorityList, ...withConflicts },
      },
    },
    async (request) => {
      const activated = await ca.activate(request.params.id, options.actor(request));
      return {
        authorities: await views(ids(ca.current().authorities.filter((a) => a.id === activated.id || a.id === activated.parentId))),
      };
    },
  );

  app.post<{ Params: { id: string }; Querystring: { force: boolean } }>(
    '/v1/authorities/:id/remove',
    {
      schema: {
        summary: 'Remove a retired authority (a root with its intermediates) from the bundle, or delete a pending one',
        params: authorityOrPendingIdParams,
        querystring: { type: 'object', properties: { force: { type: 'boolean', default: false } }, additionalProperties: false },
        response: {
          200: {
            type: 'object',
            properties: { removed: { type: 'array', items: { type: 'string' } }, unexpiredCertificates: { type: 'integer' } },
          },
          ...withConflicts,
        },
      },
    },
    async (request) => {
      if (!isPendingId(request.params.id)) return ca.remove(request.params.id, request.query.force, options.actor(request));
      await ca.removePending(request.params.id, options.actor(request));
      return { removed: [request.params.id], unexpiredCertificates: 0 };
    },
  );

  app.post<{ Params: { id: string }; Body: RevokeBody }>(
    '/v1/authorities/:id/revoke',
    {
      schema: {
        summary:
          'Revoke a compromised root or intermediate: it is tainted and never signs again; a signing intermediate is replaced in the same transaction',
        params: authorityIdParams,
        body: {
          type: 'object',
          properties: { reason: { type: 'string', enum: [...AUTHORITY_REVOCATION_REASONS] }, reissue: { type: 'boolean', default: false } },
          required: ['reason'],
          additionalProperties: false,
        },
        response: {
          200: {
            type: 'object',
            properties: {
              authority: authorityView,
              tainted: { type: 'array', items: { type: 'string' } },
              replacement: { anyOf: [authorityView, { type: 'null' }] },
              unexpiredCertificates: { type: 'integer' },
              certificates: { type: 'array', items: { type: 'string' } },
              reissued: { type: 'boolean' },
            },
          },
          ...withConflicts,
        },
      },
    },
    async (request) => {
      const outcome = await ca.revoke(request.params.id, request.body.reason, options.actor(request));
      const reissued = request.body.reissue && options.reissueServing !== undefined;
      if (reissued) await options.reissueServing!();
      const all = await inventory.authorities();
      const authority = all.find((a) => a.id === outcome.authority.id);
      const replacement = all.find((a) => a.id === outcome.replacement?.id) ?? null;
      const listings = outcome.tainted
        .filter((id) => id.startsWith('int-'))
        .map((id) => `/v1/certificates?authorityId=${id}&status=active`);
      return {
        authority,
        tainted: outcome.tainted,
        replacement,
        unexpiredCertificates: outcome.unexpiredCertificates,
        certificates: listings,
        reissued,
      };
    },
  );

  app.post(
    '/v1/authorities/rotate-intermediate',
    { schema: { summary: 'New intermediate under the active root, active at once', response: { 201: authorityList, ...withConflicts } } },
    async (request, reply) => {
      const intermediate = await ca.rotateIntermediate(options.actor(request));
      return reply.code(201).send({ authorities: await views([intermediate.id]) });
    },
  );

  app.post<{ Body: ImportBody }>(
    '/v1/authorities/import',
    {
      bodyLimit: 512 * 1024,
      schema: {
        summary: "Import Istio's plug-in CA files (ca-cert.pem, ca-key.pem, cert-chain.pem, root-cert.pem) as a prepared authority",
        body: {
          type: 'object',
          properties: { caCert: PEM, caKey: PEM, certChain: PEM, rootCert: PEM },
          required: ['caCert', 'caKey', 'certChain', 'rootCert'],
          additionalProperties: false,
        },
        response: { 201: authorityList, ...withConflicts },
      },
    },
    async (request, reply) => {
      const inserted = await ca.importPlugin(request.body, options.actor(request));
      return reply.code(201).send({ authorities: await views(ids(inserted)) });
    },
  );
}

/** CA lifetimes below this are refused: such a root would expire while it is still being distributed. */
const MIN_CA_TTL_MS = 60 * 60_000;
/** And above this: far past any sane CA lifetime, and it keeps dates inside what X.509 can encode. */
const MAX_CA_TTL_MS = 100 * 365 * 86_400_000;

function ttl(value: string | undefined): number | undefined {
  if (value === undefined) return undefined;
  const ms = parseDuration(value);
  if (ms < MIN_CA_TTL_MS || ms > MAX_CA_TTL_MS) {
    throw new InvalidInputError(`CA lifetime "${value}" is out of range: use between 1h and 100y`);
  }
  return ms;
}

function pendingView(p: PendingAuthorityRecord) {
  return {
    id: p.id,
    state: 'pending',
    keyType: p.keyType,
    subject: p.subject,
    upstream: p.upstream,
    createdAt: p.createdAt.toISOString(),
    expiresAt: p.expiresAt.toISOString(),
    csr: pemEncode(p.csrDer, 'CERTIFICATE REQUEST'),
  };
}

function ids(records: readonly AuthorityRecord[]): string[] {
  return records.map((r) => r.id);
}
