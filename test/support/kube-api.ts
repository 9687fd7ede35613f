/**
 * A small Kubernetes API server for tests: real HTTPS (a CA made with openssl), a real bearer-token
 * (or client-certificate) check, and the real paths and JSON shapes of the endpoints meshca uses —
 * TokenReview, namespaces (list + watch), pods (get, list with field selectors), configmaps, secrets
 * and leases (get/create/update with resourceVersion conflicts), and cert-manager.io/v1
 * CertificateRequests (create/get; a test plays cert-manager through onCertificateRequest and
 * setStatus). It is the only simulated part of the Kubernetes tests; meshca talks to it exactly as to an API server.
 */

import { randomBytes, randomUUID, X509Certificate } from 'node:crypto';
import { mkdirSync, writeFileSync } from 'node:fs';
import type { IncomingMessage, ServerResponse } from 'node:http';
import { join } from 'node:path';
import type { TLSSocket } from 'node:tls';
import { stringify } from 'yaml';
import { LoopbackHttpsServer } from './loopback-https.js';
import { openssl } from './openssl.js';

export type Obj = {
  metadata: Record<string, unknown> & { name: string; namespace?: string; resourceVersion?: string; labels?: Record<string, string> };
  [key: string]: unknown;
};

export interface ServiceAccountTokenSpec {
  readonly namespace: string;
  readonly serviceAccount: string;
  /** Audiences the token is valid for (default ['istio-ca']). */
  readonly audiences?: readonly string[];
  readonly podName?: string;
  readonly podUid?: string;
  readonly nodeName?: string;
  /** Seconds from now (default 3600); negative = already expired. */
  readonly ttlSeconds?: number;
  /** The token's `iss` claim (default this simulator's issuer). */
  readonly issuer?: string;
}

interface TokenEntry {
  readonly user: { username: string; uid: string; groups: string[]; extra?: Record<string, string[]> };
  readonly audiences: readonly string[];
  readonly expiresAtMs: number;
}

export interface RecordedRequest {
  readonly method: string;
  readonly path: string;
  readonly query: URLSearchParams;
  /** Who authenticated: 'token', 'client-cert' or 'anonymous'. */
  readonly auth: string;
  readonly body: string;
  /** Date.now() when it arrived. */
  readonly at: number;
}

export type KubeconfigAuth = 'token' | 'token-file' | 'client-cert';

const API_SERVER_AUDIENCE = 'https://kubernetes.default.svc.cluster.local';

export class KubeApiSimulator {
  readonly requests: RecordedRequest[] = [];
  /** Respond to matching requests with this HTTP status (a metav1.Status body) instead of serving them; `times` then stop. */
  fault: { readonly status: number; readonly match?: RegExp; times?: number; readonly retryAfterSeconds?: number } | undefined;
  /** Delay every response this long (ms). */
  latencyMs = 0;
  /** Plays cert-manager: called with each created CertificateRequest (approve, sign, deny or ignore it with setStatus). */
  onCertificateRequest: ((request: Obj) => void) | undefined;
  /** false: answer like an API server without audience support (authenticated, status.audiences empty). */
  audienceAware = true;
  /** Clients authenticating this way ('token', 'client-cert') get 401: a replica cut off from the API. */
  readonly refuse = new Set<string>();
  readonly issuer: string;

  readonly #objects = new Map<string, Obj>(); // `${resource}/${namespace}/${name}`
  readonly #tokens = new Map<string, TokenEntry>();
  readonly #watchers = new Set<{ res: ServerResponse; selector: string | null; timer: NodeJS.Timeout }>();
  readonly #namespaceEvents: { type: string; object: Obj; rv: number }[] = [];
  #rv = 100;
  readonly #http: LoopbackHttpsServer;

