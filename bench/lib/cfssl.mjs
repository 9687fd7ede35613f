// The peer for the side-by-side comparison: CloudFlare's `cfssl serve` with a SQLite certdb, signing
// the same pre-generated ECDSA P-256 CSRs through its JSON API (POST /api/v1/cfssl/sign).
//
// The benchmark makes everything cfssl needs in a temp dir: an ECDSA P-256 CA (openssl), a signing
// config, the certdb (cfssl's `certificates` and `ocsp_responses` tables, created here with
// better-sqlite3 in WAL mode like meshca's store) and the db config naming it.

import { spawnSync } from 'node:child_process';
import { writeFileSync } from 'node:fs';
import { request } from 'node:http';
import { createRequire } from 'node:module';
import { join } from 'node:path';
import { sleep, spawnLogged } from './server.mjs';

const READY_TIMEOUT_MS = 30_000;

export const CFSSL_INSTALL_HINT =
  'install it to compare: Debian/Ubuntu "apt-get install golang-cfssl", or "go install github.com/cloudflare/cfssl/cmd/cfssl@latest" and put it on PATH';

/** `cfssl version` output's first line, or undefined when no cfssl is on PATH. */
export function cfsslVersion() {
  const result = spawnSync('cfssl', ['version'], { encoding: 'utf8' });
  if (result.error || result.status !== 0) return undefined;
  return result.stdout
    .split('\n')
    .map((l) => l.trim())
    .filter(Boolean)
    .join(', ');
}

// cfssl's certdb tables, with the columns its SQL statements use (`INSERT INTO certificates
// (serial_number, authority_key_identifier, ca_label, status, reason, expiry, revoked_at, pem)`).
const CERTDB_SCHEMA = `
CREATE TABLE certificates (
  serial_number            BLOB NOT NULL,
  authority_key_identifier BLOB NOT NULL,
  ca_label                 BLOB,
  status                   BLOB NOT NULL,
  reason                   INTEGER,
  expiry                   TIMESTAMP,
  revoked_at               TIMESTAMP,
  pem                      BLOB NOT NULL,
  PRIMARY KEY (serial_number, authority_key_identifier)
);
CREATE TABLE ocsp_responses (
  serial_number            BLOB NOT NULL,
  authority_key_identifier BLOB NOT NULL,
  body                     BLOB NOT NULL,
  expiry                   TIMESTAMP,
  PRIMARY KEY (serial_number, authority_key_identifier),
  FOREIGN KEY (serial_number, authority_key_identifier) REFERENCES certificates (serial_number, authority_key_identifier)
);
`;

/** Opens the certdb with better-sqlite3 (the project's own driver). @param {string} path */
function openDb(path) {
  const Database = createRequire(import.meta.url)('better-sqlite3');
  return new Database(path);
}

/**
 * Creates cfssl's working files in `dir`: CA key and certificate, signing config, certdb, db config.
 * The signing profile mirrors meshca's leaf: 24 h, digitalSignature, serverAuth + clientAuth.
 * @param {string} dir
 */
export function prepareCfssl(dir) {
  const file = (/** @type {string} */ name) => join(dir, name);
  const openssl = (/** @type {string[]} */ args) => {
    const r = spawnSync('openssl', args, { encoding: 'utf8' });
    if (r.status !== 0) throw new Error(`openssl ${args[0]} failed: ${r.stderr}`);
  };
  openssl(['ecparam', '-name', 'prime256v1', '-genkey', '-noout', '-out', file('ca-key.pem')]);
  openssl([
    'req',
    '-x509',
    '-new',
    '-key',
    file('ca-key.pem'),
    '-out',
    file('ca.pem'),
    '-days',
    '365',
    '-subj',
    '/O=meshca bench/CN=cfssl bench CA',
    '-addext',
    'basicConstraints=critical,CA:TRUE,pathlen:0',
    '-addext',
    'keyUsage=critical,keyCertSign,cRLSign',
  ]);
  writeFileSync(
    file('config.json'),
    JSON.stringify({ signing: { default: { expiry: '24h', usages: ['signing', 'server auth', 'client auth'] } } }),
  );
  const db = openDb(file('certdb.sqlite'));
  db.pragma('journal_mode = WAL'); // persistent in the file: cfssl's connection uses WAL too
  db.exec(CERTDB_SCHEMA);
  db.close();
  writeFileSync(file('db-config.json'), JSON.stringify({ driver: 'sqlite3', data_source: file('certdb.sqlite') }));
  return {
    dir,
    ca: file('ca.pem'),
    caKey: file('ca-key.pem'),
    config: file('config.json'),
    dbConfig: file('db-config.json'),
    db: file('certdb.sqlite'),
  };
}

