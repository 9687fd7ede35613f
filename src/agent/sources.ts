import { readFileSync } from 'node:fs';
import { webcrypto, X509Certificate } from 'node:crypto';
import type { Logger } from 'pino';
import { CaClient } from '../client/ca-client.js';
import { generateWorkloadKey, workloadCsr } from '../client/csr.js';
import { serviceAccountOfToken } from '../client/token-claims.js';
import { pemBlocks, pemEncode } from '../pki/pem.js';
import { workloadId } from '../spiffe/id.js';
import type { AgentMetrics } from './metrics.js';
import type { AgentState, TrustDomainBundle } from './state.js';

export interface ServerConnection {
  readonly address: string;
  /** PEM roots from --root; bundle roots of the own trust domain are added as they arrive. */
  readonly rootsPem: string;
  readonly serverName?: string;
  readonly clusterId: string;
}

/** The token file is re-read on every call: projected ServiceAccount tokens rotate underneath us. */
export function readToken(path: string): string {
  const token = readFileSync(path, 'utf8').trim();
  if (!token) throw new Error(`the token file ${path} is empty`);
  return token;
}

/**
 * The agent's one channel to meshca. When the own bundle brings new roots (a root rotation), the
 * channel is rebuilt trusting them too, so the agent keeps reaching meshca once it serves a
 * certificate from the new root.
 */
export class MeshcaConnection {
  private client: CaClient;
  private trusted: string;

  constructor(private readonly options: ServerConnection) {
    this.trusted = options.rootsPem;
    this.client = this.connect();
  }

  current(): CaClient {
    return this.client;
  }

  trust(extraRootsPem: string): void {
    const next = this.options.rootsPem + extraRootsPem;
    if (next === this.trusted) return;
    this.trusted = next;
    const old = this.client;
    this.client = this.connect();
    old.close();
  }

  close(): void {
    this.client.close();
  }

  private connect(): CaClient {
    return new CaClient({ address: this.options.address, rootsPem: this.trusted, serverName: this.options.serverName });
  }
}

/** Retry delays: 1s doubling to 30s, never past the given ceiling. */
export function backoffMs(attempt: number, ceilingMs = 30_000): number {
  return Math.min(ceilingMs, 1000 * 2 ** Math.min(attempt, 10));
}

/** Runs a task at once, then again after the delay its outcome asks for, until stopped. */
class RetryLoop {
  private timer: NodeJS.Timeout | undefined;
  private stopped = false;

  constructor(
    private readonly task: () => Promise<boolean>,
    private readonly nextDelay: (ok: boolean) => number,
  ) {}

  start(): void {
    this.schedule(0);
  }

  stop(): void {
    this.stopped = true;
    clearTimeout(this.timer);
  }

  private schedule(delayMs: number): void {
    if (this.stopped) return;
    this.timer = setTimeout(() => void this.task().then((ok) => this.schedule(this.nextDelay(ok))), Math.min(delayMs, 2 ** 31 - 1));
  }
}

export interface SvidRotatorOptions {
  readonly connection: MeshcaConnection;
  readonly state: AgentState;
  readonly tokenFile: string;
  readonly trustDomain: string;
  readonly clusterId: string;
  readonly ttlSeconds: number;
  readonly logger: Logger;
  readonly metrics: AgentMetrics;
  /** ± fraction of the half-life by which renewals are spread (0.1 = ±10 %). */
  readonly jitter?: number;
  /** Called after a renewal succeeded (the bundles are refreshed with it). */
  readonly onRenewed?: () => void;
}

/**
 * Keeps an X509-SVID: a new local key and CSR for every renewal, CreateCertificate with the token
 * file's current token, renewal at half of the lifetime (± jitter), exponential backoff on failure,
 * and the last good SVID kept (and served) while meshca is unreachable.
 */
export class SvidRotator {
  private failures = 0;
  private readonly loop: RetryLoop;

  constructor(private readonly options: SvidRotatorOptions) {
    this.loop = new RetryLoop(
      () => this.renew(),
      (ok) => {
        if (ok) return this.nextRenewalDelay();
        const svid = this.options.state.currentSvid();
        // While failing, retry well before the last good SVID runs out.
        return backoffMs(this.failures - 1, Math.max(1000, svid ? (svid.notAfter.getTime() - Date.now()) / 4 : Infinity));
      },
    );
  }

  start(): void {
    this.loop.start();
  }

  stop(): void {
    this.loop.stop();
  }

