import { parseDuration } from '../duration.js';
import { str, UsageError, requireStr, type FlagSpec, type FlagValues } from '../flags.js';
import { parseListenAddress, type ListenAddress } from '../net.js';
import { parseTrustDomain } from '../spiffe/id.js';

/** `meshca agent` configuration: everything the agent needs, nothing of the server's. */
export interface AgentConfig {
  readonly server: string;
  readonly serverName: string | undefined;
  readonly rootFile: string;
  readonly tokenFile: string;
  readonly trustDomain: string;
  readonly clusterId: string;
  readonly socket: string;
  readonly socketMode: number;
  readonly sdsSocket: string | undefined;
  readonly writeDir: string | undefined;
  readonly onRotate: string | undefined;
  readonly svidTtlSeconds: number;
  readonly monitoringListen: ListenAddress;
  readonly logLevel: string;
}

export const AGENT_FLAGS: readonly FlagSpec[] = [
  { name: 'server', kind: 'string', value: 'HOST:PORT', help: 'meshca gRPC address (required)' },
  { name: 'server-name', kind: 'string', value: 'NAME', help: 'TLS server name when it differs from the address host' },
  { name: 'root', kind: 'string', value: 'PATH', help: 'PEM roots to verify meshca (required; later roots come with the bundle)' },
  {
    name: 'token-file',
    kind: 'string',
    value: 'PATH',
    help: 'ServiceAccount token, re-read on every request (required; e.g. a projected token)',
  },
  { name: 'trust-domain', kind: 'string', value: 'NAME', default: 'cluster.local', help: "trust domain of the agent's identity" },
  { name: 'cluster-id', kind: 'string', value: 'NAME', default: 'Kubernetes', help: 'clusterid header sent to meshca' },
  {
    name: 'socket',
    kind: 'string',
    value: 'PATH',
    default: '/run/meshca/agent.sock',
    help: 'Unix socket of the SPIFFE Workload API (SPIFFE_ENDPOINT_SOCKET=unix://PATH)',
  },
  {
    name: 'socket-mode',
    kind: 'string',
    value: '0770|0777',
    default: '0770',
    help: 'file mode of the sockets; 0777 lets every local user in',
  },
  {
    name: 'sds-socket',
    kind: 'string',
    value: 'PATH',
    help: 'also serve Envoy SDS (resources "default" and "ROOTCA") on this Unix socket',
  },
  { name: 'write-dir', kind: 'string', value: 'DIR', help: 'keep tls.crt, tls.key (0600) and ca.crt here, replaced atomically' },
  { name: 'on-rotate', kind: 'string', value: 'CMD', help: 'shell command run after every update of --write-dir' },
  { name: 'svid-ttl', kind: 'string', value: 'DURATION', default: '1h', help: 'requested X509-SVID lifetime (renewed at half of it)' },
  {
    name: 'monitoring-listen',
    kind: 'string',
    value: 'HOST:PORT',
    default: '127.0.0.1:15016',
    help: '/healthz, /readyz and /metrics of the agent',
  },
  { name: 'log-level', kind: 'string', value: 'LEVEL', default: 'info', help: 'trace, debug, info, warn, error' },
];

export function buildAgentConfig(values: FlagValues): AgentConfig {
  const mode = str(values, 'socket-mode')!;
  if (mode !== '0770' && mode !== '0777') throw new UsageError('--socket-mode must be 0770 or 0777');
  const ttl = wrap('--svid-ttl', () => parseDuration(str(values, 'svid-ttl')!));
  if (ttl < 1000) throw new UsageError('--svid-ttl must be at least 1s');
  return {
    server: requireStr(values, 'server'),
    serverName: str(values, 'server-name'),
    rootFile: requireStr(values, 'root'),
    tokenFile: requireStr(values, 'token-file'),
    trustDomain: wrap('--trust-domain', () => parseTrustDomain(str(values, 'trust-domain')!)),
    clusterId: str(values, 'cluster-id')!,
    socket: requireStr(values, 'socket'),
    socketMode: Number.parseInt(mode, 8),
    sdsSocket: str(values, 'sds-socket'),
    writeDir: str(values, 'write-dir'),
    onRotate: str(values, 'on-rotate'),
    svidTtlSeconds: Math.round(ttl / 1000),
    monitoringListen: wrap('--monitoring-listen', () => parseListenAddress(str(values, 'monitoring-listen')!)),
    logLevel: str(values, 'log-level')!,
  };
}

function wrap<T>(flag: string, parse: () => T): T {
  try {
    return parse();
  } catch (error) {
    throw new UsageError(`${flag}: ${(error as Error).message}`);
  }
}
