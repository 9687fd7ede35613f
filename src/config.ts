import { buildKubernetesConfig, KUBERNETES_FLAGS } from './config/kubernetes.js';
import {
  durationFlag,
  guard,
  nonNegativeInt,
  nonNegativeNumber,
  oneOf,
  percentage,
  positiveDuration,
  positiveInt,
} from './config/values.js';
import { bool, list, str, UsageError, type FlagSpec, type FlagValues } from './flags.js';
import { parseListenAddress, type ListenAddress } from './net.js';
import { KEY_TYPES, parseKeyType, type KeyType } from './pki/keys.js';
import { defaultVerifierThreads } from './pki/verify-pool.js';
import { parseTrustDomain } from './spiffe/id.js';
import { parseJwtKeyType, type JwtKeyType } from './authority/jwt-authority.js';
import { parseFederationPeer, type FederationPeer } from './federation/federation.js';
import type { KubernetesConfig } from './kubernetes/options.js';
import { buildStoreConfig, buildWorkers, STORE_FLAGS, type StoreConfig } from './config/store.js';
import { buildUpstreamConfig, UPSTREAM_FLAGS, type UpstreamConfig } from './config/upstream.js';

export const ECDSA_VERIFIER_CHOICES = ['auto', 'native', 'node'] as const;
export type EcdsaVerifierChoice = (typeof ECDSA_VERIFIER_CHOICES)[number];

/** The validated configuration the composition root (server.ts) is wired from. */
export interface ServerConfig {
  readonly dataDir: string;
  readonly trustDomain: string;
  readonly dev: boolean;
  readonly logLevel: string;
  readonly grpc: {
    readonly listen: ListenAddress;
    readonly plaintext: boolean;
    readonly maxMessageBytes: number;
    readonly maxConcurrentStreams: number;
    readonly maxInFlight: number;
    readonly maxActive: number;
    readonly requestReadTimeoutMs: number;
    readonly maxConnections: number;
    readonly maxConnectionsPerPeer: number;
    readonly keepaliveTimeMs: number;
    readonly maxConnectionIdleMs: number;
    readonly maxConnectionAgeMs: number;
    /** Certificates per second per identity (0 = unlimited), with a burst of 5× that. */
    readonly rateLimitPerIdentity: number;
    /** Share (0..1) of the data volume that must stay free for new issuance. */
    readonly minFreeDiskRatio: number;
    /** Worker threads verifying CSR signatures off the event loop. */
    readonly verifyThreads: number;
    /** How EC CSR signatures are checked: the native addon (auto: when it is built) or node:crypto. */
    readonly ecdsaVerifier: EcdsaVerifierChoice;
  };
  readonly serverDnsNames: readonly string[];
  readonly monitoringListen: ListenAddress;
  readonly jwt: {
    readonly issuer: string | undefined;
    readonly jwksFile: string | undefined;
    readonly jwksUrl: string | undefined;
    readonly audiences: readonly string[];
  };
  readonly clusterId: string;
  readonly issuance: {
    readonly defaultTtlMs: number;
    readonly maxTtlMs: number;
    readonly backdateMs: number;
  };
  readonly ca: {
    readonly keyType: KeyType;
    readonly rootTtlMs: number;
    readonly intermediateTtlMs: number;
  };
  /** SPIRE-style automatic rotation (authority/auto-rotation.ts); off by default. */
  readonly autoRotate: {
    readonly enabled: boolean;
    readonly checkIntervalMs: number;
  };
  readonly kekFile: string | undefined;
  readonly shutdownTimeoutMs: number;
  readonly admin: {
    readonly listen: ListenAddress;
    readonly tokenFile: string | undefined;
    readonly bodyLimitBytes: number;
    readonly requestTimeoutMs: number;
    readonly clientIds: readonly string[];
    readonly maxAuthFailuresPerMinute: number;
  };
  readonly bundleRefreshHintSeconds: number;
  /** JWT-SVIDs (authority/jwt-authority.ts, authority/jwt-svid-issuance.ts). */
  readonly jwtSvid: {
    readonly defaultTtlMs: number;
    readonly maxTtlMs: number;
    readonly keyType: JwtKeyType;
    readonly keyTtlMs: number;
  };
  /** Federation with other trust domains (src/federation/). */
  readonly federation: {
    readonly peers: readonly FederationPeer[];
    readonly caFile: string | undefined;
    /** Dedicated https_spiffe bundle endpoint; undefined = not served. */
    readonly bundleEndpointListen: ListenAddress | undefined;
  };
  readonly crlValidityMs: number;
  /** Authority Information Access OCSP URL in issued leaves; undefined = none (Istio does not use it). */
  readonly ocspUrl: string | undefined;
  /** Expired certificate rows are pruned this long after they expire. */
  readonly retentionMs: number;
  /** Audit events are pruned this long after they were written. */
  readonly auditRetentionMs: number;
  /** TokenReview, multi-cluster, ztunnel impersonation, root distribution, istiod Secret. */
  readonly kubernetes: KubernetesConfig;
  /** SQLite in dataDir, or a PostgreSQL shared by replicas. */
  readonly store: StoreConfig;
  /** Processes sharing the listeners (serve --workers). */
  readonly workers: number;
  /** An upstream CA that signs and renews meshca's intermediate (docs/operations/upstream.md). */
  readonly upstream: UpstreamConfig;
}

