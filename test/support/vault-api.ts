/**
 * A small Vault server for tests: real HTTPS (a CA made with openssl), Vault's real paths and JSON
 * shapes for what meshca uses — auth/token/renew-self, AppRole and Kubernetes login, and a PKI
 * mount's root/sign-intermediate, which really signs the CSR (subject and SANs from the CSR, as
 * use_csr_values does; pathLen from max_path_length). It is the only simulated part of the Vault tests.
 */
import { randomBytes, webcrypto } from 'node:crypto';
import { writeFileSync } from 'node:fs';
import type { IncomingMessage, ServerResponse } from 'node:http';
import { join } from 'node:path';
import { x509 } from '../../src/pki/x509.js';
import { LoopbackHttpsServer } from './loopback-https.js';
import { tlsServerIdentity } from './openssl.js';

const crypto = webcrypto as unknown as Parameters<typeof x509.X509CertificateGenerator.create>[1];
const EC = { name: 'ECDSA', namedCurve: 'P-256', hash: 'SHA-256' } as const;

interface Issuer {
  readonly cert: x509.X509Certificate;
  readonly keys: webcrypto.CryptoKeyPair;
}

interface TokenEntry {
  readonly leaseSeconds: number;
  readonly renewable: boolean;
}

export interface VaultRequest {
  readonly method: string;
  readonly path: string;
  readonly token: string | undefined;
  readonly body: Record<string, unknown>;
}

export class VaultSimulator {
  readonly requests: VaultRequest[] = [];
  /** Answer matching requests with this status and Vault error body instead of serving them; `times` then stop. */
  fault: { readonly status: number; readonly errors: readonly string[]; readonly match?: RegExp; times?: number } | undefined;
  readonly approle = { roleId: randomBytes(8).toString('hex'), secretId: randomBytes(16).toString('hex') };
  readonly kubernetes = { role: 'meshca', jwt: `eyJ.${randomBytes(24).toString('base64url')}.sig` };
  /** The mount meshca must use. */
  readonly mount = 'pki_meshca';
  readonly #tokens = new Map<string, TokenEntry>();
  readonly #http: LoopbackHttpsServer;

