import { readdirSync, readFileSync } from 'node:fs';
import { join } from 'node:path';
import { parseAllDocuments } from 'yaml';
import { describe, expect, it } from 'vitest';
import { buildServerConfig, SERVE_FLAGS } from '../src/config.js';
import { parseFlags } from '../src/flags.js';
import { LEADER_LEASE } from '../src/kubernetes/integration.js';
import { ISTIOD_SECRET } from '../src/kubernetes/istiod-cert.js';
import { ROOT_CONFIGMAP } from '../src/kubernetes/root-distributor.js';

/** The deploy/ manifests, parsed and cross-checked the way a reviewer (or the API server) would. */
const ROOT = join(import.meta.dirname, '..', 'deploy');

// biome-ignore lint/suspicious/noExplicitAny: parsed YAML, checked by the assertions
type Doc = Record<string, any>;

function load(dir: string): Map<string, Doc[]> {
  const files = new Map<string, Doc[]>();
  for (const file of readdirSync(join(ROOT, dir)).filter((f) => f.endsWith('.yaml'))) {
    const docs = parseAllDocuments(readFileSync(join(ROOT, dir, file), 'utf8'));
    for (const doc of docs) expect(doc.errors, `${dir}/${file}`).toEqual([]);
    files.set(
      file,
      docs.map((d) => d.toJS() as Doc).filter((d) => d !== null),
    );
  }
  return files;
}

const k8s = load('kubernetes');
const objects = [...k8s.entries()].filter(([f]) => f !== 'kustomization.yaml').flatMap(([, docs]) => docs);
const find = (kind: string, name: string, namespace?: string) =>
  objects.find((o) => o.kind === kind && o.metadata.name === name && (namespace === undefined || o.metadata.namespace === namespace));
const all = (kind: string) => objects.filter((o) => o.kind === kind);
const deployment = find('Deployment', 'meshca', 'meshca')!;
const pod = deployment.spec.template;
const container = pod.spec.containers.find((c: Doc) => c.name === 'meshca');
const subset = (small: Record<string, string>, big: Record<string, string>) => Object.entries(small).every(([k, v]) => big[k] === v);
const NAMESPACED = new Set([
  'ServiceAccount',
  'Role',
  'RoleBinding',
  'Deployment',
  'Service',
  'PodDisruptionBudget',
  'PersistentVolumeClaim',
]);
/** Namespaces the manifests use but do not create (Istio's). */
const EXTERNAL_NAMESPACES = ['istio-system'];

