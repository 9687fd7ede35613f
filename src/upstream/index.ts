import type { Logger } from 'pino';
import type { IntermediateSigner } from '../authority/lifecycle.js';
import type { UpstreamConfig } from './options.js';
import { VaultSigner } from './vault.js';

export { buildUpstreamConfig, UPSTREAM_FLAGS, type UpstreamConfig } from './options.js';

/** The configured upstream CA client, or undefined when meshca is its own root (--upstream none). */
export function createUpstreamSigner(config: UpstreamConfig, logger: Logger): IntermediateSigner | undefined {
  if (config.kind === 'vault') return new VaultSigner(config.vault, logger.child({ upstream: 'vault' }));
  return undefined;
}
