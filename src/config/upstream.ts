/** `meshca serve` flags for an upstream CA (Vault PKI, cert-manager) and their validated form. */
import { parseDuration } from '../duration.js';
import { str, UsageError, type FlagSpec, type FlagValues } from '../flags.js';
import type { CertManagerConfig } from '../upstream/cert-manager.js';
import type { UpstreamConfig } from '../upstream/options.js';
import type { VaultAuth, VaultConfig } from '../upstream/vault.js';

export type { UpstreamConfig, UpstreamRenewalConfig } from '../upstream/options.js';

const K8S_TOKEN = '/var/run/secrets/kubernetes.io/serviceaccount/token';
const MAX_RETRY_MS = 10 * 60_000;

export const UPSTREAM_FLAGS: readonly FlagSpec[] = [
  {
    name: 'upstream',
    kind: 'string',
    value: 'none|vault|cert-manager',
    default: 'none',
    help: "an upstream CA signs meshca's intermediate (its key never leaves meshca) and renews it at 2/3 of its lifetime",
  },
  { name: 'upstream-timeout', kind: 'string', value: 'DURATION', default: '10s', help: 'timeout of one request to the upstream CA' },
  {
    name: 'upstream-check-interval',
    kind: 'string',
    value: 'DURATION',
    default: '1m',
    help: 'how often the upstream renewal checks its thresholds',
  },
  {
    name: 'upstream-retry',
    kind: 'string',
    value: 'DURATION',
    default: '30s',
    help: 'first retry after a failed upstream request, doubling up to 10m',
  },
  { name: 'vault-addr', kind: 'string', value: 'URL', help: "with --upstream vault: Vault's address, e.g. https://vault.example:8200" },
  {
    name: 'vault-pki-mount',
    kind: 'string',
    value: 'PATH',
    default: 'pki',
    help: 'PKI secrets engine whose issuer signs the intermediate (root/sign-intermediate)',
  },
  { name: 'vault-ca-file', kind: 'string', value: 'PATH', help: "PEM roots for Vault's TLS certificate (default: the system roots)" },
  { name: 'vault-auth', kind: 'string', value: 'token|approle|kubernetes', default: 'token', help: 'how meshca logs in to Vault' },
  {
    name: 'vault-token-file',
    kind: 'string',
    value: 'PATH',
    help: 'vault-auth token: file holding the token (re-read and renewed with auth/token/renew-self)',
  },
  { name: 'vault-approle-role-id-file', kind: 'string', value: 'PATH', help: 'vault-auth approle: file holding the role_id' },
  { name: 'vault-approle-secret-id-file', kind: 'string', value: 'PATH', help: 'vault-auth approle: file holding the secret_id' },
  { name: 'vault-role', kind: 'string', value: 'NAME', help: 'vault-auth kubernetes: the Vault role to log in as' },
  {
    name: 'vault-k8s-token-file',
    kind: 'string',
    value: 'PATH',
    default: K8S_TOKEN,
    help: 'vault-auth kubernetes: the service account token sent to Vault',
  },
  {
    name: 'vault-auth-mount',
    kind: 'string',
    value: 'PATH',
    help: 'mount of the approle or kubernetes auth method (default: approle, kubernetes)',
  },
  { name: 'issuer-name', kind: 'string', value: 'NAME', help: 'with --upstream cert-manager: the issuer that signs the intermediate' },
  {
    name: 'issuer-kind',
    kind: 'string',
    value: 'KIND',
    default: 'Issuer',
    help: "with --upstream cert-manager: Issuer or ClusterIssuer (or an external issuer's kind)",
  },
  {
    name: 'issuer-group',
    kind: 'string',
    value: 'GROUP',
    default: 'cert-manager.io',
    help: 'with --upstream cert-manager: API group of the issuer',
  },
  {
    name: 'cert-manager-namespace',
    kind: 'string',
    value: 'NS',
    help: "with --upstream cert-manager: namespace of the CertificateRequests (default: the Kubernetes connection's namespace)",
  },
  {
    name: 'upstream-wait',
    kind: 'string',
    value: 'DURATION',
    default: '5m',
    help: 'with --upstream cert-manager: how long to wait for a CertificateRequest to be approved and Ready',
  },
];

