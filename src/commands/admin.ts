import { readFileSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { trustedRootsPem } from '../authority/snapshot.js';
import { AdminApiError, AdminClient } from '../client/admin-client.js';
import { REVOCATION_REASONS } from '../pki/revocation-reasons.js';
import { openStoreForReading } from '../app/context.js';
import { readSecretFile } from '../app/data-dir.js';
import { bool, requireStr, str, UsageError, type FlagSpec, type FlagValues } from '../flags.js';
import { DATA_DIR_FLAG, JSON_FLAG, printRows, type Command } from './types.js';

const ADMIN_FLAGS: readonly FlagSpec[] = [
  { name: 'admin-url', kind: 'string', value: 'URL', default: 'https://localhost:8443', help: 'meshca admin API' },
  { name: 'admin-token-file', kind: 'string', value: 'PATH', help: 'admin token file (default: <data-dir>/admin-token)' },
  { name: 'ca-file', kind: 'string', value: 'PATH', help: 'PEM roots to verify the admin API (default: the bundle in <data-dir>)' },
  DATA_DIR_FLAG,
  JSON_FLAG,
];

async function adminClient(values: FlagValues): Promise<AdminClient> {
  const dataDir = requireStr(values, 'data-dir');
  const tokenFile = str(values, 'admin-token-file') ?? join(dataDir, 'admin-token');
  const caFile = str(values, 'ca-file');
  return new AdminClient({
    url: requireStr(values, 'admin-url'),
    token: readSecretFile(tokenFile, (t) => t.trim()),
    ca: caFile ? readFileSync(caFile, 'utf8') : await localBundle(dataDir),
  });
}

async function localBundle(dataDir: string): Promise<string> {
  const store = openStoreForReading({ dataDir });
  try {
    return trustedRootsPem(await store.loadAuthorities()).pem;
  } finally {
    await store.close();
  }
}

type Sub = (client: AdminClient, values: FlagValues, args: readonly string[]) => Promise<void>;

function group(
  name: string,
  description: string,
  extraFlags: readonly FlagSpec[],
  subs: Record<string, { usage: string; run: Sub }>,
): Command {
  const usage = Object.entries(subs)
    .map(([sub, s]) => `meshca ${name} ${sub} ${s.usage}`.trimEnd())
    .join('\n       ');
  return {
    usage,
    description,
    flags: [...ADMIN_FLAGS, ...extraFlags],
    run: async (values, positionals) => {
      const [sub, ...args] = positionals;
      const chosen = sub ? subs[sub] : undefined;
      if (!chosen) throw new UsageError(`"meshca ${name}" needs one of: ${Object.keys(subs).join(', ')} (see "meshca ${name} --help")`);
      await chosen.run(await adminClient(values), values, args).catch((error: unknown) => {
        throw error instanceof AdminApiError ? withCliNextStep(error) : error;
      });
    },
  };
}

/** The API's next step (an HTTP route) becomes the CLI command that does the same. */
const CLI_NEXT_STEP: Readonly<Record<string, string>> = {
  ERR_AUTHORITY_NOT_FOUND: 'list them with "meshca authorities list"',
  ERR_STORE_CONFLICT: 'the state changed meanwhile; check with "meshca authorities list" and run the command again',
};

function withCliNextStep(error: AdminApiError): Error {
  const next = CLI_NEXT_STEP[error.code];
  return new Error(next ? `${error.domainMessage}; ${next}` : error.domainMessage, { cause: error });
}

function arg(args: readonly string[], what: string): string {
  if (!args[0]) throw new UsageError(`missing ${what}`);
  return args[0];
}

const AUTHORITY_COLUMNS = [
  'id',
  'kind',
  'state',
  'parentId',
  'keyType',
  'notAfter',
  'issuedCount',
  'unexpiredIssuedCount',
  'revokedCount',
  'taintReason',
];
type Authorities = { authorities: Record<string, unknown>[] };
type RevokeOutcome = {
  authority: Record<string, unknown>;
  replacement: Record<string, unknown> | null;
  tainted: string[];
  unexpiredCertificates: number;
  certificates: string[];
  reissued: boolean;
};
const showAuthorities = (values: FlagValues) => (r: Authorities) => printRows(r.authorities, AUTHORITY_COLUMNS, bool(values, 'json'), r);

export const authoritiesCommand = group(
  'authorities',
  'Inspect, rotate and revoke signing authorities through the admin API (prepare → activate → remove; revoke on key compromise; csr → attach for an upstream CA).',
  [
    { name: 'key-type', kind: 'string', value: 'TYPE', help: 'prepare: key type of the new CA' },
    { name: 'root-ttl', kind: 'string', value: 'DURATION', help: 'prepare: lifetime of the new root' },
    { name: 'intermediate-ttl', kind: 'string', value: 'DURATION', help: 'prepare: lifetime of the new intermediate' },
    { name: 'force', kind: 'boolean', help: 'remove: even if unexpired certificates chain to it' },
    {
      name: 'plugin-dir',
      kind: 'string',
      value: 'DIR',
      help: "import: directory with Istio's ca-cert.pem, ca-key.pem, cert-chain.pem, root-cert.pem",
    },
    {
      name: 'reason',
      kind: 'string',
      value: 'REASON',
      default: 'keyCompromise',
      help: 'revoke: keyCompromise, cACompromise, superseded, cessationOfOperation, affiliationChanged, unspecified',
    },
    { name: 'reissue-signal', kind: 'boolean', help: "revoke: re-issue meshca's own serving certificate at once" },
    { name: 'subject', kind: 'string', value: 'DN', help: 'csr: subject of the intermediate, e.g. "CN=meshca cluster-1, O=Example"' },
    { name: 'out', kind: 'string', value: 'PATH', help: 'csr: write the CSR (PEM) here instead of stdout' },
    { name: 'cert', kind: 'string', value: 'PATH', help: 'attach: the intermediate certificate signed upstream (PEM)' },
    { name: 'chain', kind: 'string', value: 'PATH', help: 'attach: upstream intermediates and the upstream root (PEM)' },
  ],
  {
    list: {
      usage: '',
      run: async (c, v) => {
        const r = await c.json<Authorities & { pending: Record<string, unknown>[] }>('GET', '/v1/authorities');
        // Pending CSRs show as intermediates in state "pending" whose notAfter is when the CSR expires.
        const pending = r.pending.map((p) => ({
          id: p.id,
          kind: 'intermediate',
          state: 'pending',
          keyType: p.keyType,
          notAfter: p.expiresAt,
        }));
        printRows([...r.authorities, ...pending], AUTHORITY_COLUMNS, bool(v, 'json'), r);
      },
    },
    prepare: {
      usage: '[--key-type T] [--root-ttl D] [--intermediate-ttl D]',
      run: async (c, v) =>
        showAuthorities(v)(
          await c.json<Authorities>('POST', '/v1/authorities/prepare', {
            keyType: str(v, 'key-type'),
            rootTtl: str(v, 'root-ttl'),
            intermediateTtl: str(v, 'intermediate-ttl'),
          }),
        ),
    },
    activate: {
      usage: 'ID',
      run: async (c, v, a) =>
        showAuthorities(v)(await c.json<Authorities>('POST', `/v1/authorities/${encodeURIComponent(arg(a, 'authority ID'))}/activate`)),
    },
    remove: {
      usage: 'ID [--force]',
      run: async (c, v, a) => {
        const r = await c.json<{ removed: string[]; unexpiredCertificates: number }>(
          'POST',
          `/v1/authorities/${encodeURIComponent(arg(a, 'authority ID'))}/remove?force=${bool(v, 'force')}`,
        );
        printRows(
          r.removed.map((id) => ({ removed: id })),
          ['removed'],
          bool(v, 'json'),
          r,
        );
      },
    },
    csr: {
      usage: '[--key-type T] [--subject DN] [--out PATH]',
      run: async (c, v) => {
        const r = await c.json<{ id: string; csr: string; expiresAt: string }>('POST', '/v1/authorities/intermediate-csr', {
          keyType: str(v, 'key-type'),
          subject: str(v, 'subject'),
        });
        const out = str(v, 'out');
        if (out) writeFileSync(out, r.csr);
        if (bool(v, 'json')) printRows([], [], true, r);
        else if (out)
          process.stdout.write(
            `pending authority ${r.id}: CSR written to ${out}; have it signed, then "meshca authorities attach ${r.id} --cert CERT --chain CHAIN" before ${r.expiresAt}\n`,
          );
        else process.stdout.write(r.csr);
      },
    },
    attach: {
      usage: 'ID --cert PATH --chain PATH',
      run: async (c, v, a) => {
        const body = { certificate: readFileSync(requireStr(v, 'cert'), 'utf8'), chain: readFileSync(requireStr(v, 'chain'), 'utf8') };
        showAuthorities(v)(
          await c.json<Authorities>('POST', `/v1/authorities/${encodeURIComponent(arg(a, 'pending authority ID'))}/certificate`, body),
        );
      },
    },
    'rotate-intermediate': {
      usage: '',
      run: async (c, v) => showAuthorities(v)(await c.json<Authorities>('POST', '/v1/authorities/rotate-intermediate')),
    },
    revoke: {
      usage: 'ID --reason R [--reissue-signal]',
      run: async (c, v, a) => {
        const r = await c.json<RevokeOutcome>('POST', `/v1/authorities/${encodeURIComponent(arg(a, 'authority ID'))}/revoke`, {
          reason: str(v, 'reason'),
          reissue: bool(v, 'reissue-signal'),
        });
        const rows = [{ ...r.authority, role: 'revoked' }, ...(r.replacement ? [{ ...r.replacement, role: 'now signing' }] : [])];
        printRows(rows, ['role', ...AUTHORITY_COLUMNS], bool(v, 'json'), r);
        if (!bool(v, 'json')) {
          process.stdout.write(
            `tainted: ${r.tainted.join(', ')}; ${r.unexpiredCertificates} unexpired certificates chain to it${r.reissued ? '; serving certificate re-issued' : ''}\n`,
          );
          for (const path of r.certificates) process.stdout.write(`list them: GET ${path}\n`);
        }
      },
    },
    import: {
      usage: '--plugin-dir DIR',
      run: async (c, v) => {
        const dir = requireStr(v, 'plugin-dir');
        const read = (f: string) => readFileSync(join(dir, f), 'utf8');
        showAuthorities(v)(
          await c.json<Authorities>('POST', '/v1/authorities/import', {
            caCert: read('ca-cert.pem'),
            caKey: read('ca-key.pem'),
            certChain: read('cert-chain.pem'),
            rootCert: read('root-cert.pem'),
          }),
        );
      },
    },
  },
);

const CERT_COLUMNS = ['serial', 'spiffeId', 'status', 'notAfter', 'authorityId', 'clusterId'];

export const certificatesCommand = group(
  'certificates',
  'Browse and revoke issued certificates through the admin API.',
  [
    { name: 'spiffe-id', kind: 'string', value: 'ID', help: 'list: only this identity' },
    { name: 'authority-id', kind: 'string', value: 'ID', help: 'list: only this issuing authority' },
    { name: 'status', kind: 'string', value: 'active|expired|revoked', help: 'list: only this status' },
    { name: 'limit', kind: 'string', value: 'N', default: '100', help: 'list: page size' },
    { name: 'cursor', kind: 'string', value: 'CURSOR', help: 'list: next page (from the previous output)' },
    { name: 'reason', kind: 'string', value: 'REASON', default: 'unspecified', help: `revoke: ${REVOCATION_REASONS.join(', ')}` },
  ],
  {
    list: {
      usage: '[--spiffe-id ID] [--status S] [--limit N] [--cursor C]',
      run: async (c, v) => {
        const q = new URLSearchParams();
        for (const [flag, param] of [
          ['spiffe-id', 'spiffeId'],
          ['authority-id', 'authorityId'],
          ['status', 'status'],
          ['limit', 'limit'],
          ['cursor', 'cursor'],
        ] as const) {
          const value = str(v, flag);
          if (value) q.set(param, value);
        }
        const page = await c.json<{ items: Record<string, unknown>[]; nextCursor: string | null }>('GET', `/v1/certificates?${q}`);
        printRows(page.items, CERT_COLUMNS, bool(v, 'json'), page);
        if (!bool(v, 'json') && page.nextCursor) process.stdout.write(`more: --cursor ${page.nextCursor}\n`);
      },
    },
    show: {
      usage: 'SERIAL',
      run: async (c, v, a) => {
        const cert = await c.json<Record<string, unknown> & { pem: string }>(
          'GET',
          `/v1/certificates/${encodeURIComponent(arg(a, 'serial'))}`,
        );
        if (bool(v, 'json')) printRows([], [], true, cert);
        else
          process.stdout.write(
            Object.entries(cert)
              .filter(([k]) => k !== 'pem')
              .map(([k, x]) => `${k}: ${x ?? '-'}`)
              .join('\n') +
              '\n' +
              cert.pem,
          );
      },
    },
    revoke: {
      usage: 'SERIAL --reason REASON',
      run: async (c, v, a) =>
        printRows(
          [
            await c.json<Record<string, unknown>>('POST', `/v1/certificates/${encodeURIComponent(arg(a, 'serial'))}/revoke`, {
              reason: str(v, 'reason'),
            }),
          ],
          [...CERT_COLUMNS, 'revokedAt', 'revocationReason'],
          bool(v, 'json'),
        ),
    },
  },
);

/** identities revoke / deny: revoke every certificate of an identity, and with deny keep it from getting new ones. */
function revokeIdentity(deny: boolean): Sub {
  return async (client, values, args) =>
    printRows(
      [
        await client.json<Record<string, unknown>>('POST', '/v1/identities/revoke', {
          spiffeId: arg(args, 'SPIFFE ID'),
          reason: str(values, 'reason'),
          deny,
        }),
      ],
      ['spiffeId', 'revoked', 'denied'],
      bool(values, 'json'),
    );
}

export const identitiesCommand = group(
  'identities',
  'Revoke all certificates of a SPIFFE ID and manage the deny-list through the admin API.',
  [
    {
      name: 'reason',
      kind: 'string',
      value: 'REASON',
      default: 'keyCompromise',
      help: `revoke/deny: revocation reason (${REVOCATION_REASONS.join(', ')})`,
    },
  ],
  {
    revoke: { usage: 'SPIFFE_ID [--reason R]', run: revokeIdentity(false) },
    deny: { usage: 'SPIFFE_ID [--reason R]', run: revokeIdentity(true) },
    allow: {
      usage: 'SPIFFE_ID',
      run: async (c, v, a) =>
        printRows(
          [await c.json<Record<string, unknown>>('DELETE', `/v1/identities/deny/${encodeURIComponent(arg(a, 'SPIFFE ID'))}`)],
          ['spiffeId', 'allowed'],
          bool(v, 'json'),
        ),
    },
    denied: {
      usage: '',
      run: async (c, v) => {
        const r = await c.json<{ items: Record<string, unknown>[] }>('GET', '/v1/identities/deny');
        printRows(r.items, ['spiffeId', 'reason', 'actor', 'at'], bool(v, 'json'), r);
      },
    },
  },
);
