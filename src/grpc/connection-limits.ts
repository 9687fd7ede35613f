import type { Socket } from 'node:net';

export interface ConnectionCaps {
  /** Open gRPC connections in total. */
  readonly maxConnections: number;
  /** Open gRPC connections from one peer address. */
  readonly maxConnectionsPerPeer: number;
}

export type RefusalReason = 'total' | 'per_peer';

export interface ConnectionAdmissionEvents {
  readonly onOpenChange: (open: number) => void;
  readonly onRefused: (reason: RefusalReason, peer: string) => void;
}

/**
 * Counts open TCP connections in total and per peer address and refuses new ones beyond the caps,
 * before any TLS or HTTP/2 state is allocated for them.
 */
export class ConnectionAdmission {
  private readonly perPeer = new Map<string, number>();
  private open = 0;

  constructor(
    private readonly caps: ConnectionCaps,
    private readonly events: ConnectionAdmissionEvents,
  ) {}

  /** True when the socket may proceed; it is then counted until it closes. False: the caller destroys it. */
  admit(socket: Socket): boolean {
    const peer = socket.remoteAddress ?? 'unknown';
    const fromPeer = this.perPeer.get(peer) ?? 0;
    const refusal: RefusalReason | undefined =
      this.open >= this.caps.maxConnections ? 'total' : fromPeer >= this.caps.maxConnectionsPerPeer ? 'per_peer' : undefined;
    if (refusal) {
      this.events.onRefused(refusal, peer);
      return false;
    }
    this.perPeer.set(peer, fromPeer + 1);
    this.events.onOpenChange(++this.open);
    socket.once('close', () => {
      const left = (this.perPeer.get(peer) ?? 1) - 1;
      if (left > 0) this.perPeer.set(peer, left);
      else this.perPeer.delete(peer);
      this.events.onOpenChange(--this.open);
    });
    return true;
  }
}

/**
 * At most one log line per interval for refusals: an attacker opening connections in a loop must
 * not turn the log into a second flood. Each line says how many were refused since the last one.
 */
export class RateLimitedReport {
  private suppressed = 0;
  private lastAt = -Infinity;

  constructor(
    private readonly intervalMs: number,
    private readonly write: (refusedSinceLast: number) => void,
    private readonly now: () => number = () => performance.now(),
  ) {}

  note(): void {
    this.suppressed++;
    const now = this.now();
    if (now - this.lastAt < this.intervalMs) return;
    this.lastAt = now;
    this.write(this.suppressed);
    this.suppressed = 0;
  }
}
