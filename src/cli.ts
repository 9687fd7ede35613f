#!/usr/bin/env node
import { existsSync, mkdirSync, readFileSync, writeFileSync } from 'node:fs';
import { isIP } from 'node:net';
import { join } from 'node:path';
import { openReadOnlyStore, STORE_FLAGS } from './commands/store-access.js';
import { openDevTokenIssuer } from './authn/dev-issuer.js';
import { trustedRootsPem } from './authority/snapshot.js';
import type { WorkloadKey } from './client/csr.js';
import { serviceAccountOfToken } from './client/token-claims.js';
import { buildServerConfig, duration, SERVE_FLAGS } from './config.js';
import { writePrivateFile } from './app/data-dir.js';
import { formatHelp, parseFlags, requireStr, str, UsageError, type FlagValues } from './flags.js';
import { createLogger } from './observability/logger.js';
import { KEY_TYPES, type KeyType } from './pki/keys.js';
import { spiffeBundle } from './spiffe/bundle.js';
import { workloadId } from './spiffe/id.js';
import { authoritiesCommand, certificatesCommand, identitiesCommand } from './commands/admin.js';
import { agentCommand } from './commands/agent.js';
import { stopOnSignals } from './commands/signals.js';
import { crlCommand } from './commands/crl.js';
import { istiodCertCommand } from './commands/istiod-cert.js';
import { backupCommand, restoreCommand } from './commands/backup.js';
import { kekCommand } from './commands/kek.js';
import { statusCommand } from './commands/status.js';
import { verifyCommand } from './commands/verify.js';
import { DATA_DIR_FLAG, type Command } from './commands/types.js';

const DATA_DIR = DATA_DIR_FLAG;
const BUNDLE_FORMATS = ['pem', 'spiffe'];

const COMMANDS: Record<string, Command> = {
  serve: {
    usage: 'meshca serve [flags]',
    description: 'Run the CA: Istio CA gRPC API, monitoring endpoints, SQLite store.',
    flags: SERVE_FLAGS,
    run: serve,
  },
  bundle: {
    usage: 'meshca bundle --data-dir DIR [--format pem|spiffe]\n       meshca bundle --store postgres://USER@HOST/DB [--format pem|spiffe]',
    description: 'Print the trust bundle (every trusted root) read directly from the store (the data dir, or --store), and exit.',
    flags: [
      DATA_DIR,
      ...STORE_FLAGS,
      { name: 'format', kind: 'string', value: BUNDLE_FORMATS.join('|'), default: 'pem', help: 'PEM roots or SPIFFE bundle (JWK Set)' },
    ],
    run: bundle,
  },
  'dev-token': {
    usage: 'meshca dev-token --data-dir DIR --namespace NS --service-account SA [--ttl 1h]',
    description: 'Print a ServiceAccount-like token from the development token issuer (servers started with --dev accept it).',
    flags: [
      DATA_DIR,
      { name: 'namespace', kind: 'string', value: 'NS', help: 'Kubernetes namespace' },
      { name: 'service-account', kind: 'string', value: 'SA', help: 'Kubernetes service account' },
      { name: 'ttl', kind: 'string', value: 'DURATION', default: '1h', help: 'token lifetime' },
      { name: 'audience', kind: 'string', value: 'AUD', default: 'istio-ca', help: 'token audience' },
    ],
    run: devToken,
  },
  request: {
    usage: `meshca request --addr HOST:PORT --root bundle.pem --token T --out DIR [--key-type ${KEY_TYPES.join('|')}]`,
    description:
      'Get a workload certificate the way istio-agent does: generate a key and CSR, call CreateCertificate, write cert-chain.pem, key.pem (0600) and root-cert.pem.',
    flags: [
      { name: 'addr', kind: 'string', value: 'HOST:PORT', default: 'localhost:15012', help: 'meshca gRPC address (CA_ADDR)' },
      { name: 'root', kind: 'string', value: 'PATH', help: 'PEM roots to verify the server (from "meshca bundle")' },
      { name: 'token', kind: 'string', value: 'JWT', help: 'ServiceAccount token (or MESHCA_TOKEN)' },
      { name: 'out', kind: 'string', value: 'DIR', help: 'directory for cert-chain.pem, key.pem, root-cert.pem' },
      { name: 'key-type', kind: 'string', value: 'TYPE', default: 'ec-p256', help: KEY_TYPES.join(', ') },
      { name: 'trust-domain', kind: 'string', value: 'NAME', default: 'cluster.local', help: 'trust domain of the requested identity' },
      { name: 'namespace', kind: 'string', value: 'NS', help: "namespace of the identity (defaults to the token's)" },
      { name: 'service-account', kind: 'string', value: 'SA', help: "service account of the identity (defaults to the token's)" },
      { name: 'server-name', kind: 'string', value: 'NAME', help: 'TLS server name if it differs from the address host' },
      { name: 'ttl', kind: 'string', value: 'DURATION', help: "requested lifetime (default: the server's)" },
      { name: 'cluster-id', kind: 'string', value: 'NAME', default: 'Kubernetes', help: 'clusterid header' },
    ],
    run: request,
  },
  agent: agentCommand,
  authorities: authoritiesCommand,
  certificates: certificatesCommand,
  identities: identitiesCommand,
  crl: crlCommand,
  'istiod-cert': istiodCertCommand,
  status: statusCommand,
  verify: verifyCommand,
  backup: backupCommand,
  restore: restoreCommand,
  kek: kekCommand,
};

