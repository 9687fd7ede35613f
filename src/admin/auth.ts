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

/** Shorter tokens are refused at startup: the throttle below slows guessing, only length makes it hopeless. */
export const MIN_ADMIN_TOKEN_LENGTH = 32;

/** Why a client certificate that passed the TLS chain check is still refused; undefined = in good standing. */
export type ClientStanding = (certificate: X509Certificate, spiffeId: string) => Promise<ClientRefusal | undefined>;

export interface ClientRefusal {
  readonly status: 401 | 403;
  readonly code: string;
  readonly message: string;
}

export interface AdminAuthOptions {
  readonly token: string;
  /** When set, a verified client certificate with one of these SPIFFE IDs is required too. */
  readonly clientIds: readonly string[];
  /** Revocation, expiry and deny-list check of that certificate, on every request. */
  readonly clientStanding: ClientStanding;
  readonly throttle: FailureThrottle;
  readonly onFailure: (request: FastifyRequest, reason: string) => void;
}

/**
 * Bearer token (+ optional mTLS allow-list and certificate standing). A correct token is never
 * refused or delayed because of anyone's failures; failures are answered late (FailureThrottle).
 */
export function requireAdmin(options: AdminAuthOptions) {
  return async (request: FastifyRequest, reply: FastifyReply): Promise<void> => {
    const refusal = await refusalOf(request, options);
    if (!refusal) return;
    options.onFailure(request, refusal.message);
    const delayMs = options.throttle.failed();
    if (delayMs > 0) await new Promise((resolve) => setTimeout(resolve, delayMs));
    if (refusal.status === 401) void reply.header('www-authenticate', 'Bearer realm="meshca-admin"');
    await reply.code(refusal.status).send({ code: refusal.code, message: refusal.message });
  };
}

async function refusalOf(request: FastifyRequest, options: AdminAuthOptions): Promise<ClientRefusal | undefined> {
  if (!bearerMatches(request.headers.authorization, options.token)) {
    return unauthenticated('missing or wrong admin token: send "Authorization: Bearer <token from --admin-token-file>"');
  }
  if (options.clientIds.length === 0) return undefined;
  const socket = request.raw.socket as TLSSocket;
  const id = clientSpiffeId(socket);
  if (!id) return unauthenticated('this admin API requires a client certificate from the mesh CA (--admin-client-ids)');
  if (!options.clientIds.includes(id)) return unauthenticated(`client ${id} is not in --admin-client-ids`);
  return options.clientStanding(socket.getPeerX509Certificate()!, id);
}

function unauthenticated(message: string): ClientRefusal {
  return { status: 401, code: 'ERR_ADMIN_UNAUTHENTICATED', message };
}

export interface FailureThrottleOptions {
  /** Failed authentications per minute, from all sources together, answered without delay. */
  readonly budgetPerMinute: number;
  /** Delay of the first failure over budget; doubles with each further one, up to maxDelayMs. */
  readonly baseDelayMs?: number;
  readonly maxDelayMs?: number;
  readonly now?: () => number;
}

/**
 * A global failure budget. One budget for all sources, because behind `kubectl port-forward` every
 * operator is 127.0.0.1 and an attacker can rotate addresses. Over budget, failed attempts are
 * answered on a single schedule, one per (growing) delay, so guesses stay slow whatever the source;
 * successful requests never wait and never count.
 */
export class FailureThrottle {
  private readonly failures: number[] = [];
  private nextAnswerAt = 0;
  private readonly baseDelayMs: number;
  private readonly maxDelayMs: number;
  private readonly now: () => number;

  constructor(private readonly options: FailureThrottleOptions) {
    this.baseDelayMs = options.baseDelayMs ?? 250;
    this.maxDelayMs = options.maxDelayMs ?? 10_000;
    this.now = options.now ?? (() => performance.now());
  }

  /** Records one failure; returns how long to wait before answering it. */
  failed(): number {
    const now = this.now();
    while (this.failures.length > 0 && now - this.failures[0]! >= 60_000) this.failures.shift();
    this.failures.push(now);
    const over = this.failures.length - this.options.budgetPerMinute;
    if (over <= 0) return 0;
    const delay = Math.min(this.maxDelayMs, this.baseDelayMs * 2 ** Math.min(over - 1, 20));
    this.nextAnswerAt = Math.min(Math.max(now, this.nextAnswerAt) + delay, now + this.maxDelayMs);
    if (this.failures.length > 100_000) this.failures.splice(0, this.failures.length - 100_000); // bounded memory under a flood
    return this.nextAnswerAt - now;
  }
}

/** The verified client certificate's SPIFFE ID, if the TLS layer authorized one. */
export function clientSpiffeId(socket: TLSSocket | undefined): string | undefined {
  if (!socket?.authorized || typeof socket.getPeerX509Certificate !== 'function') return undefined;
  const cert: X509Certificate | undefined = socket.getPeerX509Certificate();
  const uri = cert?.subjectAltName?.split(', ').find((n) => n.startsWith('URI:spiffe://'));
  return uri?.slice(4);
}
