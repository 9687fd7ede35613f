import { mkdirSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { buildServerConfig, SERVE_FLAGS } from '../src/config.js';
import { parseFlags, UsageError } from '../src/flags.js';
import { KubeApiError, KubeClient, type KubeClientOptions } from '../src/kubernetes/client.js';
import { inClusterConnection, KubeConfigError, loadKubeconfig, loadKubeConnection } from '../src/kubernetes/connection.js';
import { TokenBucket } from '../src/kubernetes/rate-limiter.js';
import type { KubeList, Namespace } from '../src/kubernetes/types.js';
import { KubeApiSimulator, type KubeconfigAuth } from './support/kube-api.js';
import { removeDir, tempDir } from './support/server.js';

let dir: string;
let sim: KubeApiSimulator;
const clients: KubeClient[] = [];

beforeAll(async () => {
  dir = tempDir();
  sim = await KubeApiSimulator.start(join(dir, 'api'));
  sim.addNamespace('default');
});

afterAll(async () => {
  clients.forEach((c) => c.close());
  await sim?.close();
  removeDir(dir);
});

function client(options: Partial<KubeClientOptions> & { auth?: KubeconfigAuth } = {}): KubeClient {
  const c = new KubeClient({ connection: loadKubeconfig(sim.kubeconfig(options.auth ?? 'token')), backoffMs: 20, ...options });
  clients.push(c);
  return c;
}

const namespaces = async (c: KubeClient) => (await c.get<KubeList<Namespace>>('/api/v1/namespaces')).items.map((n) => n.metadata.name);
const failure = (p: Promise<unknown>) =>
  p.then(
    () => undefined,
    (e: unknown) => e as KubeApiError,
  );

describe('connection: kubeconfig and in-cluster config', () => {
  it.each<KubeconfigAuth>(['token', 'token-file', 'client-cert'])(
    'a kubeconfig with %s credentials reaches the API over verified TLS',
    async (auth) => {
      const c = client({ auth });
      expect(await namespaces(c)).toEqual(['default']);
      expect(sim.requests.at(-1)!.auth).toBe(auth === 'client-cert' ? 'client-cert' : 'token');
      expect(c.namespace).toBe('meshca'); // the current context's namespace
    },
  );

  it('reads JSON kubeconfigs and certificate-authority files relative to the kubeconfig', async () => {
    const sub = join(dir, 'json');
    mkdirSync(sub, { recursive: true });
    writeFileSync(join(sub, 'ca.pem'), sim.caPem);
    const config = {
      'current-context': 'c',
      contexts: [{ name: 'c', context: { cluster: 'k', user: 'u' } }],
      clusters: [{ name: 'k', cluster: { server: sim.url, 'certificate-authority': 'ca.pem' } }],
      users: [{ name: 'u', user: { token: sim.apiToken } }],
    };
    writeFileSync(join(sub, 'config.json'), JSON.stringify(config));
    const c = new KubeClient({ connection: loadKubeconfig(join(sub, 'config.json')) });
    clients.push(c);
    expect(await namespaces(c)).toEqual(['default']);
  });

  it('in-cluster: KUBERNETES_SERVICE_HOST/PORT with the service-account token, CA and namespace files', async () => {
    const sa = join(dir, 'serviceaccount');
    mkdirSync(sa, { recursive: true });
    writeFileSync(join(sa, 'token'), sim.apiToken);
    writeFileSync(join(sa, 'ca.crt'), sim.caPem);
    writeFileSync(join(sa, 'namespace'), 'meshca\n');
    const env = { KUBERNETES_SERVICE_HOST: '127.0.0.1', KUBERNETES_SERVICE_PORT: new URL(sim.url).port };
    const connection = loadKubeConnection({ env, serviceAccountDir: sa });
    expect(connection).toMatchObject({ namespace: 'meshca', tokenFile: join(sa, 'token'), description: 'in-cluster service account' });
    const c = new KubeClient({ connection });
    clients.push(c);
    expect(await namespaces(c)).toEqual(['default']);
    expect(inClusterConnection({ KUBERNETES_SERVICE_HOST: 'fd00::1', KUBERNETES_SERVICE_PORT: '443' }, sa).server.host).toBe('[fd00::1]');
  });

  const write = (name: string, doc: unknown) => {
    const path = join(dir, name);
    writeFileSync(path, typeof doc === 'string' ? doc : JSON.stringify(doc));
    return path;
  };
  const valid = () => ({
    'current-context': 'c',
    contexts: [{ name: 'c', context: { cluster: 'k', user: 'u' } }],
    clusters: [{ name: 'k', cluster: { server: 'https://127.0.0.1:6443' } }],
    users: [{ name: 'u', user: { token: 't' } }],
  });

  it.each([
    { why: 'no file', path: () => join(dir, 'missing.yaml'), error: /cannot read the kubeconfig/ },
    { why: 'not YAML', path: () => write('bad.yaml', 'a: [b'), error: /not valid YAML/ },
    { why: 'no current-context', path: () => write('nocontext.yaml', { ...valid(), 'current-context': '' }), error: /no current-context/ },
    {
      why: 'an undefined context',
      path: () => write('undefined.yaml', { ...valid(), 'current-context': 'other' }),
      error: /context "other" is not defined/,
    },
    {
      why: 'a plain-HTTP server',
      path: () => write('http.yaml', { ...valid(), clusters: [{ name: 'k', cluster: { server: 'http://127.0.0.1:8080' } }] }),
      error: /must be https/,
    },
    {
      why: 'an exec credential plugin',
      path: () => write('exec.yaml', { ...valid(), users: [{ name: 'u', user: { exec: { command: 'aws' } } }] }),
      error: /"exec" are not supported/,
    },
  ])('rejects a kubeconfig with $why', ({ path, error }) => {
    expect(() => loadKubeconfig(path())).toThrow(KubeConfigError);
    expect(() => loadKubeconfig(path())).toThrow(error);
  });

  it('without --kubeconfig outside a pod, says what to do', () => {
    expect(() => loadKubeConnection({ env: {} })).toThrow(/pass --kubeconfig PATH, or run meshca in a pod/);
  });
});

describe('client: retries, timeouts and errors', () => {
  it('retries 5xx answers with backoff and succeeds when the API recovers', async () => {
    const before = sim.requests.length;
    sim.fault = { status: 503, times: 2 };
    expect(await namespaces(client())).toEqual(['default']);
    expect(sim.requests.length - before).toBe(3);
  });

  it('honours 429 Retry-After', async () => {
    sim.fault = { status: 429, times: 1, retryAfterSeconds: 1 };
    const started = Date.now();
    expect(await namespaces(client())).toEqual(['default']);
    expect(Date.now() - started).toBeGreaterThanOrEqual(950);
  });

  it('gives up after maxAttempts with a retryable error', async () => {
    const before = sim.requests.length;
    sim.fault = { status: 500 };
    try {
      const error = await failure(namespaces(client({ maxAttempts: 2 })));
      expect(error).toBeInstanceOf(KubeApiError);
      expect(error).toMatchObject({ status: 500, retryable: true });
      expect(sim.requests.length - before).toBe(2);
    } finally {
      sim.fault = undefined;
    }
  });

  it('does not retry answers (404, 409) and reports their metav1.Status reason', async () => {
    const c = client();
    const before = sim.requests.length;
    expect(await failure(c.get('/api/v1/namespaces/default/configmaps/nope'))).toMatchObject({
      status: 404,
      reason: 'NotFound',
      retryable: false,
    });
    await c.post('/api/v1/namespaces/default/configmaps', { metadata: { name: 'cm' }, data: {} });
    expect(await failure(c.post('/api/v1/namespaces/default/configmaps', { metadata: { name: 'cm' }, data: {} }))).toMatchObject({
      status: 409,
      reason: 'AlreadyExists',
    });
    const stale = { metadata: { name: 'cm', resourceVersion: '1' }, data: { a: 'b' } };
    expect(await failure(c.put('/api/v1/namespaces/default/configmaps/cm', stale))).toMatchObject({
      status: 409,
      reason: 'Conflict',
      retryable: false,
    });
    expect(sim.requests.length - before).toBe(4);
  });

  it('times out a slow attempt and retries it', async () => {
    const before = sim.requests.length;
    sim.latencyMs = 400;
    try {
      const error = await failure(namespaces(client({ timeoutMs: 100, maxAttempts: 2 })));
      expect(error).toMatchObject({ reason: 'Timeout', retryable: true, status: 0 });
    } finally {
      sim.latencyMs = 0;
    }
    await new Promise((r) => setTimeout(r, 450));
    expect(sim.requests.length - before).toBe(2);
  });

  it('refuses an API server whose certificate does not chain to the configured CA', async () => {
    const other = await KubeApiSimulator.start(join(dir, 'other'), 'other');
    try {
      const connection = { ...loadKubeconfig(other.kubeconfig('token')), ca: sim.caPem };
      const c = new KubeClient({ connection, maxAttempts: 1 });
      clients.push(c);
      const error = await failure(namespaces(c));
      expect(error).toMatchObject({ status: 0, reason: 'Unavailable', retryable: true });
      expect(other.requests).toHaveLength(0);
    } finally {
      await other.close();
    }
  });

  it('rejects its own credentials being refused (401) without retrying', async () => {
    const c = new KubeClient({ connection: { ...loadKubeconfig(sim.kubeconfig('token')), token: 'wrong' } });
    clients.push(c);
    expect(await failure(namespaces(c))).toMatchObject({ status: 401, retryable: false });
  });
});

describe('client-side rate limit (--kube-qps, --kube-burst)', () => {
  it('a token bucket allows the burst at once, then qps, and refuses waits beyond the budget', () => {
    let now = 0;
    const bucket = new TokenBucket(10, 3, () => now);
    expect([bucket.reserve(1000), bucket.reserve(1000), bucket.reserve(1000)]).toEqual([0, 0, 0]);
    expect(bucket.reserve(1000)).toBeCloseTo(100);
    expect(bucket.reserve(1000)).toBeCloseTo(200);
    expect(bucket.reserve(150)).toBeUndefined(); // would wait 300 ms: refused, nothing reserved
    now = 1000; // refilled to the burst, no more
    expect([bucket.reserve(0), bucket.reserve(0), bucket.reserve(0), bucket.reserve(0)]).toEqual([0, 0, 0, undefined]);
  });

  it('paces real requests', async () => {
    const c = client({ qps: 20, burst: 2 });
    const started = Date.now();
    await Promise.all(Array.from({ length: 6 }, () => namespaces(c)));
    expect(Date.now() - started).toBeGreaterThanOrEqual(190); // 4 beyond the burst at 20/s
  });

  it('fails fast (retryable) when the queue is longer than the request timeout', async () => {
    const c = client({ qps: 1, burst: 1, timeoutMs: 200 });
    const results = await Promise.all([namespaces(c), failure(namespaces(c))]);
    expect(results[1]).toMatchObject({ reason: 'RateLimited', retryable: true });
  });
});

describe('serve flags', () => {
  const config = (args: string[], env: NodeJS.ProcessEnv = {}) =>
    buildServerConfig(parseFlags(SERVE_FLAGS, args, env, 'serve').values).kubernetes;

  it('parses the Kubernetes flags and their MESHCA_ environment forms', () => {
    expect(
      config([
        '--token-review',
        '--cluster',
        'west=/k/west',
        '--cluster',
        'east=/k/east',
        '--trusted-node-accounts',
        'istio-system/ztunnel,kube-system:node-agent',
        '--istiod-revision',
        'canary',
      ]),
    ).toMatchObject({
      tokenReview: true,
      clusters: [
        { name: 'west', kubeconfig: '/k/west' },
        { name: 'east', kubeconfig: '/k/east' },
      ],
      trustedNodeAccounts: [
        { namespace: 'istio-system', serviceAccount: 'ztunnel' },
        { namespace: 'kube-system', serviceAccount: 'node-agent' },
      ],
      istiodRevisions: ['canary'],
      leaseDurationMs: 15_000,
      qps: 50,
      burst: 100,
    });
    expect(
      config(['--dev'], {
        MESHCA_CLUSTER: 'a=/x,b=/y',
        MESHCA_DISTRIBUTE_ROOT: 'true',
        MESHCA_NAMESPACE_SELECTOR: 'istio-injection=enabled',
      }),
    ).toMatchObject({
      clusters: [{ name: 'a' }, { name: 'b' }],
      distributeRoot: true,
      namespaceSelector: 'istio-injection=enabled',
    });
  });

  it.each([
    { why: 'a cluster without a kubeconfig', args: ['--token-review', '--cluster', 'west'], error: /NAME=KUBECONFIG/ },
    { why: 'the local cluster as --cluster', args: ['--token-review', '--cluster', 'Kubernetes=/k'], error: /local cluster/ },
    { why: 'a cluster given twice', args: ['--token-review', '--cluster', 'a=/x', '--cluster', 'a=/y'], error: /given twice/ },
    {
      why: 'a node account without a namespace',
      args: ['--token-review', '--trusted-node-accounts', 'ztunnel'],
      error: /NAMESPACE\/SERVICE_ACCOUNT/,
    },
    { why: 'a lease shorter than a second', args: ['--token-review', '--lease-duration', '500ms'], error: /at least 1s/ },
    { why: 'no token validation at all', args: [], error: /--token-review/ },
  ])('rejects $why', ({ args, error }) => {
    expect(() => config(args)).toThrow(UsageError);
    expect(() => config(args)).toThrow(error);
  });
});