async function serve(values: FlagValues): Promise<void> {
  const config = buildServerConfig(values);
  const logger = createLogger({ level: config.logLevel });
  // Loaded here, not at the top: the other commands never load Fastify, gRPC or the Kubernetes code.
  const [{ startServer, prepareSharedState }, { isWorkerProcess, superviseWorkers }] = await Promise.all([
    import('./app/server.js'),
    import('./app/cluster.js'),
  ]);
  if (config.workers > 1 && !isWorkerProcess()) {
    await prepareSharedState(config, logger).catch((error: unknown) => {
      logger.fatal({ err: error }, `meshca failed to start: ${(error as Error).message}`);
      logger.flush();
      process.exit(1);
    });
    superviseWorkers(config.workers, logger);
    return;
  }
  const server = await startServer(config, logger).catch((error: unknown) => {
    logger.fatal({ err: error }, `meshca failed to start: ${(error as Error).message}`);
    logger.flush();
    process.exit(1);
  });
  stopOnSignals(logger, 'meshca', server);
}

async function bundle(values: FlagValues): Promise<void> {
  const format = requireStr(values, 'format');
  if (!BUNDLE_FORMATS.includes(format))
    throw new UsageError(`--format ${format} is not supported; use one of ${BUNDLE_FORMATS.join(', ')}`);
  const { store } = await openReadOnlyStore(values);
  try {
    const authorities = await store.loadAuthorities();
    if (authorities.length === 0)
      throw new UsageError('the data dir has no authorities yet: start the server once ("meshca serve") to create them');
    const roots = trustedRootsPem(authorities);
    if (format === 'spiffe') {
      const jwtKeys = (await store.loadJwtAuthorities()).filter((k) => k.state !== 'removed');
      process.stdout.write(JSON.stringify(spiffeBundle(roots.ders, await store.bundleSequence(), 300, jwtKeys), null, 2) + '\n');
    } else {
      process.stdout.write(roots.pem);
    }
  } finally {
    await store.close();
  }
}

async function devToken(values: FlagValues): Promise<void> {
  const dataDir = requireStr(values, 'data-dir');
  // A new data dir here would get a new issuer key, whose tokens the running server refuses.
  if (!existsSync(dataDir))
    throw new UsageError(`the data dir ${dataDir} does not exist: pass the --data-dir of the server started with --dev`);
  const issuer = await openDevTokenIssuer(dataDir);
  const token = await issuer.sign({
    namespace: requireStr(values, 'namespace'),
    serviceAccount: requireStr(values, 'service-account'),
    ttlSeconds: Math.round(duration(values, 'ttl') / 1000),
    audience: str(values, 'audience'),
  });
  process.stdout.write(token + '\n');
}

async function request(values: FlagValues): Promise<void> {
  const token = str(values, 'token') ?? process.env.MESHCA_TOKEN;
  if (!token) throw new UsageError('--token is required: get one with "meshca dev-token" (dev) or from the pod\'s istio-token');
  const out = requireStr(values, 'out');
  const rootPath = str(values, 'root');
  const keyType = requireStr(values, 'key-type') as KeyType;
  if (!KEY_TYPES.includes(keyType)) throw new UsageError(`--key-type ${keyType} is not supported; use one of ${KEY_TYPES.join(', ')}`);
  const spiffeId = workloadId(requireStr(values, 'trust-domain'), ...requestedIdentity(values, token));
  const address = requireStr(values, 'addr');
  // The gRPC client and the WebCrypto key code are loaded only by this command.
  const [{ CaClient }, { generateWorkloadKey, privateKeyPemOf, workloadCsr }] = await Promise.all([
    import('./client/ca-client.js'),
    import('./client/csr.js'),
  ]);
  const key: WorkloadKey = await generateWorkloadKey(keyType);
  const client = new CaClient({
    address,
    rootsPem: rootPath ? readFileSync(rootPath, 'utf8') : undefined,
    serverName: str(values, 'server-name'),
  });
  try {
    const ttl = str(values, 'ttl');
    const chain = await client
      .createCertificate({
        csrPem: await workloadCsr(key, spiffeId),
        token,
        clusterId: str(values, 'cluster-id'),
        validitySeconds: ttl ? duration(values, 'ttl') / 1000 : 0,
      })
      .catch((error: unknown) => {
        throw withConnectionHint(error as Error, address, values);
      });
    const roots = chain.at(-1);
    if (roots === undefined || chain.length < 2)
      throw new Error(`the CA returned ${chain.length} certificate(s); expected the leaf, its issuer and the roots`);
    mkdirSync(out, { recursive: true, mode: 0o700 });
    writeFileSync(join(out, 'cert-chain.pem'), chain.slice(0, -1).join(''));
    writePrivateFile(join(out, 'key.pem'), await privateKeyPemOf(key));
    writeFileSync(join(out, 'root-cert.pem'), roots);
    process.stdout.write(
      `wrote ${join(out, 'cert-chain.pem')}, ${join(out, 'key.pem')} and ${join(out, 'root-cert.pem')} for ${spiffeId}\n`,
    );
  } finally {
    client.close();
  }
}

