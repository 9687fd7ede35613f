import type { MeshcaConnection } from './sources.js';
import { readToken } from './sources.js';

interface Cached {
  readonly spiffeId: string;
  readonly token: string;
  readonly issuedAt: number;
  readonly expiresAt: number;
}

const MAX_ENTRIES = 1000;

/**
 * JWT-SVIDs minted by meshca for the agent's identity, cached per audience set and reused until half
 * of their lifetime has passed (so a workload never gets a token about to expire).
 */
export class JwtSvidCache {
  private readonly entries = new Map<string, Cached>();

  constructor(
    private readonly connection: MeshcaConnection,
    private readonly tokenFile: string,
    private readonly clusterId: string,
  ) {}

  async get(audiences: readonly string[]): Promise<{ spiffeId: string; token: string }> {
    const key = JSON.stringify([...new Set(audiences)].sort());
    const now = Date.now();
    const hit = this.entries.get(key);
    if (hit && now < hit.issuedAt + (hit.expiresAt - hit.issuedAt) / 2) return hit;
    const minted = await this.connection.current().mintJwtSvid({ token: readToken(this.tokenFile), audiences, clusterId: this.clusterId });
    const entry = { spiffeId: minted.spiffeId, token: minted.token, issuedAt: now, expiresAt: minted.expiresAt.getTime() };
    if (this.entries.size >= MAX_ENTRIES) this.entries.delete(this.entries.keys().next().value!);
    this.entries.set(key, entry);
    return entry;
  }
}