/** Shared with `meshca istiod-cert`, which issues under the same policy as the server. */
export const MAX_TTL_FLAG: FlagSpec = {
  name: 'max-ttl',
  kind: 'string',
  value: 'DURATION',
  default: '720h',
  help: 'longer requested lifetimes are clamped to this',
};
export const CLOCK_SKEW_FLAG: FlagSpec = {
  name: 'clock-skew',
  kind: 'string',
  value: 'DURATION',
  default: '1m',
  help: 'NotBefore backdating to absorb clock skew',
};

export const SERVE_FLAGS: readonly FlagSpec[] = [
  { name: 'data-dir', kind: 'string', value: 'DIR', default: './data', help: 'where the SQLite store (and dev-mode secrets) live' },
  { name: 'trust-domain', kind: 'string', value: 'NAME', default: 'cluster.local', help: 'SPIFFE trust domain of issued identities' },
  { name: 'dev', kind: 'boolean', help: 'development mode: generate a KEK and a local token issuer if none are configured' },
  { name: 'grpc-listen', kind: 'string', value: 'HOST:PORT', default: '0.0.0.0:15012', help: 'Istio CA gRPC listener' },
  { name: 'grpc-plaintext', kind: 'boolean', help: 'serve gRPC without TLS (testing only)' },
  {
    name: 'server-dns',
    kind: 'list',
    value: 'NAME,...',
    default: ['localhost', 'meshca', 'meshca.istio-system.svc'],
    help: 'DNS SANs of the serving certificate (the host part of CA_ADDR)',
  },
  {
    name: 'monitoring-listen',
    kind: 'string',
    value: 'HOST:PORT',
    default: '0.0.0.0:15014',
    help: '/healthz, /readyz and /metrics listener',
  },
  { name: 'jwt-issuer', kind: 'string', value: 'URL', help: 'required "iss" of ServiceAccount tokens' },
  { name: 'jwks-file', kind: 'string', value: 'PATH', help: 'JWKS of the token issuer, from a file' },
  { name: 'jwks-url', kind: 'string', value: 'URL', help: 'JWKS of the token issuer, fetched and cached' },
  { name: 'token-audience', kind: 'list', value: 'AUD', default: ['istio-ca'], help: 'accepted token audiences (repeatable)' },
  {
    name: 'cluster-id',
    kind: 'string',
    value: 'NAME',
    default: 'Kubernetes',
    help: 'id of the local cluster (the clusterid header istio-agent sends)',
  },
  {
    name: 'default-ttl',
    kind: 'string',
    value: 'DURATION',
    default: '24h',
    help: 'lifetime of a workload certificate when none is requested',
  },
  MAX_TTL_FLAG,
  CLOCK_SKEW_FLAG,
  { name: 'ca-key-type', kind: 'string', value: 'TYPE', default: 'ec-p256', help: `key type of new CAs: ${KEY_TYPES.join(', ')}` },
  { name: 'root-ttl', kind: 'string', value: 'DURATION', default: '10y', help: 'lifetime of new root CAs' },
  { name: 'intermediate-ttl', kind: 'string', value: 'DURATION', default: '1y', help: 'lifetime of new intermediate CAs' },
  {
    name: 'auto-rotate',
    kind: 'boolean',
    help: "rotate automatically: prepare a new CA at 1/2 of the active intermediate's lifetime, activate it at 5/6, remove retired roots once their certificates expired",
  },
  {
    name: 'auto-rotate-check-interval',
    kind: 'string',
    value: 'DURATION',
    default: '1m',
    help: 'how often --auto-rotate checks the thresholds',
  },
  {
    name: 'kek-file',
    kind: 'string',
    value: 'PATH',
    help: 'key-encryption key file (base64 of 32 bytes, `openssl rand -base64 32`); or set MESHCA_KEK to the key itself',
  },
  { name: 'admin-listen', kind: 'string', value: 'HOST:PORT', default: '127.0.0.1:8443', help: 'admin REST API listener (HTTPS)' },
  {
    name: 'admin-token-file',
    kind: 'string',
    value: 'PATH',
    help: 'file holding the admin bearer token; or set MESHCA_ADMIN_TOKEN to the token itself (default: generated into <data-dir>/admin-token)',
  },
  { name: 'admin-body-limit', kind: 'string', value: 'BYTES', default: '1048576', help: 'largest admin request body' },
  { name: 'admin-request-timeout', kind: 'string', value: 'DURATION', default: '30s', help: 'admin requests taking longer are aborted' },
  {
    name: 'admin-client-ids',
    kind: 'list',
    value: 'SPIFFE_ID,...',
    help: 'also require an admin client certificate from the mesh CA with one of these SPIFFE IDs',
  },
  {
    name: 'admin-max-auth-failures',
    kind: 'string',
    value: 'N',
    default: '10',
    help: 'failed admin authentications per minute (all sources together) answered at once; further failures are answered with a growing delay (the correct token never waits)',
  },
  { name: 'bundle-refresh-hint', kind: 'string', value: 'DURATION', default: '5m', help: 'spiffe_refresh_hint of the SPIFFE bundle' },
  { name: 'jwt-svid-ttl', kind: 'string', value: 'DURATION', default: '5m', help: 'lifetime of a JWT-SVID when none is requested' },
  {
    name: 'jwt-svid-max-ttl',
    kind: 'string',
    value: 'DURATION',
    default: '1h',
    help: 'longer requested JWT-SVID lifetimes are clamped to this',
  },
  {
    name: 'jwt-key-type',
    kind: 'string',
    value: 'TYPE',
    default: 'ec-p256',
    help: 'JWT-SVID signing keys: ec-p256 (ES256), ec-p384 (ES384), rsa-2048 (RS256)',
  },
  {
    name: 'jwt-key-ttl',
    kind: 'string',
    value: 'DURATION',
    default: '24h',
    help: 'lifetime of a JWT-SVID signing key; the next one is prepared at 1/2 and activated at 5/6 of it',
  },
  {
    name: 'federate-with',
    kind: 'list',
    value: 'TD=URL',
    help: 'federate with another trust domain: fetch its SPIFFE bundle from this https bundle endpoint (repeatable)',
  },
  {
    name: 'federation-ca-file',
    kind: 'string',
    value: 'PATH',
    help: 'PEM roots that verify the federated bundle endpoints (default: the system roots)',
  },
  {
    name: 'bundle-endpoint-listen',
    kind: 'string',
    value: 'HOST:PORT',
    help: "also serve the SPIFFE bundle on a dedicated HTTPS listener with meshca's SVID (https_spiffe profile)",
  },
  {
    name: 'crl-validity',
    kind: 'string',
    value: 'DURATION',
    default: '24h',
    help: 'nextUpdate - thisUpdate of published CRLs (rebuilt at half of it)',
  },
  {
    name: 'ocsp-url',
    kind: 'string',
    value: 'URL',
    help: 'put this OCSP responder URL (AIA) in issued leaves, e.g. https://meshca.istio-system.svc:8443/v1/ocsp; off by default (Istio does not use OCSP)',
  },
  { name: 'retention', kind: 'string', value: 'DURATION', default: '30d', help: 'keep expired certificate records this long after expiry' },
  {
    name: 'audit-retention',
    kind: 'string',
    value: 'DURATION',
    default: '1y',
    help: 'keep audit events this long; older ones are pruned by housekeeping',
  },
  { name: 'max-message-bytes', kind: 'string', value: 'BYTES', default: '65536', help: 'largest gRPC request accepted' },
  {
    name: 'max-concurrent-streams',
    kind: 'string',
    value: 'N',
    default: '16',
    help: 'HTTP/2 streams per client connection (istio-agent uses one per request)',
  },
  {
    name: 'request-read-timeout',
    kind: 'string',
    value: 'DURATION',
    default: '10s',
    help: 'cancel a call whose request message has not arrived this long after its headers (also the TLS handshake deadline)',
  },
  {
    name: 'max-connections',
    kind: 'string',
    value: 'N',
    default: '1024',
    help: 'open gRPC connections in total; new ones beyond are refused',
  },
  {
    name: 'max-connections-per-peer',
    kind: 'string',
    value: 'N',
    default: '64',
    help: 'open gRPC connections from one IP address; new ones beyond are refused',
  },
  {
    name: 'max-in-flight',
    kind: 'string',
    value: 'N',
    default: '2048',
    help: 'requests processed at once before shedding with RESOURCE_EXHAUSTED',
  },
  {
    name: 'max-active',
    kind: 'string',
    value: 'N',
    default: '128',
    help: 'of those, requests worked on at once; the rest wait in arrival order, so a burst finishes in order',
  },
  {
    name: 'verify-threads',
    kind: 'string',
    value: 'N',
    default: String(defaultVerifierThreads()),
    help: 'worker threads that verify CSR signatures and sign the leaves (default: cores - 1, 1-4); 0 = verify on the event loop, sign on the libuv pool',
  },
  {
    name: 'ecdsa-verifier',
    kind: 'string',
    value: 'KIND',
    default: 'auto',
    help: 'how EC CSR signatures are checked: native (the addon npm ci builds; refuse to start without it), node (node:crypto, ~2x the CPU), auto (native when built)',
  },
  {
    name: 'rate-limit-per-identity',
    kind: 'string',
    value: 'N',
    default: '10',
    help: 'certificate (and, separately, JWT-SVID) requests per second per SPIFFE ID, burst 5x that (docs/security.md explains the size); 0 = unlimited',
  },
  {
    name: 'min-free-disk',
    kind: 'string',
    value: 'PERCENT',
    default: '5%',
    help: 'refuse new certificates (UNAVAILABLE) while less than this share of the data volume is free; 0 = off',
  },
  {
    name: 'keepalive-time',
    kind: 'string',
    value: 'DURATION',
    default: '5m',
    help: 'server pings idle clients this often and drops dead connections',
  },
  {
    name: 'max-connection-idle',
    kind: 'string',
    value: 'DURATION',
    default: '30m',
    help: 'connections without calls this long are closed (GOAWAY)',
  },
  {
    name: 'max-connection-age',
    kind: 'string',
    value: 'DURATION',
    default: '1h',
    help: 'connections are recycled after this long so clients rebalance across replicas',
  },
  { name: 'shutdown-timeout', kind: 'string', value: 'DURATION', default: '15s', help: 'how long SIGTERM waits for in-flight requests' },
  { name: 'log-level', kind: 'string', value: 'LEVEL', default: 'info', help: 'trace, debug, info, warn, error' },
  ...KUBERNETES_FLAGS,
  ...STORE_FLAGS,
  ...UPSTREAM_FLAGS,
];