describe('deploy/kubernetes', () => {
  it('every document is a well-formed object, and kustomization.yaml lists exactly these files', () => {
    for (const o of objects) {
      expect(o.apiVersion, JSON.stringify(o.metadata)).toMatch(/^([a-z0-9.]+\/)?v1(beta1)?$/);
      expect(o.metadata.name).toMatch(/^[a-z0-9]([-a-z0-9.]*[a-z0-9])?$/);
      if (NAMESPACED.has(o.kind)) expect(o.metadata.namespace, `${o.kind}/${o.metadata.name}`).toBeTruthy();
    }
    const kustomization = k8s.get('kustomization.yaml')![0]!;
    expect([...kustomization.resources].sort()).toEqual([...k8s.keys()].filter((f) => f !== 'kustomization.yaml').sort());
  });

  it("every namespace used is created here (or is Istio's)", () => {
    const created = all('Namespace').map((n) => n.metadata.name);
    for (const o of objects.filter((x) => x.metadata.namespace))
      expect([...created, ...EXTERNAL_NAMESPACES]).toContain(o.metadata.namespace);
  });

  it('service accounts referenced by the Deployment and the bindings exist', () => {
    expect(find('ServiceAccount', pod.spec.serviceAccountName, 'meshca')).toBeDefined();
    for (const binding of [...all('ClusterRoleBinding'), ...all('RoleBinding')]) {
      for (const s of binding.subjects) {
        expect(s.kind).toBe('ServiceAccount');
        expect(find('ServiceAccount', s.name, s.namespace), `${binding.metadata.name} → ${s.namespace}/${s.name}`).toBeDefined();
      }
    }
  });

  it('ClusterRoleBindings point at ClusterRoles and RoleBindings at Roles in their namespace', () => {
    for (const b of all('ClusterRoleBinding')) {
      expect(b.roleRef).toMatchObject({ apiGroup: 'rbac.authorization.k8s.io', kind: 'ClusterRole' });
      expect(find('ClusterRole', b.roleRef.name), b.roleRef.name).toBeDefined();
    }
    for (const b of all('RoleBinding')) {
      expect(b.roleRef).toMatchObject({ apiGroup: 'rbac.authorization.k8s.io', kind: 'Role' });
      expect(find('Role', b.roleRef.name, b.metadata.namespace), `${b.metadata.namespace}/${b.roleRef.name}`).toBeDefined();
    }
  });

  it('grants exactly the verbs meshca uses, on the names it uses', () => {
    const grants = (rules: Doc[]) =>
      rules
        .flatMap((r) =>
          r.apiGroups.flatMap((g: string) =>
            r.resources.flatMap((res: string) =>
              r.verbs.map((v: string) => `${g || 'core'}/${res}:${v}${r.resourceNames ? `@${r.resourceNames.join(',')}` : ''}`),
            ),
          ),
        )
        .sort();
    expect(grants(find('ClusterRole', 'meshca')!.rules)).toEqual(
      [
        'authentication.k8s.io/tokenreviews:create',
        'core/pods:get',
        'core/pods:list',
        'core/namespaces:get',
        'core/namespaces:list',
        'core/namespaces:watch',
        'core/configmaps:create',
        `core/configmaps:get@${ROOT_CONFIGMAP}`,
        `core/configmaps:update@${ROOT_CONFIGMAP}`,
      ].sort(),
    );
    expect(grants(find('Role', 'meshca-leader-election', 'meshca')!.rules)).toEqual(
      [
        'coordination.k8s.io/leases:create',
        `coordination.k8s.io/leases:get@${LEADER_LEASE}`,
        `coordination.k8s.io/leases:update@${LEADER_LEASE}`,
      ].sort(),
    );
    expect(grants(find('Role', 'meshca-istiod-tls', 'istio-system')!.rules)).toEqual(
      ['core/secrets:create', `core/secrets:get@${ISTIOD_SECRET}`, `core/secrets:update@${ISTIOD_SECRET}`].sort(),
    );
  });

  it('the Deployment selects its own pods, and the Service and PodDisruptionBudget select them too', () => {
    const labels = pod.metadata.labels;
    expect(subset(deployment.spec.selector.matchLabels, labels)).toBe(true);
    expect(subset(find('Service', 'meshca', 'meshca')!.spec.selector, labels)).toBe(true);
    expect(subset(find('PodDisruptionBudget', 'meshca', 'meshca')!.spec.selector.matchLabels, labels)).toBe(true);
  });

  it('the Service exposes gRPC 15012 and admin 8443 on ports the container declares', () => {
    const service = find('Service', 'meshca', 'meshca')!;
    expect(service.spec.ports.map((p: Doc) => p.port).sort()).toEqual([15012, 8443].sort());
    const declared = new Map(container.ports.map((p: Doc) => [p.name, p.containerPort]));
    for (const p of service.spec.ports) expect(declared.get(p.targetPort), p.name).toBe(p.port);
  });

  it('its arguments are a valid meshca configuration, listening where the ports and probes say', () => {
    expect(container.args[0]).toBe('serve');
    const config = buildServerConfig(parseFlags(SERVE_FLAGS, container.args.slice(1), { MESHCA_KEK: 'x' }, 'serve').values);
    const declared = new Map(container.ports.map((p: Doc) => [p.name, p.containerPort]));
    expect(declared.get('grpc-ca')).toBe(config.grpc.listen.port);
    expect(declared.get('https-admin')).toBe(config.admin.listen.port);
    for (const probe of ['startupProbe', 'livenessProbe', 'readinessProbe']) {
      const port = container[probe].httpGet.port;
      expect(declared.get(port) ?? port, probe).toBe(config.monitoringListen.port); // probes hit the monitoring port
    }
    expect(container.readinessProbe.httpGet.path).toBe('/readyz');
    expect(config.serverDnsNames).toContain('meshca.meshca.svc'); // the Service's name, CA_ADDR's host
    expect(config.kubernetes).toMatchObject({
      tokenReview: true,
      distributeRoot: true,
      istiodSecret: true,
      trustedNodeAccounts: [{ namespace: 'istio-system', serviceAccount: 'ztunnel' }],
    });
    expect(container.env.find((e: Doc) => e.name === 'MESHCA_KEK').valueFrom.secretKeyRef).toMatchObject({
      name: 'meshca-kek',
      key: 'kek',
    });
  });

  it('volume mounts name declared volumes, and the claim exists', () => {
    const volumes = new Map(pod.spec.volumes.map((v: Doc) => [v.name, v]));
    for (const m of container.volumeMounts) expect(volumes.has(m.name), m.name).toBe(true);
    const claim = (volumes.get('data') as Doc).persistentVolumeClaim.claimName;
    expect(find('PersistentVolumeClaim', claim, 'meshca')).toBeDefined();
    expect(container.args).toContain('--data-dir=/var/lib/meshca/data'); // a subdirectory: meshca keeps it 0700
    expect(container.volumeMounts.find((m: Doc) => m.name === 'data').mountPath).toBe('/var/lib/meshca');
  });
});