  /** One renewal attempt; resolves true on success. */
  async renew(): Promise<boolean> {
    const { options } = this;
    try {
      const token = readToken(options.tokenFile);
      const sa = serviceAccountOfToken(token);
      if (!sa)
        throw new Error(`the token in ${options.tokenFile} is not a Kubernetes ServiceAccount token (sub system:serviceaccount:NS:SA)`);
      const spiffeId = workloadId(options.trustDomain, sa.namespace, sa.serviceAccount);
      const key = await generateWorkloadKey('ec-p256');
      const chain = await options.connection.current().createCertificate({
        csrPem: await workloadCsr(key, spiffeId),
        token,
        clusterId: options.clusterId,
        validitySeconds: options.ttlSeconds,
      });
      const certificates = chain.slice(0, -1).flatMap((pem) =>
        pemBlocks(pem)
          .filter((b) => b.label === 'CERTIFICATE')
          .map((b) => b.der),
      );
      const leaf = new X509Certificate(certificates[0]!);
      const keyPkcs8Der = Buffer.from(await webcrypto.subtle.exportKey('pkcs8', key.keys.privateKey));
      options.state.setSvid({ spiffeId, chainDer: certificates, keyPkcs8Der, notAfter: new Date(leaf.validTo), receivedAt: new Date() });
      options.metrics.renewals.inc({ result: 'ok' });
      options.metrics.svidExpiry.set(new Date(leaf.validTo).getTime() / 1000);
      options.logger.info({ spiffeId, serial: leaf.serialNumber, notAfter: new Date(leaf.validTo) }, 'X509-SVID renewed');
      this.failures = 0;
      options.onRenewed?.();
      return true;
    } catch (error) {
      this.failures++;
      options.metrics.renewals.inc({ result: 'error' });
      const last = options.state.currentSvid();
      options.logger.warn(
        { err: error, failures: this.failures, servingUntil: last?.notAfter },
        `X509-SVID renewal failed; keeping the last good SVID: ${(error as Error).message}`,
      );
      return false;
    }
  }

  /** Half of the remaining lifetime from receipt, spread by the jitter. */
  nextRenewalDelay(now = Date.now()): number {
    const svid = this.options.state.currentSvid();
    if (!svid) return 0;
    const lifetime = svid.notAfter.getTime() - svid.receivedAt.getTime();
    const jitter = this.options.jitter ?? 0.1;
    const half = lifetime / 2;
    const at = svid.receivedAt.getTime() + half + (Math.random() * 2 - 1) * jitter * half;
    return Math.max(0, at - now);
  }
}

/** Parses a SPIFFE bundle document into what the agent serves; throws on anything malformed. */
export function parseSpiffeBundle(trustDomain: string, json: string): TrustDomainBundle {
  const doc = JSON.parse(json) as { keys?: unknown; spiffe_sequence?: unknown; spiffe_refresh_hint?: unknown };
  if (!Array.isArray(doc.keys)) throw new Error(`the bundle of ${trustDomain} has no "keys" array`);
  const x509Roots: Buffer[] = [];
  const jwtKeys: Record<string, unknown>[] = [];
  for (const key of doc.keys as Record<string, unknown>[]) {
    if (key.use === 'x509-svid' && Array.isArray(key.x5c) && typeof key.x5c[0] === 'string')
      x509Roots.push(Buffer.from(key.x5c[0], 'base64'));
    if (key.use === 'jwt-svid' && typeof key.kid === 'string') {
      const { use: _use, ...jwk } = key;
      jwtKeys.push(jwk);
    }
  }
  return {
    trustDomain,
    x509Roots,
    jwtKeys,
    sequence: typeof doc.spiffe_sequence === 'number' ? doc.spiffe_sequence : undefined,
    refreshHintSeconds: typeof doc.spiffe_refresh_hint === 'number' ? doc.spiffe_refresh_hint : undefined,
  };
}

export interface BundlePollerOptions {
  readonly connection: MeshcaConnection;
  readonly state: AgentState;
  readonly logger: Logger;
  readonly metrics: AgentMetrics;
  /** Upper bound of the poll interval; the own bundle's spiffe_refresh_hint is used when shorter. */
  readonly maxIntervalMs?: number;
}

/** Polls meshca's TrustBundleService at the bundle's refresh hint; keeps the last good bundles on failure. */
export class BundlePoller {
  private failures = 0;
  private readonly loop: RetryLoop;

  constructor(private readonly options: BundlePollerOptions) {
    this.loop = new RetryLoop(
      () => this.refresh(),
      (ok) => (ok ? this.interval() : Math.min(this.interval(), backoffMs(this.failures - 1))),
    );
  }

  start(): void {
    this.loop.start();
  }

  stop(): void {
    this.loop.stop();
  }

  /** Fetches now (also after each SVID renewal). */
  async refresh(): Promise<boolean> {
    const { state, logger, connection, metrics } = this.options;
    try {
      const fetched = await connection.current().fetchBundles();
      const bundles = Object.entries(fetched.bundles).map(([td, json]) => parseSpiffeBundle(td, json));
      state.setBundles(bundles);
      const own = state.ownBundle();
      if (own) {
        connection.trust(own.x509Roots.map((der) => pemEncode(der, 'CERTIFICATE')).join(''));
        if (own.sequence !== undefined) metrics.bundleSequence.set(own.sequence);
      }
      this.failures = 0;
      return true;
    } catch (error) {
      this.failures++;
      logger.warn(
        { err: error, failures: this.failures },
        `bundle refresh failed; keeping the last good bundles: ${(error as Error).message}`,
      );
      return false;
    }
  }

  private interval(): number {
    const hint = this.options.state.ownBundle()?.refreshHintSeconds;
    const max = this.options.maxIntervalMs ?? 300_000;
    return hint ? Math.max(1000, Math.min(max, hint * 1000)) : max;
  }
}