export function buildUpstreamConfig(values: FlagValues): UpstreamConfig {
  const kind = str(values, 'upstream')!;
  if (kind === 'none') return { kind: 'none' };
  const renewal = {
    checkIntervalMs: positive(values, 'upstream-check-interval'),
    retryInitialMs: positive(values, 'upstream-retry'),
    retryMaxMs: Math.max(positive(values, 'upstream-retry'), MAX_RETRY_MS),
  };
  if (kind === 'vault') return { kind, vault: vaultConfig(values), renewal };
  if (kind === 'cert-manager') return { kind, certManager: certManagerConfig(values), renewal };
  throw new UsageError(`--upstream must be none, vault or cert-manager, not "${kind}"`);
}

const K8S_NAME = /^[a-z0-9]([-a-z0-9.]*[a-z0-9])?$/;

function certManagerConfig(values: FlagValues): CertManagerConfig {
  const issuerName = required(values, 'issuer-name', 'with --upstream cert-manager');
  const namespace = str(values, 'cert-manager-namespace');
  for (const [flag, value] of [
    ['issuer-name', issuerName],
    ['cert-manager-namespace', namespace],
  ] as const) {
    if (value !== undefined && !K8S_NAME.test(value)) throw new UsageError(`--${flag} "${value}" is not a Kubernetes object name`);
  }
  return {
    issuerName,
    issuerKind: str(values, 'issuer-kind')!,
    issuerGroup: str(values, 'issuer-group')!,
    namespace,
    waitMs: positive(values, 'upstream-wait'),
  };
}

function vaultConfig(values: FlagValues): VaultConfig {
  const addr = required(values, 'vault-addr', 'with --upstream vault');
  let url: URL;
  try {
    url = new URL(addr);
  } catch {
    throw new UsageError(`--vault-addr "${addr}" is not a URL; e.g. https://vault.example:8200`);
  }
  if (url.protocol !== 'https:')
    throw new UsageError('--vault-addr must be https:// (the CSR, the token and the signed intermediate travel over it)');
  return {
    addr,
    pkiMount: mountPath(values, 'vault-pki-mount')!,
    caFile: str(values, 'vault-ca-file'),
    auth: vaultAuth(values),
    requestTimeoutMs: positive(values, 'upstream-timeout'),
  };
}

function vaultAuth(values: FlagValues): VaultAuth {
  const method = str(values, 'vault-auth');
  const mount = mountPath(values, 'vault-auth-mount');
  if (method === 'token') return { method, tokenFile: required(values, 'vault-token-file', 'with --vault-auth token') };
  if (method === 'approle') {
    return {
      method,
      mount: mount ?? 'approle',
      roleIdFile: required(values, 'vault-approle-role-id-file', 'with --vault-auth approle'),
      secretIdFile: required(values, 'vault-approle-secret-id-file', 'with --vault-auth approle'),
    };
  }
  if (method === 'kubernetes')
    return {
      method,
      mount: mount ?? 'kubernetes',
      role: required(values, 'vault-role', 'with --vault-auth kubernetes'),
      jwtFile: str(values, 'vault-k8s-token-file')!,
    };
  throw new UsageError(`--vault-auth must be token, approle or kubernetes, not "${method}"`);
}

function required(values: FlagValues, name: string, when: string): string {
  const value = str(values, name);
  if (!value) throw new UsageError(`--${name} is required ${when}`);
  return value;
}

/** Vault mount paths: path segments only, so a flag cannot redirect requests elsewhere on the server. */
function mountPath(values: FlagValues, name: string): string | undefined {
  const value = str(values, name);
  const invalid =
    value !== undefined &&
    (!/^[A-Za-z0-9_.-]+(\/[A-Za-z0-9_.-]+)*$/.test(value) || value.split('/').some((segment) => /^\.+$/.test(segment)));
  if (invalid) throw new UsageError(`--${name} "${value}" is not a Vault mount path (e.g. pki or pki/int)`);
  return value;
}

function positive(values: FlagValues, name: string): number {
  let ms: number;
  try {
    ms = parseDuration(str(values, name)!);
  } catch (error) {
    throw new UsageError(`--${name}: ${(error as Error).message}`);
  }
  if (ms <= 0) throw new UsageError(`--${name} must be longer than 0`);
  return ms;
}
