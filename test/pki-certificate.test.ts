import { createPublicKey, randomBytes, type KeyObject } from 'node:crypto';
import { mkdtempSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import {
  createCaCertificate,
  createCrl,
  describeCertificate,
  validatePluginCa,
  verifyIssuedBy,
  type CaCertificate,
  type CaCertificateSpec,
  type CrlEntry,
  type PluginCaFiles,
} from '../src/pki/certificate.js';
import { PkiError } from '../src/pki/errors.js';
import { importPrivateKeyPem, keyTypeOf, privateKeyMatchesCertificate, privateKeyPem, type KeyType } from '../src/pki/keys.js';
import { pemDecodeOne, pemEncode } from '../src/pki/pem.js';
import { randomSerial, serialToHex } from '../src/pki/serial.js';
import { openssl, opensslStatus } from './support/openssl.js';

const TD = 'example.org';
const DAY = 86_400_000;
const now = new Date();
const dir = mkdtempSync(join(tmpdir(), 'meshca-certs-'));
afterAll(() => rmSync(dir, { recursive: true, force: true }));

let fileCounter = 0;
/** Writes `content` to a fresh file in the test dir and returns its path. */
function file(name: string, content: string | Buffer): string {
  const path = join(dir, `${++fileCounter}-${name}`);
  writeFileSync(path, content);
  return path;
}

const certPem = (der: Buffer): string => pemEncode(der, 'CERTIFICATE');
const text = (der: Buffer): string => openssl(['x509', '-noout', '-text', '-in', file('cert.pem', certPem(der))]);

async function rejection(promise: Promise<unknown>): Promise<PkiError> {
  try {
    await promise;
  } catch (err) {
    expect(err).toBeInstanceOf(PkiError);
    return err as PkiError;
  }
  throw new Error('expected a PkiError, the promise resolved');
}

function root(keyType: KeyType, days = 3650, notBefore = now): Promise<CaCertificate> {
  return createCaCertificate({ kind: 'root', trustDomain: TD, keyType, notBefore, notAfter: new Date(notBefore.getTime() + days * DAY) });
}

function intermediate(issuer: CaCertificate, keyType: KeyType, days = 365): Promise<CaCertificate> {
  return createCaCertificate({
    kind: 'intermediate',
    trustDomain: TD,
    keyType,
    notBefore: now,
    notAfter: new Date(now.getTime() + days * DAY),
    issuer: { certificateDer: issuer.certificateDer, privateKey: issuer.privateKey },
  });
}

// ---------------------------------------------------------------------------------------------
// openssl-made certificates: leaves to revoke, and the "external" PKI a plug-in CA comes from

interface Issued {
  readonly der: Buffer;
  readonly pem: string;
  readonly keyPem: string;
  readonly certPath: string;
  readonly keyPath: string;
}

const CA_EXT = ['basicConstraints = critical,CA:TRUE', 'keyUsage = critical,keyCertSign,cRLSign'];
const LEAF_EXT = [
  'basicConstraints = critical,CA:FALSE',
  'keyUsage = critical,digitalSignature',
  'extendedKeyUsage = serverAuth,clientAuth',
  `subjectAltName = critical,URI:spiffe://${TD}/ns/default/sa/app`,
];

interface OpensslCertSpec {
  readonly subject: string;
  readonly ext: readonly string[];
  readonly issuer?: Pick<Issued, 'certPath' | 'keyPath'>;
  readonly serialHex?: string;
  readonly days?: number;
}

/** An EC P-256 certificate made by the openssl CLI: self-signed, or signed by `issuer`. */
function opensslCert(spec: OpensslCertSpec): Issued {
  const keyPem = openssl(['genpkey', '-algorithm', 'EC', '-pkeyopt', 'ec_paramgen_curve:P-256']);
  const keyPath = file('key.pem', keyPem);
  const ext = [...spec.ext, 'subjectKeyIdentifier = hash', ...(spec.issuer ? ['authorityKeyIdentifier = keyid:always'] : [])];
  const config = file('openssl.cnf', `[req]\ndistinguished_name = dn\n[dn]\n[ext]\n${ext.join('\n')}\n`);
  const certPath = join(dir, `${++fileCounter}-cert.pem`);
  const common = ['-days', String(spec.days ?? 365), '-set_serial', `0x${spec.serialHex ?? randomBytes(12).toString('hex')}`];
  if (spec.issuer === undefined) {
    openssl([
      'req',
      '-x509',
      '-new',
      '-key',
      keyPath,
      '-subj',
      spec.subject,
      '-config',
      config,
      '-extensions',
      'ext',
      ...common,
      '-out',
      certPath,
    ]);
  } else {
    const csr = file('csr.pem', openssl(['req', '-new', '-key', keyPath, '-subj', spec.subject, '-config', config]));
    openssl([
      'x509',
      '-req',
      '-in',
      csr,
      '-CA',
      spec.issuer.certPath,
      '-CAkey',
      spec.issuer.keyPath,
      '-extfile',
      config,
      '-extensions',
      'ext',
      ...common,
      '-out',
      certPath,
    ]);
  }
  const pem = readFileSync(certPath, 'utf8');
  return { der: pemDecodeOne(pem, ['CERTIFICATE']), pem, keyPem, certPath, keyPath };
}

/** Our own CA as an openssl issuer. */
function asIssuer(ca: CaCertificate): Pick<Issued, 'certPath' | 'keyPath'> {
  return { certPath: file('ca.pem', certPem(ca.certificateDer)), keyPath: file('ca-key.pem', privateKeyPem(ca.privateKey)) };
}

/** The raw TLVs inside a DER SEQUENCE (enough to pull names out of a certificate). */
function children(seq: Buffer): Buffer[] {
  const items: Buffer[] = [];
  const content = seq.subarray(headerLength(seq, 0));
  for (let off = 0; off < content.length; ) {
    const end = off + headerLength(content, off) + contentLength(content, off);
    items.push(content.subarray(off, end));
    off = end;
  }
  return items;
}
const headerLength = (b: Buffer, off: number): number => 2 + (b[off + 1]! & 0x80 ? b[off + 1]! & 0x7f : 0);
function contentLength(b: Buffer, off: number): number {
  const first = b[off + 1]!;
  if (!(first & 0x80)) return first;
  return b.subarray(off + 2, off + 2 + (first & 0x7f)).reduce((n, byte) => n * 256 + byte, 0);
}
/** Raw issuer and subject Name DER (TBSCertificate fields 3 and 5, after the explicit version). */
function rawNames(certDer: Buffer): { issuer: Buffer; subject: Buffer } {
  const tbs = children(children(certDer)[0]!);
  return { issuer: tbs[3]!, subject: tbs[5]! };
}

// ---------------------------------------------------------------------------------------------

const SIGNATURE_ALGORITHM: Record<KeyType, string> = {
  'ec-p256': 'ecdsa-with-SHA256',
  'ec-p384': 'ecdsa-with-SHA384',
  'rsa-2048': 'sha256WithRSAEncryption',
  'rsa-3072': 'sha256WithRSAEncryption',
  'rsa-4096': 'sha256WithRSAEncryption',
};

const hierarchies: [KeyType, KeyType][] = [
  ['ec-p256', 'ec-p256'],
  ['ec-p384', 'ec-p256'],
  ['rsa-2048', 'rsa-2048'],
  ['ec-p256', 'rsa-3072'],
  ['rsa-4096', 'ec-p384'],
];

describe.each(hierarchies)('root %s, intermediate %s', (rootType, interType) => {
  let rootCa: CaCertificate;
  let interCa: CaCertificate;
  let rootText: string;
  let interText: string;
  beforeAll(async () => {
    rootCa = await root(rootType);
    interCa = await intermediate(rootCa, interType);
    rootText = text(rootCa.certificateDer);
    interText = text(interCa.certificateDer);
  });

  it('openssl verifies the intermediate against the root, strictly', () => {
    const rootPath = file('root.pem', certPem(rootCa.certificateDer));
    const interPath = file('inter.pem', certPem(interCa.certificateDer));
    expect(openssl(['verify', '-x509_strict', '-CAfile', rootPath, interPath])).toContain(': OK');
  });

  it('has the CA profile: critical BasicConstraints and KeyUsage, non-critical SPIFFE URI SAN', () => {
    for (const t of [rootText, interText]) {
      expect(t).toMatch(/X509v3 Key Usage: critical\n\s+Certificate Sign, CRL Sign\n/);
      expect(t).toMatch(/X509v3 Subject Alternative Name: \n\s+URI:spiffe:\/\/example\.org\n/);
      expect(t).toContain('X509v3 Subject Key Identifier');
      expect(t).toMatch(/Version: 3 \(0x2\)/);
    }
    expect(rootText).toMatch(/X509v3 Basic Constraints: critical\n\s+CA:TRUE\n/);
    expect(interText).toMatch(/X509v3 Basic Constraints: critical\n\s+CA:TRUE, pathlen:0\n/);
    expect(rootText).not.toContain('Authority Key Identifier');
  });

  it('signs with the issuer key algorithm', () => {
    expect(rootText).toContain(`Signature Algorithm: ${SIGNATURE_ALGORITHM[rootType]}`);
    expect(interText).toContain(`Signature Algorithm: ${SIGNATURE_ALGORITHM[rootType]}`);
  });

  it('describes both certificates', async () => {
    const r = await describeCertificate(rootCa.certificateDer);
    const i = await describeCertificate(interCa.certificateDer);
    expect(r).toMatchObject({ isCa: true, pathLength: undefined, keyUsageCertSign: true, keyType: rootType, selfSigned: true });
    expect(i).toMatchObject({ isCa: true, pathLength: 0, keyUsageCertSign: true, keyType: interType, selfSigned: false });
    expect(r.subject).toBe(`O=meshca, OU=${TD}, CN=meshca Root CA ${r.serialHex.slice(0, 16)}`);
    expect(i.subject).toBe(`O=meshca, OU=${TD}, CN=meshca Intermediate CA ${i.serialHex.slice(0, 16)}`);
    expect(i.issuer).toBe(r.subject);
    expect(i.authorityKeyId).toBe(r.subjectKeyId);
    expect(r.authorityKeyId).toBeUndefined();
    expect(i.uris).toEqual([`spiffe://${TD}`]);
    expect(i.dnsNames).toEqual([]);
    expect(r.notAfter.getTime()).toBe(Math.floor(now.getTime() / 1000) * 1000 + 3650 * DAY);
    expect(i.notBefore.getTime()).toBe(Math.floor(now.getTime() / 1000) * 1000);
  });

  it('matches openssl on serial, fingerprint and key identifiers', async () => {
    const i = await describeCertificate(interCa.certificateDer);
    const out = openssl([
      'x509',
      '-noout',
      '-serial',
      '-fingerprint',
      '-sha256',
      '-in',
      file('inter.pem', certPem(interCa.certificateDer)),
    ]);
    expect(out).toContain(`serial=${i.serialHex.toUpperCase().padStart(32, '0')}`);
    expect(out.toLowerCase()).toContain(i.sha256Fingerprint.match(/../g)!.join(':'));
    expect(interText).toContain(i.subjectKeyId!.toUpperCase().match(/../g)!.join(':'));
  });

  it('returns the generated key pair', () => {
    expect(privateKeyMatchesCertificate(interCa.privateKey, interCa.certificateDer)).toBe(true);
    expect(createPublicKey(interCa.privateKey).equals(interCa.publicKey)).toBe(true);
    expect(keyTypeOf(interCa.publicKey)).toBe(interType);
  });

  it('chains names byte for byte, as Go requires', () => {
    expect(rawNames(interCa.certificateDer).issuer).toEqual(rawNames(rootCa.certificateDer).subject);
    expect(rawNames(rootCa.certificateDer).issuer).toEqual(rawNames(rootCa.certificateDer).subject);
  });

  it('verifyIssuedBy follows the real issuer only', async () => {
    expect(await verifyIssuedBy(interCa.certificateDer, rootCa.certificateDer)).toBe(true);
    expect(await verifyIssuedBy(rootCa.certificateDer, rootCa.certificateDer)).toBe(true);
    expect(await verifyIssuedBy(rootCa.certificateDer, interCa.certificateDer)).toBe(false);
    expect(await verifyIssuedBy(interCa.certificateDer, interCa.certificateDer)).toBe(false);
  });
});

describe('createCaCertificate', () => {
  let rootCa: CaCertificate;
  let interCa: CaCertificate;
  beforeAll(async () => {
    rootCa = await root('ec-p256', 30);
    interCa = await intermediate(rootCa, 'ec-p256', 365);
  });

  it('gives two roots made in a row different serials and subjects', async () => {
    const [a, b] = await Promise.all([root('ec-p256'), root('ec-p256')]).then((rs) =>
      Promise.all(rs.map((r) => describeCertificate(r.certificateDer))),
    );
    expect(a!.subject).not.toBe(b!.subject);
    expect(a!.serialHex).not.toBe(b!.serialHex);
  });

  it("clamps an intermediate to the issuer's notAfter", async () => {
    const [r, i] = await Promise.all([describeCertificate(rootCa.certificateDer), describeCertificate(interCa.certificateDer)]);
    expect(i.notAfter).toEqual(r.notAfter);
  });

  it('issues an intermediate under an openssl-made root, copying its name bytes exactly', async () => {
    const ext = opensslCert({ subject: '/O=Example Org/OU=Mesh/CN=External Root', ext: CA_EXT, days: 30 });
    const extCa = {
      certificateDer: ext.der,
      privateKey: importPrivateKeyPem(ext.keyPem),
      publicKey: createPublicKey(importPrivateKeyPem(ext.keyPem)),
    };
    const inter = await intermediate(extCa, 'ec-p384', 365);
    expect(rawNames(inter.certificateDer).issuer).toEqual(rawNames(ext.der).subject);
    expect(openssl(['verify', '-x509_strict', '-CAfile', ext.certPath, file('inter.pem', certPem(inter.certificateDer))])).toContain(
      ': OK',
    );
    expect((await describeCertificate(inter.certificateDer)).notAfter).toEqual((await describeCertificate(ext.der)).notAfter);
  });

  it('is not fooled by a verifyIssuedBy across key types (OpenSSL error queue)', async () => {
    const rsa = await root('rsa-2048');
    expect(await verifyIssuedBy(interCa.certificateDer, rsa.certificateDer)).toBe(false);
    const sec1 = openssl(['ecparam', '-name', 'prime256v1', '-genkey', '-noout']);
    expect(keyTypeOf(importPrivateKeyPem(sec1))).toBe('ec-p256');
  });

  const spec = (over: Partial<CaCertificateSpec>): CaCertificateSpec => ({
    kind: 'intermediate',
    trustDomain: TD,
    keyType: 'ec-p256',
    notBefore: now,
    notAfter: new Date(now.getTime() + 365 * DAY),
    issuer: { certificateDer: rootCa.certificateDer, privateKey: rootCa.privateKey },
    ...over,
  });
  const invalid: [string, () => Promise<unknown>, string][] = [
    ['an intermediate without issuer', () => createCaCertificate(spec({ issuer: undefined })), 'ERR_CA_SPEC_INVALID'],
    ['a root with an issuer', () => createCaCertificate(spec({ kind: 'root' })), 'ERR_CA_SPEC_INVALID'],
    ['notAfter before notBefore', () => root('ec-p256', -1), 'ERR_CA_SPEC_INVALID'],
    [
      'an issuer that expires before notBefore',
      () => createCaCertificate(spec({ notBefore: new Date(now.getTime() + 40 * DAY) })),
      'ERR_CA_SPEC_INVALID',
    ],
    ['an issuer key that does not match', () => intermediate({ ...rootCa, privateKey: interCa.privateKey }, 'ec-p256'), 'ERR_KEY_MISMATCH'],
    ['an issuer with pathLen 0', () => intermediate(interCa, 'ec-p256'), 'ERR_CHAIN_INVALID'],
    ['an issuer that is not a CA', async () => intermediate(await leafAsCa(), 'ec-p256'), 'ERR_CHAIN_INVALID'],
    ['a garbage issuer', () => intermediate({ ...rootCa, certificateDer: Buffer.from('garbage') }, 'ec-p256'), 'ERR_CERT_MALFORMED'],
  ];
  it.each(invalid)('rejects %s', async (_name, make, code) => {
    expect((await rejection(make())).code).toBe(code);
  });

  async function leafAsCa(): Promise<CaCertificate> {
    const leaf = opensslCert({ subject: '/CN=leaf', ext: LEAF_EXT, issuer: asIssuer(rootCa) });
    const privateKey = importPrivateKeyPem(leaf.keyPem);
    return { certificateDer: leaf.der, privateKey, publicKey: createPublicKey(privateKey) };
  }

  it('rejects an invalid trust domain with the SPIFFE error', async () => {
    await expect(createCaCertificate(spec({ kind: 'root', issuer: undefined, trustDomain: 'Example.org' }))).rejects.toMatchObject({
      code: 'ERR_SPIFFE_TRUST_DOMAIN',
    });
  });
});

describe('describeCertificate', () => {
  let issuer: Issued;
  beforeAll(() => {
    issuer = opensslCert({ subject: '/O=Example/CN=Example Root', ext: CA_EXT });
  });

  it('describes an openssl-made leaf', async () => {
    const serial = randomSerial();
    const leaf = opensslCert({
      subject: '/CN=leaf',
      ext: [...LEAF_EXT.slice(0, 3), `subjectAltName = URI:spiffe://${TD}/a, DNS:a.example.org, DNS:b.example.org`],
      issuer,
      serialHex: serial.toString('hex'),
    });
    const info = await describeCertificate(leaf.der);
    expect(info).toMatchObject({
      serialHex: serialToHex(serial),
      subject: 'CN=leaf',
      issuer: 'O=Example, CN=Example Root',
      isCa: false,
      pathLength: undefined,
      keyUsageCertSign: false,
      keyType: 'ec-p256',
      uris: [`spiffe://${TD}/a`],
      dnsNames: ['a.example.org', 'b.example.org'],
      selfSigned: false,
    });
    expect(info.authorityKeyId).toBe((await describeCertificate(issuer.der)).subjectKeyId);
    expect(await verifyIssuedBy(leaf.der, issuer.der)).toBe(true);
  });

  it("reports a key type meshca doesn't support as 'unsupported'", async () => {
    const keyPath = file('ed.pem', openssl(['genpkey', '-algorithm', 'ED25519']));
    const pem = openssl(['req', '-x509', '-new', '-key', keyPath, '-subj', '/CN=ed', '-days', '1']);
    const info = await describeCertificate(pemDecodeOne(pem, ['CERTIFICATE']));
    expect(info).toMatchObject({ keyType: 'unsupported', selfSigned: true });
  });

  const garbage: [string, () => Buffer][] = [
    ['empty input', () => Buffer.alloc(0)],
    ['random bytes', () => randomBytes(300)],
    ['a truncated certificate', () => issuer.der.subarray(0, issuer.der.length - 10)],
    ['a certificate with a trailing byte', () => Buffer.concat([issuer.der, Buffer.from([0])])],
    ['PEM text instead of DER', () => Buffer.from(issuer.pem)],
  ];
  it.each(garbage)('rejects %s with ERR_CERT_MALFORMED', async (_name, make) => {
    expect((await rejection(describeCertificate(make()))).code).toBe('ERR_CERT_MALFORMED');
    expect((await rejection(verifyIssuedBy(make(), issuer.der))).code).toBe('ERR_CERT_MALFORMED');
  });
});

// ---------------------------------------------------------------------------------------------

describe('validatePluginCa', () => {
  let extRoot: Issued; // the organisation's root
  let otherRoot: Issued; // an unrelated root
  let plugin: Issued; // meshca's CA directly under extRoot
  let extInter: Issued; // an intermediate under extRoot ...
  let deepPlugin: Issued; // ... and meshca's CA under it
  let narrowInter: Issued; // an intermediate with pathlen:0 ...
  let tooDeep: Issued; // ... wrongly issuing a CA
  let leaf: Issued;
  let noCertSign: Issued;
  beforeAll(() => {
    extRoot = opensslCert({ subject: '/O=Example/CN=Example Root', ext: CA_EXT, days: 3650 });
    otherRoot = opensslCert({ subject: '/O=Other/CN=Other Root', ext: CA_EXT, days: 3650 });
    const pluginExt = ['basicConstraints = critical,CA:TRUE,pathlen:0', CA_EXT[1]!, `subjectAltName = URI:spiffe://${TD}`];
    plugin = opensslCert({ subject: '/O=Example/CN=meshca plug-in', ext: pluginExt, issuer: extRoot });
    extInter = opensslCert({ subject: '/O=Example/CN=Example Issuing', ext: CA_EXT, issuer: extRoot });
    deepPlugin = opensslCert({ subject: '/O=Example/CN=meshca deep plug-in', ext: pluginExt, issuer: extInter });
    narrowInter = opensslCert({
      subject: '/O=Example/CN=Narrow',
      ext: ['basicConstraints = critical,CA:TRUE,pathlen:0', CA_EXT[1]!],
      issuer: extRoot,
    });
    tooDeep = opensslCert({ subject: '/O=Example/CN=Too deep', ext: pluginExt, issuer: narrowInter });
    leaf = opensslCert({ subject: '/CN=leaf', ext: LEAF_EXT, issuer: extRoot });
    noCertSign = opensslCert({
      subject: '/CN=no cert sign',
      ext: ['basicConstraints = critical,CA:TRUE', 'keyUsage = critical,digitalSignature'],
      issuer: extRoot,
    });
  });

  const files = (ca: Issued, chain: readonly Issued[], roots: readonly Issued[]): PluginCaFiles => ({
    caCert: ca.pem,
    caKey: ca.keyPem,
    certChain: chain.map((c) => c.pem).join(''),
    rootCert: roots.map((r) => r.pem).join(''),
  });

  interface Expected {
    readonly ca: Issued;
    readonly chain: readonly Issued[];
    readonly root: Issued;
    readonly extra: readonly Issued[];
  }
  const happy: [string, () => PluginCaFiles, () => Expected][] = [
    [
      'a self-signed plug-in root, Istio layout',
      () => files(extRoot, [extRoot], [extRoot]),
      () => ({ ca: extRoot, chain: [], root: extRoot, extra: [] }),
    ],
    [
      'a self-signed plug-in root, empty cert-chain.pem',
      () => files(extRoot, [], [extRoot]),
      () => ({ ca: extRoot, chain: [], root: extRoot, extra: [] }),
    ],
    [
      'an intermediate, cert-chain.pem = ca-cert + root (Istio)',
      () => files(plugin, [plugin, extRoot], [extRoot]),
      () => ({ ca: plugin, chain: [], root: extRoot, extra: [] }),
    ],
    [
      'an intermediate, cert-chain.pem = root only',
      () => files(plugin, [extRoot], [extRoot]),
      () => ({ ca: plugin, chain: [], root: extRoot, extra: [] }),
    ],
    [
      'a deep intermediate, cert-chain.pem including ca-cert',
      () => files(deepPlugin, [deepPlugin, extInter, extRoot], [extRoot]),
      () => ({ ca: deepPlugin, chain: [extInter], root: extRoot, extra: [] }),
    ],
    [
      'a deep intermediate, cert-chain.pem excluding ca-cert and root',
      () => files(deepPlugin, [extInter], [extRoot]),
      () => ({ ca: deepPlugin, chain: [extInter], root: extRoot, extra: [] }),
    ],
    [
      'root-cert.pem with two roots',
      () => files(deepPlugin, [deepPlugin, extInter], [otherRoot, extRoot]),
      () => ({ ca: deepPlugin, chain: [extInter], root: extRoot, extra: [otherRoot] }),
    ],
  ];
  it.each(happy)('accepts %s', async (_name, input, expected) => {
    const got = await validatePluginCa(input(), new Date());
    const want = expected();
    expect(got.caCertificateDer).toEqual(want.ca.der);
    expect(got.chainDers).toEqual(want.chain.map((c) => c.der));
    expect(got.rootDer).toEqual(want.root.der);
    expect(got.extraRootDers).toEqual(want.extra.map((c) => c.der));
    expect(privateKeyMatchesCertificate(got.privateKey, got.caCertificateDer)).toBe(true);
  });

  const sad: [string, () => PluginCaFiles, string, RegExp, Date?][] = [
    [
      'a key that does not match',
      () => ({ ...files(plugin, [plugin], [extRoot]), caKey: extRoot.keyPem }),
      'ERR_KEY_MISMATCH',
      /ca-key\.pem does not belong to ca-cert\.pem/,
    ],
    ['a non-CA certificate', () => files(leaf, [], [extRoot]), 'ERR_CHAIN_INVALID', /not a signing CA.*CA:TRUE/],
    ['a CA without keyCertSign', () => files(noCertSign, [], [extRoot]), 'ERR_CHAIN_INVALID', /keyCertSign/],
    ['a chain to an unknown root', () => files(plugin, [plugin], [otherRoot]), 'ERR_CHAIN_INVALID', /not in root-cert\.pem/],
    [
      'a missing intermediate',
      () => files(deepPlugin, [deepPlugin], [extRoot]),
      'ERR_CHAIN_INVALID',
      /not in root-cert\.pem.*cert-chain\.pem/,
    ],
    [
      'a chain in the wrong order',
      () => files(deepPlugin, [otherRoot, extInter], [extRoot, otherRoot]),
      'ERR_CHAIN_INVALID',
      /was not issued by/,
    ],
    ['a pathLen violation', () => files(tooDeep, [narrowInter], [extRoot]), 'ERR_CHAIN_INVALID', /pathLen 0/],
    [
      'a self-signed plug-in root missing from root-cert.pem',
      () => files(extRoot, [], [otherRoot]),
      'ERR_CHAIN_INVALID',
      /add it to root-cert\.pem/,
    ],
    [
      'an intermediate in root-cert.pem',
      () => files(deepPlugin, [], [extInter]),
      'ERR_CHAIN_INVALID',
      /root-cert\.pem must hold only root certificates/,
    ],
    [
      'an expired ca-cert',
      () => files(plugin, [plugin], [extRoot]),
      'ERR_CERT_EXPIRED',
      /ca-cert\.pem .* expired .* renew/,
      new Date(now.getTime() + 400 * DAY),
    ],
    ['an expired root', () => files(extRoot, [], [extRoot]), 'ERR_CERT_EXPIRED', /expired/, new Date(now.getTime() + 4000 * DAY)],
    [
      'a ca-cert not yet valid',
      () => files(plugin, [plugin], [extRoot]),
      'ERR_CERT_NOT_YET_VALID',
      /not valid before/,
      new Date(now.getTime() - DAY),
    ],
    ['an empty ca-cert.pem', () => ({ ...files(plugin, [], [extRoot]), caCert: '' }), 'ERR_PEM_MALFORMED', /ca-cert\.pem/],
    [
      'two certificates in ca-cert.pem',
      () => ({ ...files(plugin, [], [extRoot]), caCert: plugin.pem + extRoot.pem }),
      'ERR_PEM_MALFORMED',
      /exactly one certificate/,
    ],
    ['a garbage ca-key.pem', () => ({ ...files(plugin, [], [extRoot]), caKey: 'nope' }), 'ERR_PEM_MALFORMED', /ca-key\.pem/],
    ['an empty root-cert.pem', () => files(plugin, [], []), 'ERR_PEM_MALFORMED', /root-cert\.pem/],
  ];
  it.each(sad)('rejects %s', async (_name, input, code, message, at) => {
    const err = await rejection(validatePluginCa(input(), at ?? new Date()));
    expect(err.code).toBe(code);
    expect(err.message).toMatch(message);
  });
});

// ---------------------------------------------------------------------------------------------

describe.each<KeyType>(['ec-p256', 'ec-p384', 'rsa-2048'])('createCrl signed by a %s intermediate', (keyType) => {
  let rootCa: CaCertificate;
  let interCa: CaCertificate;
  let revoked: Issued;
  let good: Issued;
  let revokedSerial: string;
  let crl: Buffer;
  let paths: { crl: string; inter: string; chain: string };
  const thisUpdate = new Date(Math.floor(now.getTime() / 1000) * 1000);
  beforeAll(async () => {
    rootCa = await root('ec-p256');
    interCa = await intermediate(rootCa, keyType);
    const issuer = asIssuer(interCa);
    const serial = randomSerial();
    serial[serial[0] === 0 ? 1 : 0]! |= 0x80; // high bit set: DER needs the leading 0x00
    revokedSerial = serialToHex(serial);
    revoked = opensslCert({ subject: '/CN=revoked', ext: LEAF_EXT, issuer, serialHex: revokedSerial });
    good = opensslCert({ subject: '/CN=good', ext: LEAF_EXT, issuer });
    const entries: CrlEntry[] = [
      { serialHex: revokedSerial, revokedAt: thisUpdate, reason: 'keyCompromise' },
      { serialHex: '0A', revokedAt: thisUpdate, reason: 'unspecified' },
      { serialHex: '0b', revokedAt: thisUpdate, reason: 'superseded' },
      { serialHex: 'c', revokedAt: thisUpdate, reason: 'affiliationChanged' },
      { serialHex: '0d', revokedAt: thisUpdate, reason: 'cessationOfOperation' },
    ];
    crl = await createCrl({
      issuerCertificateDer: interCa.certificateDer,
      issuerKey: interCa.privateKey,
      crlNumber: 42,
      thisUpdate,
      nextUpdate: new Date(thisUpdate.getTime() + DAY),
      entries,
    });
    paths = {
      crl: file('crl.pem', pemEncode(crl, 'X509 CRL')),
      inter: file('inter.pem', certPem(interCa.certificateDer)),
      chain: file('chain.pem', certPem(rootCa.certificateDer) + certPem(interCa.certificateDer)),
    };
  });

  it('verifies with openssl against the issuer', () => {
    const result = opensslStatus(['crl', '-inform', 'DER', '-in', file('crl.der', crl), '-CAfile', paths.inter, '-noout', '-verify']);
    expect(result.output).toContain('verify OK');
    expect(result.ok).toBe(true);
  });

  it('is a v2 CRL with CRL number, AKI and reason codes', async () => {
    const out = openssl(['crl', '-in', paths.crl, '-noout', '-text']);
    const skid = (await describeCertificate(interCa.certificateDer)).subjectKeyId!;
    expect(out).toContain('Version 2 (0x1)');
    expect(out).toContain(`Signature Algorithm: ${SIGNATURE_ALGORITHM[keyType]}`);
    expect(out).toMatch(/X509v3 CRL Number: \n\s+42\n/);
    expect(out).toMatch(new RegExp(`X509v3 Authority Key Identifier: \\n\\s+(keyid:)?${skid.toUpperCase().match(/../g)!.join(':')}`));
    expect(out).toContain(`Issuer: O = meshca, OU = ${TD}, CN = meshca Intermediate CA`);
    expect(out).toMatch(
      new RegExp(
        `Serial Number: ${revokedSerial.toUpperCase()}\\n.*\\n\\s+CRL entry extensions:\\n\\s+X509v3 CRL Reason Code: \\n\\s+Key Compromise`,
      ),
    );
    expect(out).toMatch(/Serial Number: 0A\n\s+Revocation Date: [^\n]+\n\s+Serial Number: 0B/); // unspecified: no reason extension
    for (const reason of ['Superseded', 'Affiliation Changed', 'Cessation Of Operation']) expect(out).toContain(reason);
    expect(out).toMatch(/Next Update: /);
  });

  it('makes openssl reject the revoked leaf and accept the other', () => {
    const verify = (leafPath: string) => opensslStatus(['verify', '-crl_check', '-CRLfile', paths.crl, '-CAfile', paths.chain, leafPath]);
    const bad = verify(revoked.certPath);
    expect(bad.ok).toBe(false);
    expect(bad.output).toContain('certificate revoked');
    expect(verify(good.certPath).ok).toBe(true);
  });
});

describe('createCrl', () => {
  let ca: CaCertificate;
  let other: CaCertificate;
  beforeAll(async () => {
    ca = await root('ec-p256');
    other = await root('ec-p256');
  });
  const spec = (over: Partial<Parameters<typeof createCrl>[0]> = {}): Parameters<typeof createCrl>[0] => ({
    issuerCertificateDer: ca.certificateDer,
    issuerKey: ca.privateKey,
    crlNumber: 1,
    thisUpdate: now,
    nextUpdate: new Date(now.getTime() + DAY),
    entries: [],
    ...over,
  });

  it('makes an empty CRL signed by a root', async () => {
    const der = await createCrl(spec());
    const result = opensslStatus([
      'crl',
      '-inform',
      'DER',
      '-in',
      file('crl.der', der),
      '-CAfile',
      file('ca.pem', certPem(ca.certificateDer)),
      '-noout',
      '-verify',
      '-text',
    ]);
    expect(result.output).toContain('verify OK');
    expect(result.output).toContain('No Revoked Certificates');
  });

  const entry = (serialHex: string): CrlEntry => ({ serialHex, revokedAt: now, reason: 'unspecified' });
  const invalid: [string, () => Parameters<typeof createCrl>[0], string][] = [
    ['a negative CRL number', () => spec({ crlNumber: -1 }), 'ERR_CRL_SPEC_INVALID'],
    ['a fractional CRL number', () => spec({ crlNumber: 1.5 }), 'ERR_CRL_SPEC_INVALID'],
    ['nextUpdate not after thisUpdate', () => spec({ nextUpdate: now }), 'ERR_CRL_SPEC_INVALID'],
    ['a malformed serial', () => spec({ entries: [entry('xyz')] }), 'ERR_CRL_SPEC_INVALID'],
    ['a duplicate serial', () => spec({ entries: [entry('0a'), entry('A')] }), 'ERR_CRL_SPEC_INVALID'],
    ['a key that does not match the issuer', () => spec({ issuerKey: other.privateKey }), 'ERR_KEY_MISMATCH'],
    ['a garbage issuer certificate', () => spec({ issuerCertificateDer: Buffer.from('garbage') }), 'ERR_CERT_MALFORMED'],
  ];
  it.each(invalid)('rejects %s', async (_name, make, code) => {
    expect((await rejection(createCrl(make()))).code).toBe(code);
  });

  it('refuses an issuer whose KeyUsage lacks cRLSign', async () => {
    const noCrlSign = opensslCert({
      subject: '/CN=no crl sign',
      ext: ['basicConstraints = critical,CA:TRUE', 'keyUsage = critical,keyCertSign'],
    });
    const key: KeyObject = importPrivateKeyPem(noCrlSign.keyPem);
    expect((await rejection(createCrl(spec({ issuerCertificateDer: noCrlSign.der, issuerKey: key })))).code).toBe('ERR_CHAIN_INVALID');
  });
});
