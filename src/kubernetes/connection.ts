/**
 * Where a Kubernetes API server is and how to authenticate to it: in-cluster service-account
 * config, or a kubeconfig file (current-context; token, tokenFile or client certificate).
 */

import { readFileSync } from 'node:fs';
import { MeshcaError } from '../errors.js';
import { dirname, isAbsolute, resolve } from 'node:path';
import { parse as parseYaml } from 'yaml';

export const SERVICE_ACCOUNT_DIR = '/var/run/secrets/kubernetes.io/serviceaccount';

export interface KubeConnection {
  readonly server: URL;
  /** PEM CA bundle for the API server; undefined = the system roots. */
  readonly ca: string | undefined;
  readonly tlsServerName: string | undefined;
  readonly insecureSkipTlsVerify: boolean;
  /** A static bearer token. */
  readonly token: string | undefined;
  /** A bearer token file re-read periodically (projected tokens rotate). */
  readonly tokenFile: string | undefined;
  /** Client certificate and key, PEM. */
  readonly clientCert: string | undefined;
  readonly clientKey: string | undefined;
  /** The pod's namespace (in-cluster) or the context's namespace. */
  readonly namespace: string | undefined;
  /** For logs and errors: never contains credentials. */
  readonly description: string;
}

export class KubeConfigError extends MeshcaError<'ERR_KUBE_CONFIG'> {
  override readonly name = 'KubeConfigError';
  constructor(message: string) {
    super('ERR_KUBE_CONFIG', message);
  }
}

/** --kubeconfig when given, else the in-cluster config; throws KubeConfigError if neither is usable. */
export function loadKubeConnection(options: {
  readonly kubeconfig?: string;
  readonly env: NodeJS.ProcessEnv;
  readonly serviceAccountDir?: string;
}): KubeConnection {
  if (options.kubeconfig !== undefined) return loadKubeconfig(options.kubeconfig);
  if (options.env.KUBERNETES_SERVICE_HOST) return inClusterConnection(options.env, options.serviceAccountDir ?? SERVICE_ACCOUNT_DIR);
  throw new KubeConfigError(
    'no Kubernetes API configured: pass --kubeconfig PATH, or run meshca in a pod (KUBERNETES_SERVICE_HOST is not set)',
  );
}

/** client-go's rest.InClusterConfig: KUBERNETES_SERVICE_HOST/PORT, the SA token file and ca.crt. */
export function inClusterConnection(env: NodeJS.ProcessEnv, serviceAccountDir = SERVICE_ACCOUNT_DIR): KubeConnection {
  const host = env.KUBERNETES_SERVICE_HOST;
  const port = env.KUBERNETES_SERVICE_PORT;
  if (!host || !port) throw new KubeConfigError('in-cluster config needs KUBERNETES_SERVICE_HOST and KUBERNETES_SERVICE_PORT');
  const tokenFile = `${serviceAccountDir}/token`;
  readText(tokenFile, 'the service-account token'); // fail at start, not on the first request
  return {
    server: new URL(`https://${host.includes(':') ? `[${host}]` : host}:${port}`),
    ca: readText(`${serviceAccountDir}/ca.crt`, 'the service-account CA file'),
    tlsServerName: undefined,
    insecureSkipTlsVerify: false,
    token: undefined,
    tokenFile,
    clientCert: undefined,
    clientKey: undefined,
    namespace: optionalText(`${serviceAccountDir}/namespace`),
    description: 'in-cluster service account',
  };
}