describe('deploy/kubernetes-ha', () => {
  const ha = load('kubernetes-ha');
  const kustomization = ha.get('kustomization.yaml')![0]!;
  const patch = (file: string) => ha.get(file)![0]!;
  const haDeployment = patch('deployment-ha.yaml');
  const haContainer = haDeployment.spec.template.spec.containers[0];

  it('builds on deploy/kubernetes and patches only objects that exist there', () => {
    expect(kustomization.resources).toEqual(['../kubernetes']);
    const files = kustomization.patches.filter((p: Doc) => p.path).map((p: Doc) => p.path);
    expect(files.sort()).toEqual([...ha.keys()].filter((f) => f !== 'kustomization.yaml').sort());
    for (const file of files) {
      const { kind, metadata } = patch(file);
      expect(find(kind, metadata.name, metadata.namespace), file).toBeDefined();
    }
    const deleted = parseAllDocuments(kustomization.patches.find((p: Doc) => p.patch).patch)[0]!.toJS() as Doc;
    expect(find(deleted.kind, deleted.metadata.name, deleted.metadata.namespace)).toBeDefined();
    expect(pod.spec.volumes.find((v: Doc) => v.name === 'data').persistentVolumeClaim.claimName).toBe(deleted.metadata.name);
    expect(haDeployment.spec.template.spec.volumes).toEqual([{ name: 'data', persistentVolumeClaim: null, emptyDir: {} }]);
  });

  it('runs three replicas, rolling one at a time, on different nodes, with two kept through drains', () => {
    expect(haDeployment.spec.replicas).toBe(3);
    expect(haDeployment.spec.strategy).toEqual({ type: 'RollingUpdate', rollingUpdate: { maxUnavailable: 1, maxSurge: 1 } });
    const [required] = haDeployment.spec.template.spec.affinity.podAntiAffinity.requiredDuringSchedulingIgnoredDuringExecution;
    expect(required.topologyKey).toBe('kubernetes.io/hostname');
    expect(subset(required.labelSelector.matchLabels, pod.metadata.labels)).toBe(true);
    expect(patch('poddisruptionbudget-ha.yaml').spec).toEqual({ maxUnavailable: null, minAvailable: 2 });
  });

  it('takes the store URL, its password and the admin token from Secrets, and the result is a valid PostgreSQL configuration', () => {
    expect(haContainer.name).toBe(container.name);
    const fromSecret = Object.fromEntries(haContainer.env.map((e: Doc) => [e.name, e.valueFrom.secretKeyRef.name]));
    expect(fromSecret).toEqual({ MESHCA_STORE: 'meshca-store', PGPASSWORD: 'meshca-store', MESHCA_ADMIN_TOKEN: 'meshca-admin-token' });
    const env = { MESHCA_KEK: 'x', MESHCA_STORE: 'postgres://meshca@postgres.example:5432/meshca?sslmode=verify-full' };
    const config = buildServerConfig(parseFlags(SERVE_FLAGS, container.args.slice(1), env, 'serve').values);
    expect(config.store).toMatchObject({ engine: 'postgres', url: env.MESHCA_STORE });
  });
});

describe('deploy/istio', () => {
  const istio = load('istio');
  const deploymentConfig = buildServerConfig(parseFlags(SERVE_FLAGS, container.args.slice(1), { MESHCA_KEK: 'x' }, 'serve').values);
  const service = find('Service', 'meshca', 'meshca')!;
  const expectCaAddress = (address: string) => {
    const [host, port] = address.split(':');
    expect(deploymentConfig.serverDnsNames).toContain(host);
    expect(`${service.metadata.name}.${service.metadata.namespace}.svc`).toBe(host);
    expect(service.spec.ports.map((p: Doc) => p.port)).toContain(Number(port));
  };

  it.each([
    { file: 'istiod-values.yaml', values: (d: Doc) => d, mesh: (d: Doc) => d.meshConfig },
    { file: 'istio-operator.yaml', values: (d: Doc) => d.spec.values, mesh: (d: Doc) => d.spec.meshConfig },
  ])("$file points proxies at meshca and turns istiod's CA off", ({ file, values, mesh }) => {
    const doc = istio.get(file)![0]!;
    if (file === 'istio-operator.yaml') expect(doc).toMatchObject({ apiVersion: 'install.istio.io/v1alpha1', kind: 'IstioOperator' });
    expectCaAddress(values(doc).global.caAddress);
    expect(values(doc).pilot.env.ENABLE_CA_SERVER).toBe('false');
    expect(mesh(doc).trustDomain).toBe(deploymentConfig.trustDomain);
    expect(mesh(doc).defaultConfig.proxyMetadata.ISTIO_MULTIROOT_MESH).toBe('true');
  });

  it('ztunnel-values.yaml points ztunnel at meshca, which trusts istio-system/ztunnel', () => {
    expectCaAddress(istio.get('ztunnel-values.yaml')![0]!.caAddress);
    expect(deploymentConfig.kubernetes.trustedNodeAccounts).toContainEqual({ namespace: 'istio-system', serviceAccount: 'ztunnel' });
  });
});
