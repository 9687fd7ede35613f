import { mkdirSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { openOfflineAuthority } from '../app/context.js';
import { writePrivateFile } from '../app/data-dir.js';
import { isNamespaceName } from '../authn/subject.js';
import { IssuanceService } from '../authority/issuance.js';
import { istiodDnsNames, issueIstiodCertificate } from '../authority/istiod-profile.js';
import { IssuancePolicy } from '../authority/policy.js';
import { CLOCK_SKEW_FLAG, issuanceConfig, MAX_TTL_FLAG } from '../config.js';
import { parseRevisions } from '../config/kubernetes.js';
import { guard } from '../config/values.js';
import { bool, list, requireStr, str, UsageError } from '../flags.js';
import { parseTrustDomain } from '../spiffe/id.js';
import { DATA_DIR_FLAG, KEK_FILE_FLAG, type Command } from './types.js';

/** `meshca istiod-cert`: istiod's serving certificate, issued directly from the data dir (like `meshca crl`). */
export const istiodCertCommand: Command = {
  usage: 'meshca istiod-cert --data-dir DIR [--namespace istio-system] [--revision REV] (--out DIR | --k8s-secret [--kubeconfig PATH])',
  description:
    "Issue istiod's serving certificate (DNS istiod.<ns>.svc + revisions, spiffe://<td>/ns/<ns>/sa/istiod) from the data dir; write tls.crt, tls.key and root-cert.pem to --out, and/or Secret istiod-tls with --k8s-secret (skipped while the Secret is before 2/3 of its lifetime, unless --force).",
  flags: [
    DATA_DIR_FLAG,
    { name: 'namespace', kind: 'string', value: 'NS', default: 'istio-system', help: "istiod's namespace" },
    { name: 'revision', kind: 'list', value: 'REV', help: 'istiod revision (adds istiod-<rev>.<ns>.svc; repeatable)' },
    { name: 'service-account', kind: 'string', value: 'SA', default: 'istiod', help: "istiod's service account (the SPIFFE ID's sa)" },
    { name: 'trust-domain', kind: 'string', value: 'NAME', default: 'cluster.local', help: 'trust domain of the SPIFFE ID' },
    {
      name: 'ttl',
      kind: 'string',
      value: 'DURATION',
      default: '24h',
      help: "certificate lifetime (the server's --istiod-cert-ttl default; at most --max-ttl)",
    },
    MAX_TTL_FLAG,
    CLOCK_SKEW_FLAG,
    { name: 'out', kind: 'string', value: 'DIR', help: 'write tls.crt, tls.key (0600) and root-cert.pem here' },
    { name: 'k8s-secret', kind: 'boolean', help: 'create or renew Secret istiod-tls in --namespace' },
    { name: 'kubeconfig', kind: 'string', value: 'PATH', help: 'with --k8s-secret: the cluster (default: in-cluster config)' },
    { name: 'force', kind: 'boolean', help: 'with --k8s-secret: renew even if the Secret is still fresh' },
    { name: 'cluster-id', kind: 'string', value: 'NAME', default: 'Kubernetes', help: 'cluster recorded with the issued certificate' },
    KEK_FILE_FLAG,
  ],
  run: async (values) => {
    const dataDir = requireStr(values, 'data-dir');
    const namespace = requireStr(values, 'namespace');
    if (!isNamespaceName(namespace)) throw new UsageError('--namespace must be a namespace name');
    const revisions = parseRevisions(list(values, 'revision'), '--revision');
    const out = str(values, 'out');
    const toSecret = bool(values, 'k8s-secret');
    if (!out && !toSecret) throw new UsageError('say where the certificate goes: --out DIR and/or --k8s-secret');
    const trustDomain = guard('--trust-domain', () => parseTrustDomain(requireStr(values, 'trust-domain')));
    // The server's policy: --max-ttl clamps, --clock-skew backdates.
    const policy = issuanceConfig(values, 'ttl');
    const ttlMs = policy.defaultTtlMs;
    // Loaded only with --k8s-secret: the other offline tools never load the Kubernetes client.
    const kube = toSecret ? await import('./istiod-secret.js') : undefined;
    const client = kube?.connect(str(values, 'kubeconfig'));
    const { store, ca, close } = await openOfflineAuthority({ dataDir, kekFile: str(values, 'kek-file'), env: process.env }).catch(
      (error: unknown) => {
        client?.close();
        throw error;
      },
    );
    try {
      if (kube && client && !out && !bool(values, 'force')) {
        if (await kube.isCurrent(client, namespace, { rootsPem: ca.current().rootsPem, dnsNames: istiodDnsNames(namespace, revisions) })) {
          process.stdout.write(
            `Secret ${namespace}/${kube.ISTIOD_SECRET} is current (before 2/3 of its lifetime); nothing to do (--force renews anyway)\n`,
          );
          return;
        }
      }
      const issuance = new IssuanceService(ca, store, new IssuancePolicy(policy));
      const issued = await issueIstiodCertificate(ca, issuance, {
        trustDomain,
        namespace,
        revisions,
        serviceAccount: requireStr(values, 'service-account'),
        ttlMs,
        requestedBy: 'cli:istiod-cert',
        clusterId: requireStr(values, 'cluster-id'),
      });
      if (out) {
        mkdirSync(out, { recursive: true, mode: 0o700 });
        writeFileSync(join(out, 'tls.crt'), issued.files['tls.crt']);
        writePrivateFile(join(out, 'tls.key'), issued.files['tls.key']);
        writeFileSync(join(out, 'root-cert.pem'), issued.files['root-cert.pem']);
        process.stdout.write(`wrote ${['tls.crt', 'tls.key', 'root-cert.pem'].map((f) => join(out, f)).join(', ')}\n`);
      }
      if (kube && client) {
        const outcome = await kube.writeIstiodSecret(client, namespace, issued.files);
        process.stdout.write(`Secret ${namespace}/${kube.ISTIOD_SECRET}: ${outcome}\n`);
      }
      process.stdout.write(
        `issued ${issued.serialHex} for ${issued.spiffeId} (${issued.dnsNames.join(', ')}), valid until ${issued.notAfter.toISOString()}\n`,
      );
    } finally {
      client?.close();
      await close();
    }
  },
};