export function buildServerConfig(values: FlagValues): ServerConfig {
  const jwksFile = str(values, 'jwks-file');
  const jwksUrl = str(values, 'jwks-url');
  if (jwksFile && jwksUrl) throw new UsageError('use either --jwks-file or --jwks-url, not both');
  const issuer = str(values, 'jwt-issuer');
  if ((jwksFile || jwksUrl) && !issuer)
    throw new UsageError('--jwt-issuer is required with --jwks-file/--jwks-url (e.g. https://kubernetes.default.svc.cluster.local)');
  const dev = bool(values, 'dev');
  if (!dev && !jwksFile && !jwksUrl && !bool(values, 'token-review')) {
    throw new UsageError(
      'no token validation configured: pass --jwks-file or --jwks-url with --jwt-issuer, or --token-review (or --dev for a local token issuer)',
    );
  }
  return {
    dataDir: str(values, 'data-dir')!,
    trustDomain: guard('--trust-domain', () => parseTrustDomain(str(values, 'trust-domain')!)),
    dev,
    logLevel: str(values, 'log-level')!,
    grpc: {
      listen: guard('--grpc-listen', () => parseListenAddress(str(values, 'grpc-listen')!)),
      plaintext: bool(values, 'grpc-plaintext'),
      maxMessageBytes: positiveInt(values, 'max-message-bytes'),
      maxConcurrentStreams: positiveInt(values, 'max-concurrent-streams'),
      maxInFlight: positiveInt(values, 'max-in-flight'),
      maxActive: positiveInt(values, 'max-active'),
      requestReadTimeoutMs: positiveDuration(values, 'request-read-timeout'),
      maxConnections: positiveInt(values, 'max-connections'),
      maxConnectionsPerPeer: positiveInt(values, 'max-connections-per-peer'),
      keepaliveTimeMs: durationFlag(values, 'keepalive-time'),
      maxConnectionIdleMs: durationFlag(values, 'max-connection-idle'),
      maxConnectionAgeMs: durationFlag(values, 'max-connection-age'),
      rateLimitPerIdentity: nonNegativeNumber(values, 'rate-limit-per-identity'),
      minFreeDiskRatio: percentage(values, 'min-free-disk'),
      verifyThreads: nonNegativeInt(values, 'verify-threads'),
      ecdsaVerifier: oneOf(values, 'ecdsa-verifier', ECDSA_VERIFIER_CHOICES),
    },
    serverDnsNames: list(values, 'server-dns'),
    monitoringListen: guard('--monitoring-listen', () => parseListenAddress(str(values, 'monitoring-listen')!)),
    jwt: { issuer, jwksFile, jwksUrl, audiences: list(values, 'token-audience') },
    clusterId: str(values, 'cluster-id')!,
    issuance: issuanceConfig(values, 'default-ttl'),
    ca: {
      keyType: guard('--ca-key-type', () => parseKeyType(str(values, 'ca-key-type')!)),
      rootTtlMs: durationFlag(values, 'root-ttl'),
      intermediateTtlMs: durationFlag(values, 'intermediate-ttl'),
    },
    autoRotate: { enabled: bool(values, 'auto-rotate'), checkIntervalMs: positiveDuration(values, 'auto-rotate-check-interval') },
    kekFile: str(values, 'kek-file'),
    shutdownTimeoutMs: durationFlag(values, 'shutdown-timeout'),
    admin: {
      listen: guard('--admin-listen', () => parseListenAddress(str(values, 'admin-listen')!)),
      tokenFile: str(values, 'admin-token-file'),
      bodyLimitBytes: positiveInt(values, 'admin-body-limit'),
      requestTimeoutMs: durationFlag(values, 'admin-request-timeout'),
      clientIds: list(values, 'admin-client-ids'),
      maxAuthFailuresPerMinute: positiveInt(values, 'admin-max-auth-failures'),
    },
    bundleRefreshHintSeconds: Math.round(durationFlag(values, 'bundle-refresh-hint') / 1000),
    jwtSvid: jwtSvidConfig(values),
    federation: federationConfig(values),
    crlValidityMs: durationFlag(values, 'crl-validity'),
    ocspUrl: ocspUrl(str(values, 'ocsp-url')),
    retentionMs: durationFlag(values, 'retention'),
    auditRetentionMs: positiveDuration(values, 'audit-retention'),
    kubernetes: buildKubernetesConfig(values, str(values, 'cluster-id')!),
    store: buildStoreConfig(values),
    workers: buildWorkers(values),
    upstream: upstreamConfig(values),
  };
}