/** --namespace and --service-account when given; what is missing comes from the token. */
function requestedIdentity(values: FlagValues, token: string): [namespace: string, serviceAccount: string] {
  const namespace = str(values, 'namespace');
  const serviceAccount = str(values, 'service-account');
  if (namespace !== undefined && serviceAccount !== undefined) return [namespace, serviceAccount];
  const claims = tokenClaims(token);
  return [namespace ?? claims.namespace, serviceAccount ?? claims.serviceAccount];
}

/** TLS failures the first hour hits, with what to do about them. */
function withConnectionHint(error: Error, address: string, values: FlagValues): Error {
  const message = error.message;
  if (/unable to get local issuer certificate|self[- ]signed certificate|certificate signature failure|unable to verify/i.test(message)) {
    return new Error(
      `${message}\nThe server's certificate does not chain to --root${str(values, 'root') ? ` ${str(values, 'root')}` : ''}: after a rotation, re-run "meshca bundle --data-dir DIR > bundle.pem" and pass it as --root`,
    );
  }
  const host = address.replace(/:\d+$/, '').replace(/^\[|\]$/g, '');
  if (isIP(host) !== 0 && str(values, 'server-name') === undefined && /altnames|does not match|ERR_TLS_CERT_ALTNAME/i.test(message)) {
    return new Error(
      `${message}\nThe serving certificate names DNS hosts (serve --server-dns), not ${host}: add --server-name localhost (or another of those names)`,
    );
  }
  return error;
}

/** Reads (without verifying — the server does that) the namespace and service account of a token. */
function tokenClaims(token: string): { namespace: string; serviceAccount: string } {
  const claims = serviceAccountOfToken(token);
  if (!claims) throw new UsageError('cannot read the namespace/service account from the token; pass --namespace and --service-account');
  return claims;
}

function version(): string {
  const pkg = JSON.parse(readFileSync(new URL('../package.json', import.meta.url), 'utf8')) as { version: string };
  return pkg.version;
}

/** Whole descriptions, wrapped under the command name. */
function topHelp(): string {
  const width = 100;
  const indent = ' '.repeat(25);
  const rows = Object.entries(COMMANDS).map(([name, c]) => {
    const lines: string[] = [];
    let line = '';
    for (const word of c.description.split(/\s+/)) {
      if (line && indent.length + line.length + word.length + 1 > width) {
        lines.push(line);
        line = word;
      } else line = line ? `${line} ${word}` : word;
    }
    lines.push(line);
    return `  ${name.padEnd(22)} ${lines.join(`\n${indent}`)}`;
  });
  return `meshca ${version()}: a SPIFFE certificate authority for Istio meshes

Usage: meshca <command> [flags]

Commands:
${rows.join('\n')}

Run "meshca <command> --help" for the flags of a command. Every flag can also be set as MESHCA_<FLAG_IN_CAPS>.
"meshca --version" prints the version.
`;
}

/** Commands that keep running after main() returns (their signal handlers exit). */
const LONG_RUNNING = new Set(['serve', 'agent']);

export async function main(argv: readonly string[]): Promise<number> {
  const [name, ...rest] = argv;
  if (!name || name === '--help' || name === '-h' || name === 'help') {
    process.stdout.write(topHelp());
    return 0;
  }
  if (name === '--version' || name === '-v' || name === 'version') {
    process.stdout.write(`meshca ${version()}\n`);
    return 0;
  }
  const command = COMMANDS[name];
  if (!command) {
    process.stderr.write(`meshca: unknown command "${name}"; run "meshca --help" for the list\n`);
    return 2;
  }
  try {
    const parsed = parseFlags(command.flags, rest, process.env, name);
    if (parsed.help) {
      process.stdout.write(formatHelp(command.usage, command.description, command.flags));
      return 0;
    }
    await command.run(parsed.values, parsed.positionals);
    return 0;
  } catch (error) {
    const usage = error instanceof UsageError;
    process.stderr.write(`meshca ${name}: ${(error as Error).message}\n`);
    return usage ? 2 : 1;
  }
}

main(process.argv.slice(2)).then(
  (code) => {
    if (code !== 0 || !LONG_RUNNING.has(process.argv[2] ?? '')) process.exitCode = code;
  },
  (error: unknown) => {
    process.stderr.write(`meshca: ${(error as Error).stack ?? String(error)}\n`);
    process.exitCode = 1;
  },
);