/** A minimal kubeconfig reader: the current context's cluster and user, YAML or JSON. */
export function loadKubeconfig(path: string): KubeConnection {
  const base = dirname(resolve(path));
  let doc: unknown;
  try {
    doc = parseYaml(readText(path, 'the kubeconfig'));
  } catch (error) {
    if (error instanceof KubeConfigError) throw error;
    throw new KubeConfigError(`kubeconfig ${path} is not valid YAML: ${(error as Error).message}`);
  }
  if (!isRecord(doc)) throw new KubeConfigError(`kubeconfig ${path} is not a kubeconfig (expected a mapping)`);
  const contextName = doc['current-context'];
  if (typeof contextName !== 'string' || contextName === '') throw new KubeConfigError(`kubeconfig ${path} has no current-context`);
  const context = entry(doc, 'contexts', 'context', contextName, path);
  const clusterName = context.cluster;
  if (typeof clusterName !== 'string') throw new KubeConfigError(`kubeconfig ${path}: context ${contextName} names no cluster`);
  const cluster = entry(doc, 'clusters', 'cluster', clusterName, path);
  const user = typeof context.user === 'string' ? entry(doc, 'users', 'user', context.user, path) : {};
  const where = `kubeconfig ${path} (context ${contextName})`;
  if (typeof cluster.server !== 'string') throw new KubeConfigError(`${where}: cluster ${clusterName} has no server`);
  let server: URL;
  try {
    server = new URL(cluster.server);
  } catch {
    throw new KubeConfigError(`${where}: server ${JSON.stringify(cluster.server)} is not a URL`);
  }
  if (server.protocol !== 'https:') throw new KubeConfigError(`${where}: server must be https:// (got ${server.protocol})`);
  for (const unsupported of ['exec', 'auth-provider', 'username']) {
    if (user[unsupported] !== undefined) {
      throw new KubeConfigError(
        `${where}: user credentials of type "${unsupported}" are not supported; use a token, tokenFile or client certificate`,
      );
    }
  }
  const file = (key: string) => (typeof user[key] === 'string' ? fileIn(base, user[key]) : undefined);
  return {
    server,
    ca: pemFrom(cluster, 'certificate-authority', base, where),
    tlsServerName: typeof cluster['tls-server-name'] === 'string' ? cluster['tls-server-name'] : undefined,
    insecureSkipTlsVerify: cluster['insecure-skip-tls-verify'] === true,
    token: typeof user.token === 'string' && user.token !== '' ? user.token : undefined,
    tokenFile: file('tokenFile'),
    clientCert: pemFrom(user, 'client-certificate', base, where),
    clientKey: pemFrom(user, 'client-key', base, where),
    namespace: typeof context.namespace === 'string' ? context.namespace : undefined,
    description: `${where}, server ${server.origin}`,
  };
}

/** `list` is e.g. `clusters`, each item `{ name, cluster: {...} }`. */
function entry(doc: Record<string, unknown>, list: string, field: string, name: string, path: string): Record<string, unknown> {
  const items: unknown[] = Array.isArray(doc[list]) ? doc[list] : [];
  const found = items.find((item): item is Record<string, unknown> => isRecord(item) && item.name === name);
  if (!found || !isRecord(found[field]))
    throw new KubeConfigError(`kubeconfig ${path}: ${field} ${JSON.stringify(name)} is not defined in ${list}`);
  return found[field] as Record<string, unknown>;
}

/** `<key>-data` (base64 PEM) or `<key>` (a file, relative to the kubeconfig). */
function pemFrom(section: Record<string, unknown>, key: string, base: string, where: string): string | undefined {
  const data = section[`${key}-data`];
  if (typeof data === 'string' && data !== '') return Buffer.from(data, 'base64').toString('utf8');
  const file = section[key];
  if (typeof file === 'string' && file !== '') return readText(fileIn(base, file), `${key} of ${where}`);
  return undefined;
}

function fileIn(base: string, file: string): string {
  return isAbsolute(file) ? file : resolve(base, file);
}

function readText(path: string, what: string): string {
  try {
    return readFileSync(path, 'utf8');
  } catch (error) {
    throw new KubeConfigError(`cannot read ${what} (${path}): ${(error as NodeJS.ErrnoException).code ?? (error as Error).message}`);
  }
}

function optionalText(path: string): string | undefined {
  try {
    return readFileSync(path, 'utf8').trim() || undefined;
  } catch {
    return undefined;
  }
}

function isRecord(value: unknown): value is Record<string, unknown> {
  return typeof value === 'object' && value !== null && !Array.isArray(value);
}