/**
 * The issuance lifetime policy from --max-ttl, --clock-skew and the flag naming the default
 * lifetime; a default above the maximum is refused rather than silently clamped.
 */
export function issuanceConfig(values: FlagValues, defaultFlag: string): ServerConfig['issuance'] {
  const defaultTtlMs = durationFlag(values, defaultFlag);
  const maxTtlMs = durationFlag(values, 'max-ttl');
  if (defaultTtlMs > maxTtlMs)
    throw new UsageError(
      `--${defaultFlag} ${str(values, defaultFlag)} is longer than --max-ttl ${str(values, 'max-ttl')}: raise --max-ttl or lower --${defaultFlag}`,
    );
  return { defaultTtlMs, maxTtlMs, backdateMs: durationFlag(values, 'clock-skew') };
}

function federationConfig(values: FlagValues): ServerConfig['federation'] {
  const peers = list(values, 'federate-with').map((value) => guard('--federate-with', () => parseFederationPeer(value, parseTrustDomain)));
  const trustDomain = str(values, 'trust-domain');
  if (peers.some((p) => p.trustDomain === trustDomain))
    throw new UsageError('--federate-with: a trust domain does not federate with itself');
  if (new Set(peers.map((p) => p.trustDomain)).size !== peers.length) throw new UsageError('--federate-with: each trust domain once');
  const listen = str(values, 'bundle-endpoint-listen');
  return {
    peers,
    caFile: str(values, 'federation-ca-file'),
    bundleEndpointListen: listen === undefined ? undefined : guard('--bundle-endpoint-listen', () => parseListenAddress(listen)),
  };
}

