import { createHash, timingSafeEqual, type X509Certificate } from 'node:crypto';
import type { TLSSocket } from 'node:tls';
import type { FastifyReply, FastifyRequest } from 'fastify';

/** Constant-time comparison of bearer tokens (hashing first makes lengths equal). */
export function bearerMatches(header: string | undefined, expected: string): boolean {
  const token = /^Bearer +(\S+)\s*$/i.exec(header ?? '')?.[1];
  if (token === undefined) return false;
  const digest = (s: string) => createHash('sha256').update(s).digest();
  return timingSafeEqual(digest(token), digest(expected));
}

export interface AdminAuthOptions {
  readonly token: string;
  /** When set, a verified client certificate with one of these SPIFFE IDs is required too. */
  readonly clientIds: readonly string[];
  /** Failed attempts per client IP within a minute before that IP is refused for a minute. */
  readonly maxFailuresPerMinute: number;
  readonly onFailure: (request: FastifyRequest, reason: string) => void;
}

const WINDOW_MS = 60_000;

/** Bearer token (+ optional mTLS allow-list) with a lockout for clients that keep failing. */
export function requireAdmin(options: AdminAuthOptions) {
  const failures = new Map<string, { count: number; since: number }>();
  return async (request: FastifyRequest, reply: FastifyReply): Promise<void> => {
    const now = Date.now();
    const record = failures.get(request.ip);
    if (record && now - record.since > WINDOW_MS) failures.delete(request.ip);
    if ((failures.get(request.ip)?.count ?? 0) >= options.maxFailuresPerMinute) {
      await reply.code(429).header('retry-after', '60').send({ code: 'ERR_ADMIN_LOCKED_OUT', message: 'too many failed admin authentications from this address; wait a minute' });
      return;
    }
    const reason = refusal(request, options);
    if (!reason) return;
    const entry = failures.get(request.ip) ?? { count: 0, since: now };
    entry.count++;
    failures.set(request.ip, entry);
    if (failures.size > 10_000) failures.delete(failures.keys().next().value!);
    options.onFailure(request, reason);
    await reply.code(401).header('www-authenticate', 'Bearer realm="meshca-admin"').send({ code: 'ERR_ADMIN_UNAUTHENTICATED', message: reason });
  };
}

function refusal(request: FastifyRequest, options: AdminAuthOptions): string | undefined {
  if (!bearerMatches(request.headers.authorization, options.token)) {
    return 'missing or wrong admin token: send "Authorization: Bearer <token from --admin-token-file>"';
  }
  if (options.clientIds.length === 0) return undefined;
  const id = clientSpiffeId(request.raw.socket as TLSSocket);
  if (!id) return 'this admin API requires a client certificate from the mesh CA (--admin-client-ids)';
  return options.clientIds.includes(id) ? undefined : `client ${id} is not in --admin-client-ids`;
}

/** The verified client certificate's SPIFFE ID, if the TLS layer authorized one. */
export function clientSpiffeId(socket: TLSSocket | undefined): string | undefined {
  if (!socket?.authorized || typeof socket.getPeerX509Certificate !== 'function') return undefined;
  const cert: X509Certificate | undefined = socket.getPeerX509Certificate();
  const uri = cert?.subjectAltName?.split(', ').find((n) => n.startsWith('URI:spiffe://'));
  return uri?.slice(4);
}
