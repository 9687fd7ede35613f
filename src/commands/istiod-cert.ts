import { mkdirSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { pino } from 'pino';
import { isNamespaceName } from '../authn/subject.js';
import { IssuanceService } from '../authority/issuance.js';
import { CertificateAuthority } from '../authority/lifecycle.js';
import { IssuancePolicy } from '../authority/policy.js';
import { duration } from '../config.js';
import { requireOfflineKek, writePrivateFile } from '../data-dir.js';
import { bool, list, requireStr, str, UsageError } from '../flags.js';
import { Resource } from '../kubernetes/api.js';
import { KubeClient } from '../kubernetes/client.js';
import { loadKubeConnection } from '../kubernetes/connection.js';
import { ISTIOD_SECRET, istiodDnsNames, issueIstiodCertificate, renewalReason, writeIstiodSecret } from '../kubernetes/istiod-cert.js';
import { parseRevisions } from '../kubernetes/options.js';
import { databasePath } from '../server.js';
import { parseTrustDomain } from '../spiffe/id.js';
import { openSqliteStore } from '../store/sqlite.js';
import { DATA_DIR_FLAG, type Command } from './types.js';

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
    { name: 'ttl', kind: 'string', value: 'DURATION', default: '720h', help: 'certificate lifetime' },
    { name: 'out', kind: 'string', value: 'DIR', help: 'write tls.crt, tls.key (0600) and root-cert.pem here' },
    { name: 'k8s-secret', kind: 'boolean', help: 'create or renew Secret istiod-tls in --namespace' },
    { name: 'kubeconfig', kind: 'string', value: 'PATH', help: 'with --k8s-secret: the cluster (default: in-cluster config)' },
    { name: 'force', kind: 'boolean', help: 'with --k8s-secret: renew even if the Secret is still fresh' },
    { name: 'cluster-id', kind: 'string', value: 'NAME', default: 'Kubernetes', help: 'cluster recorded with the issued certificate' },
    { name: 'kek-file', kind: 'string', value: 'PATH', help: 'key-encryption key (or MESHCA_KEK); dev data dirs use <data-dir>/kek' },
  ],
  run: async (values) => {
    const dataDir = requireStr(values, 'data-dir');
    const namespace = requireStr(values, 'namespace');
    if (!isNamespaceName(namespace)) throw new UsageError('--namespace must be a namespace name');
    const revisions = parseRevisions(list(values, 'revision'), '--revision');
    const out = str(values, 'out');
    const toSecret = bool(values, 'k8s-secret');
    if (!out && !toSecret) throw new UsageError('say where the certificate goes: --out DIR and/or --k8s-secret');
    let trustDomain: string;
    try {
      trustDomain = parseTrustDomain(requireStr(values, 'trust-domain'));
    } catch (error) {
      throw new UsageError(`--trust-domain: ${(error as Error).message}`);
    }
    const ttlMs = duration(values, 'ttl');
    const client = toSecret ? new KubeClient({ connection: loadKubeConnection({ kubeconfig: str(values, 'kubeconfig'), env: process.env }) }) : undefined;
    const store = openSqliteStore({ path: databasePath(dataDir) });
    try {
      if ((await store.loadAuthorities()).length === 0) throw new UsageError('the data dir has no authorities yet: start "meshca serve" once first');
      const kek = requireOfflineKek({ kekFile: str(values, 'kek-file'), env: process.env, dataDir }).kek;
      const ca = await CertificateAuthority.open({ store, kek, logger: pino({ level: 'silent' }), trustDomain, keyType: 'ec-p256', rootTtlMs: 1, intermediateTtlMs: 1 });
      if (client && !out && !bool(values, 'force')) {
        const reason = renewalReason(await Resource.secrets(client).get(namespace, ISTIOD_SECRET), { rootsPem: ca.current().rootsPem, dnsNames: istiodDnsNames(namespace, revisions) });
        if (reason === undefined) {
          process.stdout.write(`Secret ${namespace}/${ISTIOD_SECRET} is current (before 2/3 of its lifetime); nothing to do (--force renews anyway)\n`);
          return;
        }
      }
      const issuance = new IssuanceService(ca, store, new IssuancePolicy({ defaultTtlMs: ttlMs, maxTtlMs: ttlMs, backdateMs: 60_000 }));
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
      if (client) {
        const outcome = await writeIstiodSecret(client, namespace, issued.files);
        process.stdout.write(`Secret ${namespace}/${ISTIOD_SECRET}: ${outcome}\n`);
      }
      process.stdout.write(`issued ${issued.serialHex} for ${issued.spiffeId} (${issued.dnsNames.join(', ')}), valid until ${issued.notAfter.toISOString()}\n`);
    } finally {
      client?.close();
      await store.close();
    }
  },
};
