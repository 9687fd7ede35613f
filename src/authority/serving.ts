import type { Logger } from 'pino';
import { generateKeyPair, privateKeyPem } from '../pki/keys.js';
import type { CertificateAuthority } from './lifecycle.js';
import type { IssuanceService } from './issuance.js';

export interface ServingCredentials {
  /** Leaf + intermediate(s), PEM. */
  readonly certificateChainPem: string;
  readonly privateKeyPem: string;
  /** Trusted roots, for clients and for verifying admin client certificates. */
  readonly rootsPem: string;
  readonly notAfter: Date;
}

export interface ServingIdentityOptions {
  readonly dnsNames: readonly string[];
  readonly spiffeId: string;
  readonly ttlMs: number;
  readonly logger: Logger;
}

type Listener = (credentials: ServingCredentials) => void;

/**
 * meshca's own TLS identity, issued from its own chain (docs/architecture.md: clients verify the server
 * against the mesh root). The key lives only in memory. Re-issued at 2/3 of its lifetime and
 * whenever the authorities change, so a removed root never strands clients.
 */
export class ServingIdentity {
  private credentials!: ServingCredentials;
  private readonly listeners: Listener[] = [];
  private timer: NodeJS.Timeout | undefined;
  private closed = false;

  private constructor(
    private readonly ca: CertificateAuthority,
    private readonly issuance: IssuanceService,
    private readonly options: ServingIdentityOptions,
  ) {}

  static async start(ca: CertificateAuthority, issuance: IssuanceService, options: ServingIdentityOptions): Promise<ServingIdentity> {
    const identity = new ServingIdentity(ca, issuance, options);
    await identity.renew('startup');
    ca.onChange(
      () =>
        void identity
          .renew('authority change')
          .catch((error: unknown) => options.logger.error({ err: error }, 'serving certificate renewal failed')),
    );
    return identity;
  }

  current(): ServingCredentials {
    return this.credentials;
  }

  onRenew(listener: Listener): void {
    this.listeners.push(listener);
  }

  /** Re-issues now (SIGHUP); new handshakes use it, open connections are untouched. */
  reload(reason: string): Promise<void> {
    return this.renew(reason);
  }

  close(): void {
    this.closed = true;
    clearTimeout(this.timer);
  }

  private async renew(reason: string): Promise<void> {
    if (this.closed) return;
    const { privateKey, publicKey } = await generateKeyPair('ec-p256');
    const spkiDer = publicKey.export({ format: 'der', type: 'spki' });
    const issued = await this.issuance.issueProfile({
      spkiDer,
      uris: [this.options.spiffeId],
      dnsNames: this.options.dnsNames,
      ttlMs: this.options.ttlMs,
      callerId: this.options.spiffeId,
      rsaKey: false,
    });
    const [leaf, ...rest] = issued.chain;
    this.credentials = {
      certificateChainPem: leaf! + rest.slice(0, -1).join(''),
      privateKeyPem: privateKeyPem(privateKey),
      rootsPem: this.ca.current().rootsPem,
      notAfter: issued.notAfter,
    };
    this.schedule(issued.notAfter);
    this.options.logger.info(
      { serial: issued.serialHex, dnsNames: this.options.dnsNames, notAfter: issued.notAfter, reason },
      'issued serving certificate',
    );
    this.listeners.forEach((listener) => listener(this.credentials));
  }

  private schedule(notAfter: Date): void {
    clearTimeout(this.timer);
    const lifetime = notAfter.getTime() - Date.now();
    const delay = Math.max(1000, Math.min((lifetime * 2) / 3, 2 ** 31 - 1));
    this.timer = setTimeout(() => void this.renew('scheduled renewal').catch(() => this.schedule(new Date(Date.now() + 60_000))), delay);
    this.timer.unref();
  }
}
