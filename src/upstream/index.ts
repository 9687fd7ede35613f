import type { Logger } from 'pino';
import type { IntermediateSigner } from '../authority/lifecycle.js';
import type { KubeClient } from '../kubernetes/client.js';
import { CertManagerSigner } from './cert-manager.js';
import type { UpstreamConfig } from './options.js';
import { VaultSigner } from './vault.js';

export type { UpstreamConfig } from './options.js';

export interface UpstreamPorts {
  readonly logger: Logger;
  /** The local cluster's API (cert-manager); only called when that upstream is configured. */
  readonly kubeClient: () => KubeClient;
}

/** The configured upstream CA client, or undefined when meshca is its own root (--upstream none). */
export function createUpstreamSigner(config: UpstreamConfig, ports: UpstreamPorts): IntermediateSigner | undefined {
  if (config.kind === 'vault') return new VaultSigner(config.vault, ports.logger.child({ upstream: 'vault' }));
  if (config.kind === 'cert-manager')
    return new CertManagerSigner(ports.kubeClient(), config.certManager, ports.logger.child({ upstream: 'cert-manager' }));
  return undefined;
}