  private constructor(
    readonly dir: string,
    readonly caPem: string,
    private readonly tls: { key: string; cert: string },
    readonly apiToken: string,
    readonly name: string,
  ) {
    this.issuer = `https://${name}.kube-sim.example`;
    this.#http = new LoopbackHttpsServer(
      { key: this.tls.key, cert: this.tls.cert, ca: this.caPem, requestCert: true, rejectUnauthorized: false },
      (req, res) => {
        void this.#handle(req, res).catch((error: unknown) => status(res, 500, 'InternalError', String(error)));
      },
    );
  }

  /** Starts a simulator with its own CA in `dir`. */
  static async start(dir: string, name = 'cluster'): Promise<KubeApiSimulator> {
    mkdirSync(dir, { recursive: true });
    const f = (n: string) => join(dir, n);
    openssl([
      'req',
      '-x509',
      '-newkey',
      'ec',
      '-pkeyopt',
      'ec_paramgen_curve:P-256',
      '-nodes',
      '-keyout',
      f('ca.key'),
      '-out',
      f('ca.crt'),
      '-days',
      '2',
      '-subj',
      `/CN=${name}-ca`,
    ]);
    for (const [leaf, subject, ext] of [
      ['server', '/CN=kube-apiserver', 'subjectAltName=IP:127.0.0.1,DNS:localhost\nextendedKeyUsage=serverAuth'],
      ['client', '/CN=meshca', 'extendedKeyUsage=clientAuth'],
    ] as const) {
      openssl([
        'req',
        '-newkey',
        'ec',
        '-pkeyopt',
        'ec_paramgen_curve:P-256',
        '-nodes',
        '-keyout',
        f(`${leaf}.key`),
        '-out',
        f(`${leaf}.csr`),
        '-subj',
        subject,
      ]);
      writeFileSync(f(`${leaf}.ext`), ext + '\n');
      openssl([
        'x509',
        '-req',
        '-in',
        f(`${leaf}.csr`),
        '-CA',
        f('ca.crt'),
        '-CAkey',
        f('ca.key'),
        '-CAcreateserial',
        '-days',
        '2',
        '-out',
        f(`${leaf}.crt`),
        '-extfile',
        f(`${leaf}.ext`),
      ]);
    }
    const read = (n: string) => openssl(['x509', '-in', f(n)]);
    const key = openssl(['pkey', '-in', f('server.key')]);
    const sim = new KubeApiSimulator(
      dir,
      read('ca.crt'),
      { key, cert: read('server.crt') },
      `sim-${randomBytes(16).toString('hex')}`,
      name,
    );
    await sim.#http.listen(0);
    return sim;
  }

  get url(): string {
    return `https://127.0.0.1:${this.#http.port}`;
  }

  /** Writes a kubeconfig for this API server and returns its path. */
  kubeconfig(auth: KubeconfigAuth = 'token', file = `kubeconfig-${auth}.yaml`): string {
    const path = join(this.dir, file);
    const user: Record<string, string> =
      auth === 'token'
        ? { token: this.apiToken }
        : auth === 'token-file'
          ? { tokenFile: 'api-token' } // relative to the kubeconfig
          : {
              'client-certificate': join(this.dir, 'client.crt'),
              'client-key-data': Buffer.from(openssl(['pkey', '-in', join(this.dir, 'client.key')])).toString('base64'),
            };
    if (auth === 'token-file') writeFileSync(join(this.dir, 'api-token'), this.apiToken + '\n', { mode: 0o600 });
    const doc = {
      apiVersion: 'v1',
      kind: 'Config',
      'current-context': `${this.name}-ctx`,
      clusters: [
        { name: 'decoy', cluster: { server: 'https://192.0.2.1:6443' } },
        { name: this.name, cluster: { server: this.url, 'certificate-authority-data': Buffer.from(this.caPem).toString('base64') } },
      ],
      contexts: [{ name: `${this.name}-ctx`, context: { cluster: this.name, user: `${this.name}-user`, namespace: 'meshca' } }],
      users: [{ name: `${this.name}-user`, user }],
    };
    writeFileSync(path, stringify(doc), { mode: 0o600 });
    return path;
  }

  // ---- tokens -------------------------------------------------------------------------------

  /** A projected-service-account-like token (JWS-shaped; only this API server can validate it). */
  serviceAccountToken(spec: ServiceAccountTokenSpec): string {
    const exp = Math.floor(Date.now() / 1000) + (spec.ttlSeconds ?? 3600);
    const audiences = [...(spec.audiences ?? ['istio-ca'])];
    const token = this.#jws({
      iss: spec.issuer ?? this.issuer,
      sub: `system:serviceaccount:${spec.namespace}:${spec.serviceAccount}`,
      aud: audiences,
      exp,
    });
    const extra: Record<string, string[]> = {};
    if (spec.podName) extra['authentication.kubernetes.io/pod-name'] = [spec.podName];
    if (spec.podUid) extra['authentication.kubernetes.io/pod-uid'] = [spec.podUid];
    if (spec.nodeName) extra['authentication.kubernetes.io/node-name'] = [spec.nodeName];
    this.#tokens.set(token, {
      user: {
        username: `system:serviceaccount:${spec.namespace}:${spec.serviceAccount}`,
        uid: randomUUID(),
        groups: ['system:serviceaccounts', `system:serviceaccounts:${spec.namespace}`, 'system:authenticated'],
        extra,
      },
      audiences,
      expiresAtMs: exp * 1000,
    });
    return token;
  }

  /** A token for any user (e.g. a human, not in system:serviceaccounts). */
  userToken(username: string, groups: readonly string[], audiences: readonly string[] = ['istio-ca']): string {
    const token = this.#jws({ iss: this.issuer, sub: username, aud: [...audiences], exp: Math.floor(Date.now() / 1000) + 3600 });
    this.#tokens.set(token, { user: { username, uid: randomUUID(), groups: [...groups] }, audiences, expiresAtMs: Date.now() + 3600_000 });
    return token;
  }

  #jws(payload: object): string {
    const b64 = (o: object) => Buffer.from(JSON.stringify(o)).toString('base64url');
    return `${b64({ alg: 'RS256', kid: 'sim' })}.${b64(payload)}.${randomBytes(32).toString('base64url')}`;
  }

  // ---- objects ------------------------------------------------------------------------------

  addNamespace(name: string, labels: Record<string, string> = {}): void {
    const existing = this.#objects.get(`namespaces//${name}`);
    const object = this.#store('namespaces', '', {
      apiVersion: 'v1',
      kind: 'Namespace',
      metadata: { ...(existing?.metadata ?? {}), name, labels: { 'kubernetes.io/metadata.name': name, ...labels } },
      status: { phase: 'Active' },
    });
    this.#namespaceEvent(existing ? 'MODIFIED' : 'ADDED', object);
  }

  addPod(pod: { namespace: string; name: string; serviceAccount: string; nodeName: string; phase?: string; uid?: string }): string {
    const uid = pod.uid ?? randomUUID();
    this.#store('pods', pod.namespace, {
      apiVersion: 'v1',
      kind: 'Pod',
      metadata: { name: pod.name, namespace: pod.namespace, uid },
      spec: { nodeName: pod.nodeName, serviceAccountName: pod.serviceAccount, containers: [{ name: 'app', image: 'app' }] },
      status: { phase: pod.phase ?? 'Running' },
    });
    return uid;
  }

  deletePod(namespace: string, name: string): void {
    this.#objects.delete(`pods/${namespace}/${name}`);
  }

  /** An object as stored (configmaps, secrets, leases, pods, namespaces). */
  get(resource: string, namespace: string, name: string): Obj | undefined {
    const object = this.#objects.get(`${resource}/${namespace}/${name}`);
    return object === undefined ? undefined : structuredClone(object);
  }

  /** Creates or replaces an object directly (test setup: "someone else wrote this"). */
  put(resource: string, namespace: string, object: Obj): Obj {
    return this.#store(resource, namespace, structuredClone(object));
  }

  /** Writes an object's status as a controller would (e.g. cert-manager on a CertificateRequest). */
  setStatus(resource: string, namespace: string, name: string, status: Record<string, unknown>): void {
    const object = this.get(resource, namespace, name);
    if (!object) throw new Error(`${resource} ${namespace}/${name} does not exist`);
    this.#store(resource, namespace, { ...object, status });
  }

  count(method: string, pathPattern: RegExp): number {
    return this.requests.filter((r) => r.method === method && pathPattern.test(r.path)).length;
  }

  /** The API server goes away: the listener closes and every connection is cut. */
  async stop(): Promise<void> {
    for (const w of this.#watchers) {
      clearTimeout(w.timer);
      w.res.destroy();
    }
    this.#watchers.clear();
    await this.#http.stop();
  }

  /** Comes back on the same port. */
  resume(): Promise<void> {
    return this.#http.resume();
  }

  close(): Promise<void> {
    return this.stop();
  }

  // ---- server -------------------------------------------------------------------------------

  async #handle(req: IncomingMessage, res: ServerResponse): Promise<void> {
    const url = new URL(req.url ?? '/', 'https://sim');
    const auth = this.#authenticate(req);
    const body = await readBody(req);
    this.requests.push({ method: req.method ?? '', path: url.pathname, query: url.searchParams, auth, body, at: Date.now() });
    if (this.latencyMs > 0) await new Promise((r) => setTimeout(r, this.latencyMs));
    const fault = this.fault;
    if (fault && (fault.match === undefined || fault.match.test(url.pathname))) {
      if (fault.times !== undefined && --fault.times <= 0) this.fault = undefined;
      if (fault.retryAfterSeconds !== undefined) res.setHeader('retry-after', String(fault.retryAfterSeconds));
      return status(res, fault.status, fault.status === 429 ? 'TooManyRequests' : 'ServiceUnavailable', 'simulated failure');
    }
    if (auth === 'anonymous' || this.refuse.has(auth)) return status(res, 401, 'Unauthorized', 'Unauthorized');
    const route = ROUTES.find((r) => r.method === req.method && r.pattern.test(url.pathname));
    if (!route) return status(res, 404, 'NotFound', `the server could not find the requested resource (${req.method} ${url.pathname})`);
    const params = route.pattern.exec(url.pathname)!.groups ?? {};
    return route.handle(this, { params, query: url.searchParams, body, res });
  }

  #authenticate(req: IncomingMessage): string {
    const socket = req.socket as TLSSocket;
    if (socket.authorized && socket.getPeerX509Certificate() instanceof X509Certificate) return 'client-cert';
    return req.headers.authorization === `Bearer ${this.apiToken}` ? 'token' : 'anonymous';
  }

  // ---- handlers -----------------------------------------------------------------------------

  tokenReview({ body, res }: Ctx): void {
    const review = JSON.parse(body) as { spec?: { token?: string; audiences?: string[] } };
    const token = review.spec?.token ?? '';
    const wanted = review.spec?.audiences?.length ? review.spec.audiences : [API_SERVER_AUDIENCE];
    const entry = this.#tokens.get(token);
    let statusBody: object;
    if (entry === undefined)
      statusBody = { authenticated: false, error: '[invalid bearer token, square/go-jose: error in cryptographic primitive]' };
    else if (entry.expiresAtMs <= Date.now())
      statusBody = { authenticated: false, error: '[invalid bearer token, service account token has expired]' };
    else if (!this.audienceAware) statusBody = { authenticated: true, user: entry.user };
    else {
      const audiences = wanted.filter((a) => entry.audiences.includes(a));
      statusBody =
        audiences.length === 0
          ? {
              authenticated: false,
              error: `[invalid bearer token, token audiences ${JSON.stringify(entry.audiences)} is invalid for the target audiences ${JSON.stringify(wanted)}]`,
            }
          : { authenticated: true, user: entry.user, audiences };
    }
    json(res, 201, {
      kind: 'TokenReview',
      apiVersion: 'authentication.k8s.io/v1',
      metadata: { creationTimestamp: null },
      spec: review.spec,
      status: statusBody,
    });
  }

  listNamespaces({ query, res }: Ctx): void {
    const selector = query.get('labelSelector');
    if (query.get('watch') === 'true' || query.get('watch') === '1')
      return this.#watchNamespaces(
        selector,
        Number(query.get('resourceVersion') ?? this.#rv),
        Number(query.get('timeoutSeconds') ?? 300),
        res,
      );
    const items = this.#list('namespaces', '').filter((ns) => matchesLabels(ns.metadata.labels ?? {}, selector));
    json(res, 200, { kind: 'NamespaceList', apiVersion: 'v1', metadata: { resourceVersion: String(this.#rv) }, items });
  }

  listPods({ params, query, res }: Ctx): void {
    const selector = query.get('fieldSelector');
    const items = this.#list('pods', params.ns!).filter((pod) => matchesFields(pod, selector));
    json(res, 200, { kind: 'PodList', apiVersion: 'v1', metadata: { resourceVersion: String(this.#rv) }, items });
  }

  getObject({ params, res }: Ctx): void {
    const resource = params.resource!;
    const object = this.#objects.get(`${resource}/${params.ns}/${params.name}`);
    if (!object) return status(res, 404, 'NotFound', `${resource} "${params.name}" not found`);
    json(res, 200, object);
  }

  createObject({ params, body, res }: Ctx): void {
    const resource = params.resource!;
    const object = JSON.parse(body) as Obj;
    const name = object.metadata?.name;
    if (!name) return status(res, 422, 'Invalid', 'metadata.name: Required value');
    if (!this.#objects.has(`namespaces//${params.ns}`)) return status(res, 404, 'NotFound', `namespaces "${params.ns}" not found`);
    if (this.#objects.has(`${resource}/${params.ns}/${name}`))
      return status(res, 409, 'AlreadyExists', `${resource} "${name}" already exists`);
    if (object.metadata.resourceVersion) return status(res, 422, 'Invalid', 'metadata.resourceVersion: must be empty on create');
    const stored = this.#store(resource, params.ns!, object);
    json(res, 201, stored);
    if (resource === 'certificaterequests') this.onCertificateRequest?.(stored);
  }

  updateObject({ params, body, res }: Ctx): void {
    const resource = params.resource!;
    const object = JSON.parse(body) as Obj;
    const current = this.#objects.get(`${resource}/${params.ns}/${params.name}`);
    if (!current) return status(res, 404, 'NotFound', `${resource} "${params.name}" not found`);
    if (object.metadata?.name !== params.name)
      return status(res, 400, 'BadRequest', 'the name of the object does not match the name on the URL');
    if (object.metadata.resourceVersion !== undefined && object.metadata.resourceVersion !== current.metadata.resourceVersion) {
      return status(
        res,
        409,
        'Conflict',
        `Operation cannot be fulfilled on ${resource} "${params.name}": the object has been modified; please apply your changes to the latest version and try again`,
      );
    }
    object.metadata = { ...object.metadata, uid: current.metadata.uid, creationTimestamp: current.metadata.creationTimestamp };
    json(res, 200, this.#store(resource, params.ns!, object));
  }

  // ---- internals ----------------------------------------------------------------------------

  #store(resource: string, namespace: string, object: Obj): Obj {
    const key = `${resource}/${namespace}/${object.metadata.name}`;
    const previous = this.#objects.get(key);
    object.metadata = {
      ...object.metadata,
      ...(namespace ? { namespace } : {}),
      uid: (object.metadata.uid as string | undefined) ?? (previous?.metadata.uid as string | undefined) ?? randomUUID(),
      creationTimestamp: (previous?.metadata.creationTimestamp as string | undefined) ?? new Date().toISOString().replace(/\.\d+Z$/, 'Z'),
      resourceVersion: String(++this.#rv),
    };
    this.#objects.set(key, object);
    return structuredClone(object);
  }

  #list(resource: string, namespace: string): Obj[] {
    const prefix = `${resource}/${namespace}/`;
    return [...this.#objects.entries()].filter(([k]) => k.startsWith(prefix)).map(([, v]) => structuredClone(v));
  }

  #namespaceEvent(type: string, object: Obj): void {
    const event = { type, object: structuredClone(object), rv: Number(object.metadata.resourceVersion) };
    this.#namespaceEvents.push(event);
    for (const w of this.#watchers)
      if (matchesLabels(object.metadata.labels ?? {}, w.selector)) w.res.write(JSON.stringify({ type, object }) + '\n');
  }

  #watchNamespaces(selector: string | null, fromRv: number, timeoutSeconds: number, res: ServerResponse): void {
    res.writeHead(200, { 'content-type': 'application/json', 'transfer-encoding': 'chunked' });
    for (const e of this.#namespaceEvents)
      if (e.rv > fromRv && matchesLabels(e.object.metadata.labels ?? {}, selector))
        res.write(JSON.stringify({ type: e.type, object: e.object }) + '\n');
    const watcher = { res, selector, timer: setTimeout(() => res.end(), timeoutSeconds * 1000) };
    this.#watchers.add(watcher);
    res.on('close', () => {
      clearTimeout(watcher.timer);
      this.#watchers.delete(watcher);
    });
  }
}

interface Ctx {
  readonly params: Record<string, string | undefined>;
  readonly query: URLSearchParams;
  readonly body: string;
  readonly res: ServerResponse;
}

const NS = '(?<ns>[a-z0-9-]+)';
const NAME = '(?<name>[a-z0-9.-]+)';
const OBJECTS = `(?:/api/v1|/apis/coordination\\.k8s\\.io/v1|/apis/cert-manager\\.io/v1)/namespaces/${NS}/(?<resource>configmaps|secrets|leases|certificaterequests)`;

const ROUTES: { method: string; pattern: RegExp; handle: (sim: KubeApiSimulator, ctx: Ctx) => void }[] = [
  { method: 'POST', pattern: /^\/apis\/authentication\.k8s\.io\/v1\/tokenreviews$/, handle: (s, c) => s.tokenReview(c) },
  { method: 'GET', pattern: /^\/api\/v1\/namespaces$/, handle: (s, c) => s.listNamespaces(c) },
  { method: 'GET', pattern: new RegExp(`^/api/v1/namespaces/${NS}/pods$`), handle: (s, c) => s.listPods(c) },
  { method: 'GET', pattern: new RegExp(`^/api/v1/namespaces/${NS}/(?<resource>pods)/${NAME}$`), handle: (s, c) => s.getObject(c) },
  { method: 'GET', pattern: new RegExp(`^${OBJECTS}/${NAME}$`), handle: (s, c) => s.getObject(c) },
  { method: 'POST', pattern: new RegExp(`^${OBJECTS}$`), handle: (s, c) => s.createObject(c) },
  { method: 'PUT', pattern: new RegExp(`^${OBJECTS}/${NAME}$`), handle: (s, c) => s.updateObject(c) },
];

function json(res: ServerResponse, code: number, body: unknown): void {
  res.writeHead(code, { 'content-type': 'application/json' });
  res.end(JSON.stringify(body));
}

function status(res: ServerResponse, code: number, reason: string, message: string): void {
  if (res.headersSent) return void res.destroy();
  json(res, code, { kind: 'Status', apiVersion: 'v1', metadata: {}, status: 'Failure', message, reason, code });
}

function readBody(req: IncomingMessage): Promise<string> {
  return new Promise((resolve, reject) => {
    let data = '';
    req.setEncoding('utf8');
    req.on('data', (chunk: string) => (data += chunk));
    req.on('end', () => resolve(data));
    req.on('error', reject);
  });
}

/** Field selectors as the API server applies them to pods: `a=b`, `a==b`, `a!=b`, comma-joined. */
function matchesFields(object: Obj, selector: string | null): boolean {
  if (!selector) return true;
  return selector.split(',').every((term) => {
    const m = /^([\w.]+)(==|=|!=)(.*)$/.exec(term.trim());
    if (!m) throw new Error(`bad field selector ${term}`);
    const actual = m[1]!.split('.').reduce<unknown>((v, k) => (v as Record<string, unknown> | undefined)?.[k], object);
    const equal = String(actual ?? '') === m[3];
    return m[2] === '!=' ? !equal : equal;
  });
}

/** Label selectors: `k=v`, `k==v`, `k!=v`, `k`, `!k`, `k in (a,b)`, `k notin (a,b)`. */
export function matchesLabels(labels: Record<string, string>, selector: string | null): boolean {
  if (!selector) return true;
  const re = /\s*(!?)([\w./-]+)\s*(?:(==|=|!=)\s*([\w.-]*)|\s+(in|notin)\s+\(([^)]*)\))?\s*(?:,|$)/y;
  let pos = 0;
  while (pos < selector.length) {
    re.lastIndex = pos;
    const m = re.exec(selector);
    if (!m || re.lastIndex === pos) throw new Error(`bad label selector ${selector}`);
    pos = re.lastIndex;
    const [, not, key, op, value, setOp, set] = m;
    const has = Object.hasOwn(labels, key!);
    const actual = labels[key!];
    let ok: boolean;
    if (op) ok = op === '!=' ? actual !== value : actual === value;
    else if (setOp) {
      const values = set!.split(',').map((v) => v.trim());
      ok = setOp === 'in' ? has && values.includes(actual!) : !has || !values.includes(actual!);
    } else ok = not ? !has : has;
    if (!ok) return false;
  }
  return true;
}
