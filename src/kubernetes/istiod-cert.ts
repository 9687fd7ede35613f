/**
 * Secret istiod-tls: istiod's serving certificate (authority/istiod-profile.ts) kept in the
 * cluster, renewed before 2/3 of its lifetime.
 */

import { X509Certificate } from 'node:crypto';
import type { Logger } from 'pino';
import { istiodDnsNames, type IstiodCertificate, type IstiodCertificateRequest, type IstiodFiles } from '../authority/istiod-profile.js';
import { Resource } from './api.js';
import type { KubeClient } from './client.js';
import type { Secret } from './types.js';

export const ISTIOD_SECRET = 'istiod-tls';

export function istiodSecret(namespace: string, files: IstiodFiles): Secret {
  const b64 = (text: string) => Buffer.from(text).toString('base64');
  return {
    apiVersion: 'v1',
    kind: 'Secret',
    type: 'kubernetes.io/tls',
    metadata: { name: ISTIOD_SECRET, namespace, labels: { 'app.kubernetes.io/managed-by': 'meshca' } },
    data: { 'tls.crt': b64(files['tls.crt']), 'tls.key': b64(files['tls.key']), 'root-cert.pem': b64(files['root-cert.pem']) },
  };
}

/** Creates or updates Secret istiod-tls, keeping any other keys, labels and annotations it has. */
export function writeIstiodSecret(
  client: KubeClient,
  namespace: string,
  files: IstiodFiles,
  stillAllowed: () => boolean = () => true,
): Promise<'created' | 'updated' | 'unchanged'> {
  const fresh = istiodSecret(namespace, files);
  return Resource.secrets(client).upsert(namespace, ISTIOD_SECRET, (current) => {
    if (!stillAllowed()) return undefined; // e.g. leadership lost meanwhile
    return current === undefined ? fresh : { ...current, data: { ...(current.data ?? {}), ...fresh.data } };
  });
}

/**
 * Why an existing Secret must be replaced, or undefined if it is still good: missing or unreadable,
 * past 2/3 of its lifetime, for other DNS names, or carrying other roots than the current bundle.
 */
export function renewalReason(
  secret: Secret | undefined,
  want: { readonly rootsPem: string; readonly dnsNames: readonly string[] },
  now = new Date(),
): string | undefined {
  if (secret === undefined) return 'missing';
  const text = (key: string) => Buffer.from(secret.data?.[key] ?? '', 'base64').toString('utf8');
  let leaf: X509Certificate;
  try {
    leaf = new X509Certificate(text('tls.crt'));
  } catch {
    return 'unreadable tls.crt';
  }
  const from = Date.parse(leaf.validFrom);
  const to = Date.parse(leaf.validTo);
  if (now.getTime() >= from + ((to - from) * 2) / 3) return 'past 2/3 of its lifetime';
  const sans = new Set(
    (leaf.subjectAltName ?? '')
      .split(', ')
      .filter((n) => n.startsWith('DNS:'))
      .map((n) => n.slice(4)),
  );
  if (want.dnsNames.length !== sans.size || want.dnsNames.some((name) => !sans.has(name))) return 'DNS names changed';
  if (text('root-cert.pem') !== want.rootsPem) return 'trust bundle changed';
  return undefined;
}

export interface IstiodSecretKeeperOptions {
  readonly client: KubeClient;
  /** The current trust bundle (what root-cert.pem must hold). */
  readonly rootsPem: () => string;
  readonly issue: (request: IstiodCertificateRequest) => Promise<IstiodCertificate>;
  readonly request: IstiodCertificateRequest;
  readonly logger: Logger;
  /** How often the Secret is re-checked (default: a tenth of the TTL, between 1 s and 10 min). */
  readonly checkIntervalMs?: number;
}

/** A leader task keeping Secret istiod-tls current. */
export class IstiodSecretKeeper {
  readonly #options: IstiodSecretKeeperOptions;
  readonly #secrets: Resource<Secret>;
  #timer: NodeJS.Timeout | undefined;
  #running = false;
  #checking: Promise<void> | undefined;

  constructor(options: IstiodSecretKeeperOptions) {
    this.#options = options;
    this.#secrets = Resource.secrets(options.client);
  }

  start(): void {
    if (this.#running) return;
    this.#running = true;
    this.#loop();
  }

  stop(): void {
    this.#running = false;
    clearTimeout(this.#timer);
  }

  /** The bundle changed: re-check now. */
  bundleChanged(): void {
    if (this.#running) void this.check();
  }

  check(): Promise<void> {
    this.#checking ??= this.#check().finally(() => (this.#checking = undefined));
    return this.#checking;
  }

  #loop(): void {
    if (!this.#running) return;
    void this.check().finally(() => {
      if (!this.#running) return;
      const interval = this.#options.checkIntervalMs ?? Math.min(600_000, Math.max(1_000, this.#options.request.ttlMs / 10));
      this.#timer = setTimeout(() => this.#loop(), interval);
      this.#timer.unref();
    });
  }

  async #check(): Promise<void> {
    const { request, rootsPem, issue, client, logger } = this.#options;
    const secret = `${request.namespace}/${ISTIOD_SECRET}`;
    try {
      const reason = renewalReason(await this.#secrets.get(request.namespace, ISTIOD_SECRET), {
        rootsPem: rootsPem(),
        dnsNames: istiodDnsNames(request.namespace, request.revisions),
      });
      if (reason === undefined || !this.#running) return;
      const issued = await issue(request);
      const outcome = await writeIstiodSecret(client, request.namespace, issued.files, () => this.#running);
      logger.info(
        { secret, reason, outcome, serial: issued.serialHex, notAfter: issued.notAfter },
        'wrote istiod serving certificate Secret',
      );
    } catch (error) {
      logger.warn({ err: error, secret }, 'cannot update Secret istiod-tls; retrying at the next check');
    }
  }
}
