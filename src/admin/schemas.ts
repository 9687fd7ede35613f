/** Shared JSON schemas; every route validates params, query, body and reply against these. */
export const errorReply = {
  type: 'object',
  properties: {
    code: { type: 'string' },
    message: { type: 'string' },
    /** The next step for an API client, also at the end of message. */
    next: { type: 'string' },
    details: { type: 'object', additionalProperties: true },
  },
  required: ['code', 'message'],
} as const;

export const authorityView = {
  type: 'object',
  properties: {
    id: { type: 'string' },
    kind: { type: 'string', enum: ['root', 'intermediate'] },
    parentId: { type: ['string', 'null'] },
    state: { type: 'string' },
    subject: { type: 'string' },
    serialNumber: { type: 'string' },
    notBefore: { type: 'string', format: 'date-time' },
    notAfter: { type: 'string', format: 'date-time' },
    keyType: { type: 'string' },
    sha256Fingerprint: { type: 'string' },
    hasPrivateKey: { type: 'boolean' },
    issuedCount: { type: 'integer' },
    unexpiredIssuedCount: { type: 'integer' },
    revokedCount: { type: 'integer' },
    taintedAt: { type: ['string', 'null'] },
    taintReason: { type: ['string', 'null'] },
  },
  required: ['id', 'kind', 'parentId', 'state', 'subject', 'serialNumber', 'notBefore', 'notAfter', 'keyType', 'sha256Fingerprint'],
} as const;

/** A key waiting for its upstream-signed certificate (docs/operations/upstream.md). */
export const pendingAuthorityView = {
  type: 'object',
  properties: {
    id: { type: 'string' },
    state: { type: 'string', enum: ['pending'] },
    keyType: { type: 'string' },
    subject: { type: 'string' },
    upstream: { type: 'string' },
    createdAt: { type: 'string', format: 'date-time' },
    expiresAt: { type: 'string', format: 'date-time' },
    csr: { type: 'string' },
  },
  required: ['id', 'state', 'keyType', 'subject', 'upstream', 'createdAt', 'expiresAt', 'csr'],
} as const;

export const authorityIdParams = {
  type: 'object',
  properties: { id: { type: 'string', pattern: '^(root|int)-[0-9a-f]{16}$' } },
  required: ['id'],
} as const;

/** Routes that also take a pending authority (remove, attach). */
export const authorityOrPendingIdParams = {
  type: 'object',
  properties: { id: { type: 'string', pattern: '^(root|int|pending)-[0-9a-f]{16}$' } },
  required: ['id'],
} as const;

export const pageQuery = {
  limit: { type: 'integer', minimum: 1, maximum: 1000, default: 100 },
  cursor: { type: 'string', maxLength: 512, pattern: '^[A-Za-z0-9_-]+$' },
} as const;

export const certificateSummary = {
  type: 'object',
  properties: {
    serial: { type: 'string' },
    spiffeId: { type: 'string' },
    callerId: { type: 'string' },
    authorityId: { type: 'string' },
    clusterId: { type: 'string' },
    notBefore: { type: 'string', format: 'date-time' },
    notAfter: { type: 'string', format: 'date-time' },
    issuedAt: { type: 'string', format: 'date-time' },
    status: { type: 'string', enum: ['active', 'expired', 'revoked'] },
    revokedAt: { type: ['string', 'null'] },
    revocationReason: { type: ['string', 'null'] },
  },
  required: ['serial', 'spiffeId', 'authorityId', 'notBefore', 'notAfter', 'status', 'clusterId'],
} as const;

/** Error replies every protected route can give. */
export const protectedErrors = { 400: errorReply, 401: errorReply } as const;

/** A response holding `items` (and, paged, the `nextCursor` of the next page: null on the last). */
export function itemList<T extends object>(item: T, options: { readonly paged: boolean }) {
  return {
    type: 'object',
    properties: {
      items: { type: 'array', items: item },
      ...(options.paged ? { nextCursor: { type: ['string', 'null'] } } : {}),
    },
    required: options.paged ? ['items', 'nextCursor'] : ['items'],
  } as const;
}

/** An object schema whose named properties are all strings. */
export function stringFields(...names: readonly string[]) {
  return { type: 'object', properties: Object.fromEntries(names.map((name) => [name, { type: 'string' }])) } as const;
}