function jwtSvidConfig(values: FlagValues): ServerConfig['jwtSvid'] {
  const defaultTtlMs = positiveDuration(values, 'jwt-svid-ttl');
  const maxTtlMs = positiveDuration(values, 'jwt-svid-max-ttl');
  const keyTtlMs = positiveDuration(values, 'jwt-key-ttl');
  if (defaultTtlMs > maxTtlMs) throw new UsageError('--jwt-svid-ttl must not be longer than --jwt-svid-max-ttl');
  return { defaultTtlMs, maxTtlMs, keyTtlMs, keyType: guard('--jwt-key-type', () => parseJwtKeyType(str(values, 'jwt-key-type')!)) };
}

function upstreamConfig(values: FlagValues): UpstreamConfig {
  const upstream = buildUpstreamConfig(values);
  if (upstream.kind !== 'none' && bool(values, 'auto-rotate')) {
    throw new UsageError(
      `--upstream ${upstream.kind} renews the intermediate itself; drop --auto-rotate (it would create meshca-signed roots)`,
    );
  }
  return upstream;
}

/** An absolute http(s) URL in plain ASCII, as AIA's IA5String needs. */
function ocspUrl(value: string | undefined): string | undefined {
  if (value === undefined) return undefined;
  if (!/^https?:\/\/[\x21-\x7e]+$/.test(value) || !URL.canParse(value)) {
    throw new UsageError(
      `--ocsp-url must be an absolute http(s) URL without spaces, e.g. https://meshca.istio-system.svc:8443/v1/ocsp (got "${value}")`,
    );
  }
  return value;
}

/** A duration flag in milliseconds (kept for the commands that import it from here). */
export const duration = durationFlag;
