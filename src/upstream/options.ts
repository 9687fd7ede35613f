/** The validated upstream CA settings (parsed from flags in config/upstream.ts). */
import type { CertManagerConfig } from './cert-manager.js';
import type { VaultConfig } from './vault.js';

export interface UpstreamRenewalConfig {
  readonly checkIntervalMs: number;
  /** First retry after a failed request; doubles up to max(this, 10m). */
  readonly retryInitialMs: number;
  readonly retryMaxMs: number;
}

export type UpstreamConfig =
  | { readonly kind: 'none' }
  | { readonly kind: 'vault'; readonly vault: VaultConfig; readonly renewal: UpstreamRenewalConfig }
  | { readonly kind: 'cert-manager'; readonly certManager: CertManagerConfig; readonly renewal: UpstreamRenewalConfig };
