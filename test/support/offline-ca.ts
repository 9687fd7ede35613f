import { readFileSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { openssl } from './openssl.js';

/** Extensions an operator gives `openssl x509 -req` for meshca's intermediate when not copying the CSR's. */
export const MESHCA_INTERMEDIATE_EXT =
  'basicConstraints=critical,CA:TRUE,pathlen:0\nkeyUsage=critical,keyCertSign,cRLSign\nsubjectKeyIdentifier=hash\nauthorityKeyIdentifier=keyid\nsubjectAltName=URI:spiffe://cluster.local\n';

let counter = 0;

/** openssl's arguments for a new P-256 key (unencrypted) written to keyPath. */
export const newEcKey = (keyPath: string): string[] => [
  '-newkey',
  'ec',
  '-pkeyopt',
  'ec_paramgen_curve:P-256',
  '-nodes',
  '-keyout',
  keyPath,
];

/** A PEM CSR for a new P-256 key, with extra `openssl req` arguments (e.g. -addext). */
export function ecCsr(keyPath: string, subject: string, extra: readonly string[] = []): string {
  return openssl(['req', '-new', ...newEcKey(keyPath), '-subj', subject, ...extra]);
}

/**
 * An offline CA driven by the openssl CLI, as an operator would run it: a self-signed root, CAs
 * below it, and `openssl x509 -req` signing meshca's CSR.
 */
export class OpensslCa {
  private constructor(
    private readonly dir: string,
    readonly name: string,
  ) {}

  get certPath(): string {
    return join(this.dir, `${this.name}.pem`);
  }

  get keyPath(): string {
    return join(this.dir, `${this.name}-key.pem`);
  }

  get certPem(): string {
    return readFileSync(this.certPath, 'utf8');
  }

  /** A self-signed root (no pathLen unless given), 10 years. */
  static root(dir: string, name: string, basicConstraints = 'critical,CA:TRUE'): OpensslCa {
    const ca = new OpensslCa(dir, name);
    openssl([
      'req',
      '-x509',
      ...newEcKey(ca.keyPath),
      '-out',
      ca.certPath,
      '-days',
      '3650',
      '-subj',
      `/O=Offline/CN=${name}`,
      '-addext',
      `basicConstraints=${basicConstraints}`,
      '-addext',
      'keyUsage=critical,keyCertSign,cRLSign',
      '-addext',
      'subjectKeyIdentifier=hash',
    ]);
    return ca;
  }

  /** A CA below this one (an upstream intermediate). */
  child(name: string, basicConstraints = 'critical,CA:TRUE'): OpensslCa {
    const ca = new OpensslCa(this.dir, name);
    const csr = join(this.dir, `${name}.csr`);
    writeFileSync(csr, ecCsr(ca.keyPath, `/O=Offline/CN=${name}`));
    this.signFile(csr, ca.certPath, {
      ext: `basicConstraints=${basicConstraints}\nkeyUsage=critical,keyCertSign,cRLSign\nsubjectKeyIdentifier=hash\nauthorityKeyIdentifier=keyid\n`,
      days: 3000,
    });
    return ca;
  }

  /**
   * Signs a CSR. Without `ext` the CSR's own extensions are copied (`-copy_extensions copy`), as the
   * operator docs show; with it, exactly those extensions are written.
   */
  sign(csrPem: string, options: { ext?: string; days?: number } = {}): string {
    const n = ++counter;
    const csr = join(this.dir, `req-${n}.csr`);
    const out = join(this.dir, `signed-${n}.pem`);
    writeFileSync(csr, csrPem);
    this.signFile(csr, out, options);
    return readFileSync(out, 'utf8');
  }

  private signFile(csr: string, out: string, options: { ext?: string; days?: number }): void {
    const args = [
      'x509',
      '-req',
      '-in',
      csr,
      '-CA',
      this.certPath,
      '-CAkey',
      this.keyPath,
      '-CAcreateserial',
      '-out',
      out,
      '-days',
      String(options.days ?? 365),
    ];
    if (options.ext === undefined) args.push('-copy_extensions', 'copy');
    else {
      const extFile = `${out}.ext`;
      writeFileSync(extFile, options.ext);
      args.push('-extfile', extFile);
    }
    openssl(args);
  }
}