  private constructor(
    readonly dir: string,
    readonly tlsCaPem: string,
    tls: { key: string; cert: string },
    private readonly root: Issuer,
    /** The mount's issuer: the root itself, or an intermediate below it. */
    private readonly issuer: Issuer,
    private readonly now: () => Date,
  ) {
    this.#http = new LoopbackHttpsServer({ key: tls.key, cert: tls.cert }, (req, res) => {
      void this.#handle(req, res).catch((error: unknown) => reply(res, 500, { errors: [String(error)] }));
    });
  }

  /** `issuer: 'intermediate'` makes the mount an intermediate CA whose ca_chain includes the root. */
  static async start(dir: string, options: { now?: () => Date; issuer?: 'root' | 'intermediate' } = {}): Promise<VaultSimulator> {
    const tls = tlsServerIdentity(dir, 'vault');
    const now = options.now ?? (() => new Date());
    const root = await selfSignedRoot(now());
    const issuer = options.issuer === 'intermediate' ? await issuingCa(root, now()) : root;
    const sim = new VaultSimulator(dir, tls.caPem, tls, root, issuer, now);
    writeFileSync(sim.rootPath, sim.rootPem);
    writeFileSync(join(dir, 'vault-tls-ca.pem'), tls.caPem);
    await sim.#http.listen(0);
    return sim;
  }

  get url(): string {
    return `https://127.0.0.1:${this.#http.port}`;
  }

  get rootPem(): string {
    return this.root.cert.toString('pem') + '\n';
  }

  get rootPath(): string {
    return join(this.dir, 'vault-root.pem');
  }

  get tlsCaPath(): string {
    return join(this.dir, 'vault-tls-ca.pem');
  }

  /** A token Vault knows, with its lease. */
  issueToken(leaseSeconds = 3600, renewable = true): string {
    const token = `hvs.${randomBytes(18).toString('base64url')}`;
    this.#tokens.set(token, { leaseSeconds, renewable });
    return token;
  }

  revoke(token: string): void {
    this.#tokens.delete(token);
  }

  count(path: RegExp): number {
    return this.requests.filter((r) => path.test(r.path)).length;
  }

  /** Vault goes away: the listener closes and every connection is cut. */
  stop(): Promise<void> {
    return this.#http.stop();
  }

  /** Comes back on the same port. */
  resume(): Promise<void> {
    return this.#http.resume();
  }

  async #handle(req: IncomingMessage, res: ServerResponse): Promise<void> {
    const path = new URL(req.url ?? '/', 'https://vault').pathname;
    const text = await readBody(req);
    const body = (text ? JSON.parse(text) : {}) as Record<string, unknown>;
    const token = req.headers['x-vault-token'] as string | undefined;
    this.requests.push({ method: req.method ?? '', path, token, body });
    const fault = this.fault;
    if (fault && (fault.match === undefined || fault.match.test(path))) {
      if (fault.times !== undefined && --fault.times <= 0) this.fault = undefined;
      return reply(res, fault.status, { errors: fault.errors });
    }
    if (req.method !== 'POST' && req.method !== 'PUT') return reply(res, 405, { errors: ['unsupported operation'] });
    if (path === '/v1/auth/token/renew-self') return this.#renewSelf(token, res);
    if (path === '/v1/auth/approle/login')
      return this.#login(
        body.role_id === this.approle.roleId && body.secret_id === this.approle.secretId,
        400,
        'invalid role or secret ID',
        res,
      );
    if (path === '/v1/auth/kubernetes/login')
      return this.#login(body.role === this.kubernetes.role && body.jwt === this.kubernetes.jwt, 403, 'permission denied', res);
    if (path === `/v1/${this.mount}/root/sign-intermediate`) {
      if (token === undefined || !this.#tokens.has(token)) return reply(res, 403, { errors: ['permission denied'] });
      return reply(res, 200, await this.#signIntermediate(body));
    }
    return reply(res, 404, { errors: [`no handler for route "${path.replace(/^\/v1\//, '')}". route entry not found.`] });
  }

  #renewSelf(token: string | undefined, res: ServerResponse): void {
    const entry = token === undefined ? undefined : this.#tokens.get(token);
    if (!entry) return reply(res, 403, { errors: ['permission denied'] });
    if (!entry.renewable) return reply(res, 400, { errors: ['lease is not renewable'] });
    reply(res, 200, {
      auth: { client_token: token, accessor: 'acc', policies: ['meshca'], lease_duration: entry.leaseSeconds, renewable: true },
    });
  }

  #login(ok: boolean, status: number, error: string, res: ServerResponse): void {
    if (!ok) return reply(res, status, { errors: [error] });
    const token = this.issueToken(1800);
    reply(res, 200, { auth: { client_token: token, accessor: 'acc', policies: ['meshca'], lease_duration: 1800, renewable: true } });
  }

  async #signIntermediate(body: Record<string, unknown>): Promise<object> {
    const csr = new x509.Pkcs10CertificateRequest(String(body.csr));
    if (!(await csr.verify(crypto))) throw new Error('CSR signature does not verify');
    const ttlSeconds = Number(/^(\d+)s$/.exec(String(body.ttl))?.[1] ?? 2_592_000);
    const now = this.now().getTime();
    const notAfter = Math.min(now + ttlSeconds * 1000, this.issuer.cert.notAfter.getTime());
    const pathLength = typeof body.max_path_length === 'number' && body.max_path_length >= 0 ? body.max_path_length : undefined;
    const sans = body.use_csr_values === true ? csr.getExtension(x509.SubjectAlternativeNameExtension) : null;
    const cert = await x509.X509CertificateGenerator.create(
      {
        serialNumber: randomBytes(16)
          .toString('hex')
          .replace(/^[89a-f]/, '1'),
        subject: body.use_csr_values === true ? csr.subject : `CN=${String(body.common_name ?? 'meshca')}`,
        issuer: this.issuer.cert.subject,
        notBefore: new Date(Math.floor((now - 30_000) / 1000) * 1000),
        notAfter: new Date(Math.floor(notAfter / 1000) * 1000),
        publicKey: await csr.publicKey.export(EC, ['verify'], crypto),
        signingKey: this.issuer.keys.privateKey,
        signingAlgorithm: EC,
        extensions: [
          new x509.BasicConstraintsExtension(true, pathLength, true),
          new x509.KeyUsagesExtension(x509.KeyUsageFlags.keyCertSign | x509.KeyUsageFlags.cRLSign, true),
          await x509.SubjectKeyIdentifierExtension.create(await csr.publicKey.export(EC, ['verify'], crypto), false, crypto),
          await x509.AuthorityKeyIdentifierExtension.create(this.issuer.cert, false, crypto),
          ...(sans ? [sans] : []),
        ],
      },
      crypto,
    );
    const pem = (c: x509.X509Certificate) => c.toString('pem');
    const chain = this.issuer === this.root ? [pem(this.root.cert)] : [pem(this.issuer.cert), pem(this.root.cert)];
    return {
      request_id: randomBytes(8).toString('hex'),
      lease_id: '',
      renewable: false,
      lease_duration: 0,
      data: {
        certificate: pem(cert),
        issuing_ca: pem(this.issuer.cert),
        ca_chain: chain,
        serial_number: cert.serialNumber,
        expiration: Math.floor(notAfter / 1000),
      },
      wrap_info: null,
      warnings: null,
      auth: null,
    };
  }
}

