import { createHash, timingSafeEqual } from 'node:crypto';
import type { FastifyReply, FastifyRequest } from 'fastify';

/** Constant-time comparison of bearer tokens (hashing first makes lengths equal). */
export function bearerMatches(header: string | undefined, expected: string): boolean {
  const m = /^Bearer +(\S+)\s*$/i.exec(header ?? '');
  if (!m) return false;
  const digest = (s: string) => createHash('sha256').update(s).digest();
  return timingSafeEqual(digest(m[1]!), digest(expected));
}

export interface AdminAuthOptions {
  readonly token: string;
  readonly onFailure: (request: FastifyRequest) => void;
}

/** onRequest hook for protected routes: 401 before any handler or body parsing runs. */
export function requireAdmin(options: AdminAuthOptions) {
  return async (request: FastifyRequest, reply: FastifyReply): Promise<void> => {
    if (bearerMatches(request.headers.authorization, options.token)) return;
    options.onFailure(request);
    await reply
      .code(401)
      .header('www-authenticate', 'Bearer realm="meshca-admin"')
      .send({ code: 'ERR_ADMIN_UNAUTHENTICATED', message: 'missing or wrong admin token: send "Authorization: Bearer <token from --admin-token-file>"' });
  };
}