/** Rows in the certdb's certificates table. @param {string} path */
export function certdbRows(path) {
  const db = openDb(path);
  try {
    return /** @type {{ n: number }} */ (db.prepare('SELECT count(*) AS n FROM certificates').get()).n;
  } finally {
    db.close();
  }
}

export class CfsslServer {
  /**
   * @param {import('node:child_process').ChildProcess & { tail: string[] }} child from spawnLogged
   * @param {string} url
   */
  constructor(child, url) {
    this.child = child;
    this.pid = /** @type {number} */ (child.pid);
    this.url = url;
    this.tail = child.tail;
    this.exited = new Promise((resolve) => child.once('exit', (code, signal) => resolve({ code, signal })));
  }

  /**
   * Starts `cfssl serve` on `port` and waits until it signs `probeCsr`.
   * @param {{ files: ReturnType<typeof prepareCfssl>, port: number, logFile: string, cpus?: string, probeCsr: string }} options
   */
  static async start({ files, port, logFile, cpus, probeCsr }) {
    const args = [
      'serve',
      '-address',
      '127.0.0.1',
      '-port',
      String(port),
      '-ca',
      files.ca,
      '-ca-key',
      files.caKey,
      '-config',
      files.config,
      '-db-config',
      files.dbConfig,
      '-loglevel',
      '3',
    ];
    const child = spawnLogged({ program: 'cfssl', args, cpus, logFile, tail: [] });
    const server = new CfsslServer(child, `http://127.0.0.1:${port}/api/v1/cfssl/sign`);
    const deadline = Date.now() + READY_TIMEOUT_MS;
    for (;;) {
      if (child.exitCode !== null || child.signalCode !== null)
        throw new Error(`cfssl serve exited during startup:\n${server.tail.slice(-20).join('\n')}`);
      const answer = await signOnce(server.url, probeCsr).catch((error) => ({ error }));
      if ('certificate' in answer) return server;
      if (Date.now() > deadline) {
        server.kill();
        throw new Error(
          `cfssl serve did not sign within ${READY_TIMEOUT_MS / 1000} s: ${JSON.stringify(answer).slice(0, 300)}\n${server.tail.slice(-20).join('\n')}`,
        );
      }
      await sleep(100);
    }
  }

  async stop() {
    if (this.child.exitCode === null && this.child.signalCode === null) this.child.kill('SIGTERM');
    return this.exited;
  }

  kill() {
    if (this.child.exitCode === null && this.child.signalCode === null) this.child.kill('SIGKILL');
  }
}

/**
 * One /api/v1/cfssl/sign call (a fresh connection; only for the readiness probe).
 * @param {string} url @param {string} csr
 * @returns {Promise<{ certificate: string }>}
 */
function signOnce(url, csr) {
  const body = JSON.stringify({ certificate_request: csr });
  return new Promise((resolve, reject) => {
    const req = request(
      url,
      { method: 'POST', headers: { 'content-type': 'application/json', 'content-length': Buffer.byteLength(body) }, timeout: 5000 },
      (res) => {
        const chunks = /** @type {Buffer[]} */ ([]);
        res.on('data', (c) => chunks.push(c));
        res.on('end', () => {
          try {
            const json = JSON.parse(Buffer.concat(chunks).toString('utf8'));
            if (json.success && typeof json.result?.certificate === 'string') resolve({ certificate: json.result.certificate });
            else reject(new Error(`cfssl answered ${res.statusCode}: ${JSON.stringify(json.errors ?? json).slice(0, 300)}`));
          } catch (error) {
            reject(error);
          }
        });
      },
    );
    req.on('timeout', () => req.destroy(new Error('timeout')));
    req.on('error', reject);
    req.end(body);
  });
}