async function selfSignedRoot(now: Date): Promise<Issuer> {
  const keys = (await webcrypto.subtle.generateKey(EC, true, ['sign', 'verify'])) as webcrypto.CryptoKeyPair;
  const cert = await x509.X509CertificateGenerator.createSelfSigned(
    {
      serialNumber: '01' + randomBytes(8).toString('hex'),
      name: 'O=Vault Sim, CN=Vault Root CA',
      notBefore: new Date(now.getTime() - 86_400_000),
      notAfter: new Date(now.getTime() + 10 * 365 * 86_400_000),
      keys,
      signingAlgorithm: EC,
      extensions: [
        new x509.BasicConstraintsExtension(true, undefined, true),
        new x509.KeyUsagesExtension(x509.KeyUsageFlags.keyCertSign | x509.KeyUsageFlags.cRLSign, true),
        await x509.SubjectKeyIdentifierExtension.create(keys.publicKey, false, crypto),
      ],
    },
    crypto,
  );
  return { cert, keys };
}

async function issuingCa(root: Issuer, now: Date): Promise<Issuer> {
  const keys = (await webcrypto.subtle.generateKey(EC, true, ['sign', 'verify'])) as webcrypto.CryptoKeyPair;
  const cert = await x509.X509CertificateGenerator.create(
    {
      serialNumber: '02' + randomBytes(8).toString('hex'),
      subject: 'O=Vault Sim, CN=Vault Issuing CA',
      issuer: root.cert.subject,
      notBefore: new Date(now.getTime() - 86_400_000),
      notAfter: new Date(now.getTime() + 5 * 365 * 86_400_000),
      publicKey: keys.publicKey,
      signingKey: root.keys.privateKey,
      signingAlgorithm: EC,
      extensions: [
        new x509.BasicConstraintsExtension(true, 1, true),
        new x509.KeyUsagesExtension(x509.KeyUsageFlags.keyCertSign | x509.KeyUsageFlags.cRLSign, true),
        await x509.SubjectKeyIdentifierExtension.create(keys.publicKey, false, crypto),
        await x509.AuthorityKeyIdentifierExtension.create(root.cert, false, crypto),
      ],
    },
    crypto,
  );
  return { cert, keys };
}

function reply(res: ServerResponse, status: number, body: object): void {
  res.writeHead(status, { 'content-type': 'application/json' });
  res.end(JSON.stringify(body));
}

function readBody(req: IncomingMessage): Promise<string> {
  return new Promise((resolve, reject) => {
    const chunks: Buffer[] = [];
    req.on('data', (c: Buffer) => chunks.push(c));
    req.on('end', () => resolve(Buffer.concat(chunks).toString('utf8')));
    req.on('error', reject);
  });
}
