import { execFileSync } from 'node:child_process';
import { constants, createPublicKey, generateKeyPairSync, sign, verify, type KeyObject } from 'node:crypto';
import { mkdtempSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { afterAll, beforeAll, describe, expect, it, vi } from 'vitest';
import { parseCsr, parseCsrDer, verifyCsrSignature, type CertificationRequest } from '../src/pki/csr.js';
import {
  encodeAscii,
  encodeBitString,
  encodeBoolean,
  encodeExplicit,
  encodeImplicit,
  encodeInteger,
  encodeNull,
  encodeOctetString,
  encodeOid,
  encodePrintableString,
  encodeSequence,
  encodeSet,
  encodeSmallInteger,
  encodeTlv,
  encodeUtf8String,
} from '../src/pki/der.js';
import { PkiError } from '../src/pki/errors.js';
import { nativeEcdsaUnavailable } from '../src/pki/native-ecdsa.js';
import { CsrVerifierPool, MAX_VERIFIER_BATCH, threadPoolCsrVerifier, type CsrVerifier } from '../src/pki/verify-pool.js';
import type { VerifierBatch } from '../src/pki/verify-worker.js';
import { WorkerClient } from '../src/workers/rpc.js';
import { pemEncode } from '../src/pki/pem.js';

import { x509 } from '../src/pki/x509.js';
import { prng } from './support/prng.js';

const dir = mkdtempSync(join(tmpdir(), 'meshca-csr-'));
afterAll(() => rmSync(dir, { recursive: true, force: true }));

const opensslBytes = (...args: string[]): Buffer => execFileSync('openssl', args, { cwd: dir, stdio: ['ignore', 'pipe', 'pipe'] });
const openssl = (...args: string[]): string => opensslBytes(...args).toString();

const OPENSSL_CONFIG = '[req]\ndistinguished_name = dn\n[dn]\n[dir_sect]\nCN = hello\n';

const KEYS = {
  p256: ['-algorithm', 'EC', '-pkeyopt', 'ec_paramgen_curve:P-256'],
  p384: ['-algorithm', 'EC', '-pkeyopt', 'ec_paramgen_curve:P-384'],
  p521: ['-algorithm', 'EC', '-pkeyopt', 'ec_paramgen_curve:P-521'],
  ed25519: ['-algorithm', 'ED25519'],
  rsa2048: ['-algorithm', 'RSA', '-pkeyopt', 'rsa_keygen_bits:2048'],
  rsa1024: ['-algorithm', 'RSA', '-pkeyopt', 'rsa_keygen_bits:1024'],
} as const;
type KeyName = keyof typeof KEYS;

const SPIFFE = 'spiffe://cluster.local/ns/a/sa/b';
const OID = { cn: '2.5.4.3', o: '2.5.4.10', san: '2.5.29.17', bc: '2.5.29.19' };

interface OpensslCase {
  readonly name: string;
  readonly key: KeyName;
  readonly subject: string;
  readonly extensions: readonly string[];
  readonly flags?: readonly string[];
  readonly expected: Partial<CertificationRequest> | { readonly error: string };
}

const PSS = ['-sigopt', 'rsa_padding_mode:pss'];

const OPENSSL_CASES: readonly OpensslCase[] = [
  {
    name: 'istio-agent style P-256',
    key: 'p256',
    subject: '/O=', // openssl drops the empty O, leaving an empty subject
    extensions: [`subjectAltName=critical,URI:${SPIFFE}`],
    expected: {
      keyAlgorithm: 'ec-p256',
      rsaModulusBits: undefined,
      signatureAlgorithm: 'ecdsa-sha256',
      subject: [],
      uris: [SPIFFE],
      dnsNames: [],
      ipAddresses: [],
      emails: [],
      otherSanCount: 0,
      sanCritical: true,
      requestsCa: false,
      extensionOids: [OID.san],
    },
  },
  {
    name: 'P-384 with SHA-384',
    key: 'p384',
    subject: '/',
    extensions: [`subjectAltName=URI:${SPIFFE}`],
    flags: ['-sha384'],
    expected: { keyAlgorithm: 'ec-p384', signatureAlgorithm: 'ecdsa-sha384', sanCritical: false },
  },
  {
    name: 'P-256 with SHA-512',
    key: 'p256',
    subject: '/',
    extensions: [`subjectAltName=URI:${SPIFFE}`],
    flags: ['-sha512'],
    expected: { keyAlgorithm: 'ec-p256', signatureAlgorithm: 'ecdsa-sha512' },
  },
  {
    name: 'RSA-2048',
    key: 'rsa2048',
    subject: '/',
    extensions: [`subjectAltName=critical,URI:${SPIFFE}`],
    expected: { keyAlgorithm: 'rsa', rsaModulusBits: 2048, signatureAlgorithm: 'rsa-pkcs1-sha256', uris: [SPIFFE] },
  },
  {
    name: 'RSA-1024 with SHA-384',
    key: 'rsa1024',
    subject: '/',
    extensions: [`subjectAltName=URI:${SPIFFE}`],
    flags: ['-sha384'],
    expected: { keyAlgorithm: 'rsa', rsaModulusBits: 1024, signatureAlgorithm: 'rsa-pkcs1-sha384' },
  },
  {
    name: 'RSA-2048 RSASSA-PSS, 32-byte salt',
    key: 'rsa2048',
    subject: '/',
    extensions: [`subjectAltName=URI:${SPIFFE}`],
    flags: [...PSS, '-sigopt', 'rsa_pss_saltlen:32'],
    expected: { signatureAlgorithm: 'rsa-pss', signatureHash: 'sha256', pssSaltLength: 32 },
  },
  {
    name: 'RSA-2048 RSASSA-PSS, SHA-512, maximum salt',
    key: 'rsa2048',
    subject: '/',
    extensions: [`subjectAltName=URI:${SPIFFE}`],
    flags: ['-sha512', ...PSS, '-sigopt', 'rsa_pss_saltlen:max'],
    expected: { signatureAlgorithm: 'rsa-pss', signatureHash: 'sha512', pssSaltLength: 256 - 64 - 2 },
  },
  {
    name: 'every SAN kind, CN, two URIs and CA:TRUE',
    key: 'p256',
    subject: '/CN=workload/O=acme',
    extensions: [
      'subjectAltName=URI:spiffe://td/a,URI:spiffe://td/b,DNS:a.example,DNS:b.example,IP:10.1.2.3,IP:2001:db8::1,' +
        'email:x@example.com,otherName:1.3.6.1.4.1.311.20.2.3;UTF8:foo@bar,RID:1.2.3.4,dirName:dir_sect',
      'basicConstraints=critical,CA:TRUE',
    ],
    expected: {
      subject: [
        { oid: OID.cn, value: 'workload' },
        { oid: OID.o, value: 'acme' },
      ],
      uris: ['spiffe://td/a', 'spiffe://td/b'],
      dnsNames: ['a.example', 'b.example'],
      ipAddresses: ['10.1.2.3', '2001:db8::1'],
      emails: ['x@example.com'],
      otherSanCount: 3,
      sanCritical: false,
      requestsCa: true,
      extensionOids: [OID.san, OID.bc],
    },
  },
  {
    name: 'UTF-8 subject',
    key: 'p256',
    subject: '/CN=héllo wörld',
    extensions: [],
    flags: ['-utf8'],
    expected: { subject: [{ oid: OID.cn, value: 'héllo wörld' }] },
  },
  {
    name: 'no extensions',
    key: 'p256',
    subject: '/',
    extensions: [],
    expected: { uris: [], sanCritical: undefined, requestsCa: false, extensionOids: [] },
  },
  {
    name: 'BasicConstraints CA:FALSE',
    key: 'rsa2048',
    subject: '/',
    extensions: ['basicConstraints=critical,CA:FALSE', 'keyUsage=digitalSignature'],
    expected: { requestsCa: false, sanCritical: undefined, extensionOids: [OID.bc, '2.5.29.15'] },
  },
  { name: 'Ed25519 key', key: 'ed25519', subject: '/', extensions: [], expected: { error: 'ERR_CSR_UNSUPPORTED_KEY' } },
  { name: 'P-521 key', key: 'p521', subject: '/', extensions: [], expected: { error: 'ERR_CSR_UNSUPPORTED_KEY' } },
];

const csrPem = new Map<string, string>();

beforeAll(() => {
  writeFileSync(join(dir, 'openssl.cnf'), OPENSSL_CONFIG);
  for (const [name, args] of Object.entries(KEYS)) openssl('genpkey', ...args, '-out', `${name}.key`);
  OPENSSL_CASES.forEach((c, i) => {
    const extensionArgs = c.extensions.flatMap((e) => ['-addext', e]);
    const out = `case${i}.csr`;
    openssl(
      'req',
      '-new',
      '-config',
      'openssl.cnf',
      '-key',
      `${c.key}.key`,
      '-subj',
      c.subject,
      ...(c.flags ?? []),
      ...extensionArgs,
      '-out',
      out,
    );
    csrPem.set(c.name, readFileSync(join(dir, out), 'utf8'));
  });
});

function expectPkiError(fn: () => unknown, code: string): void {
  let thrown: unknown;
  try {
    fn();
  } catch (err) {
    thrown = err;
  }
  expect(thrown).toBeInstanceOf(PkiError);
  expect((thrown as PkiError).code).toBe(code);
}

/** SANs as @peculiar/x509 reads them, for a differential check against our parser. */
function peculiarSans(pem: string): Record<string, string[]> {
  const request = new x509.Pkcs10CertificateRequest(pem);
  const out: Record<string, string[]> = { url: [], dns: [], ip: [], email: [] };
  const san = request.getExtension('2.5.29.17') as InstanceType<typeof x509.SubjectAlternativeNameExtension> | null;
  for (const name of san?.names.items ?? []) out[name.type]?.push(name.value);
  return out;
}

describe('parseCsr on openssl-generated requests', () => {
  it.each(OPENSSL_CASES.map((c) => [c.name, c] as const))('%s', async (_name, c) => {
    const pem = csrPem.get(c.name)!;
    if ('error' in c.expected) {
      expectPkiError(() => parseCsr(pem), c.expected.error);
      return;
    }
    const csr = parseCsr(pem);
    expect(csr).toMatchObject(c.expected);
    expect(await verifyCsrSignature(csr)).toBe(true);
    expect(peculiarSans(pem)).toEqual({ url: csr.uris, dns: csr.dnsNames, ip: csr.ipAddresses, email: csr.emails });
    const spkiFromOpenssl = opensslBytes('pkey', '-in', `${c.key}.key`, '-pubout', '-outform', 'DER');
    expect(csr.spkiDer.equals(spkiFromOpenssl)).toBe(true);
  });

  it('accepts the NEW CERTIFICATE REQUEST label', () => {
    const der = parseCsr(csrPem.get('RSA-2048')!).der;
    expect(parseCsr(pemEncode(der, 'NEW CERTIFICATE REQUEST')).der.equals(der)).toBe(true);
  });

  const tamperable = ['istio-agent style P-256', 'P-384 with SHA-384', 'RSA-2048', 'RSA-2048 RSASSA-PSS, 32-byte salt'];
  const tamperings: [string, (der: Buffer) => void][] = [
    ['last signature byte', (der) => void (der[der.length - 1]! ^= 0x01)],
    ['a byte of the signed URI', (der) => void (der[der.indexOf('cluster.local')]! ^= 0x20)],
  ];
  it.each(tamperable.flatMap((name) => tamperings.map(([what, tamper]) => [name, what, tamper] as const)))(
    '%s: tampered %s fails verification',
    async (name, _what, tamper) => {
      const der = Buffer.from(parseCsr(csrPem.get(name)!).der);
      tamper(der);
      let verdict: unknown;
      try {
        verdict = await verifyCsrSignature(parseCsrDer(der));
      } catch (err) {
        verdict = err;
      }
      expect(verdict === false || verdict instanceof PkiError).toBe(true);
    },
  );
});

describe('PEM framing', () => {
  const der = (): Buffer => parseCsr(csrPem.get('RSA-2048')!).der;
  const cases: [string, () => string, string][] = [
    ['no PEM at all', () => 'hello', 'ERR_PEM_MALFORMED'],
    ['two blocks', () => pemEncode(der(), 'CERTIFICATE REQUEST').repeat(2), 'ERR_PEM_MALFORMED'],
    ['wrong label', () => pemEncode(der(), 'CERTIFICATE'), 'ERR_PEM_MALFORMED'],
    ['garbage inside a valid block', () => pemEncode(Buffer.from('not der'), 'CERTIFICATE REQUEST'), 'ERR_CSR_MALFORMED'],
    ['empty block', () => '-----BEGIN CERTIFICATE REQUEST-----\n-----END CERTIFICATE REQUEST-----\n', 'ERR_CSR_MALFORMED'],
  ];
  it.each(cases)('%s', (_name, pem, code) => expectPkiError(() => parseCsr(pem()), code));
});

// --- Hand-built requests: shapes openssl will not produce. ---------------------------------

const ec = generateKeyPairSync('ec', { namedCurve: 'P-256' });
const p384 = generateKeyPairSync('ec', { namedCurve: 'P-384' });
const P384 = encodeOid('1.3.132.0.34');
const rsa = generateKeyPairSync('rsa', { modulusLength: 2048 });
const spkiOf = (key: KeyObject): Buffer => key.export({ type: 'spki', format: 'der' });
const ALG = {
  ecdsaSha256: encodeSequence(encodeOid('1.2.840.10045.4.3.2')),
  ecdsaSha384: encodeSequence(encodeOid('1.2.840.10045.4.3.3')),
  rsaSha256: encodeSequence(encodeOid('1.2.840.113549.1.1.11'), encodeNull()),
};
const hashAlg = (oid: string): Buffer => encodeSequence(encodeOid(oid), encodeNull());
const SHA256 = '2.16.840.1.101.3.4.2.1';
const pssAlg = (hash: string, mgfHash: string, salt: number): Buffer =>
  encodeSequence(
    encodeOid('1.2.840.113549.1.1.10'),
    encodeSequence(
      encodeExplicit(0, hashAlg(hash)),
      encodeExplicit(1, encodeSequence(encodeOid('1.2.840.113549.1.1.8'), hashAlg(mgfHash))),
      encodeExplicit(2, encodeSmallInteger(salt)),
    ),
  );

const extension = (oid: string, value: Buffer, critical?: boolean): Buffer =>
  encodeSequence(encodeOid(oid), ...(critical === undefined ? [] : [encodeBoolean(critical)]), encodeOctetString(value));
const extensionRequest = (...extensions: Buffer[]): Buffer =>
  encodeSequence(encodeOid('1.2.840.113549.1.9.14'), encodeSet(encodeSequence(...extensions)));
const attributes = (...attrs: Buffer[]): Buffer => encodeImplicit(0, Buffer.concat(attrs), true);
const sanValue = (...names: Buffer[]): Buffer => encodeSequence(...names);
const uriName = (uri: string): Buffer => encodeAscii(uri, 0x86);
const ipName = (hex: string): Buffer => encodeImplicit(7, Buffer.from(hex, 'hex'));
const rdn = (oid: string, value: Buffer): Buffer => encodeSet(encodeSequence(encodeOid(oid), value));
const SPIFFE_SAN = extension(OID.san, sanValue(uriName(SPIFFE)), true);

interface Handmade {
  readonly version?: number;
  readonly subject?: readonly Buffer[];
  readonly spki?: Buffer;
  readonly attrs?: Buffer | null;
  readonly algorithm?: Buffer;
  readonly signer?: (tbs: Buffer) => Buffer;
  readonly trailing?: Buffer;
}

/** A signed CSR from parts; defaults make a valid P-256 request for SPIFFE. */
function handmade(parts: Handmade = {}): Buffer {
  const info = encodeSequence(
    encodeSmallInteger(parts.version ?? 0),
    encodeSequence(...(parts.subject ?? [])),
    parts.spki ?? spkiOf(ec.publicKey),
    ...(parts.attrs === null ? [] : [parts.attrs ?? attributes(extensionRequest(SPIFFE_SAN))]),
  );
  const signature = (parts.signer ?? ((tbs) => sign('sha256', tbs, ec.privateKey)))(info);
  const csr = encodeSequence(info, parts.algorithm ?? ALG.ecdsaSha256, encodeBitString(signature));
  return parts.trailing ? Buffer.concat([csr, parts.trailing]) : csr;
}

const rsaSigned = { spki: spkiOf(rsa.publicKey), algorithm: ALG.rsaSha256, signer: (tbs: Buffer) => sign('sha256', tbs, rsa.privateKey) };

/** An RSA SPKI with the given modulus size and exponent; never used to verify anything. */
function rsaSpki(modulusBytes: number, exponent: Buffer): Buffer {
  const modulus = Buffer.concat([Buffer.from([0x00, 0xc0]), Buffer.alloc(modulusBytes - 1, 0x5a)]);
  const key = encodeSequence(encodeInteger(modulus), encodeInteger(exponent));
  return encodeSequence(encodeSequence(encodeOid('1.2.840.113549.1.1.1'), encodeNull()), encodeBitString(key));
}

function ecSpki(point: Buffer, params: Buffer = encodeOid('1.2.840.10045.3.1.7')): Buffer {
  return encodeSequence(encodeSequence(encodeOid('1.2.840.10045.2.1'), params), encodeBitString(point));
}

describe('parseCsrDer on hand-built requests', () => {
  type Outcome = Partial<CertificationRequest> | string;
  const cases: [string, () => Buffer, Outcome][] = [
    [
      'empty O (istio-agent)',
      () => handmade({ subject: [rdn(OID.o, encodePrintableString(''))] }),
      { subject: [{ oid: OID.o, value: '' }] },
    ],
    [
      'non-string subject value',
      () => handmade({ subject: [rdn('1.2.3.4', encodeSmallInteger(5))] }),
      { subject: [{ oid: '1.2.3.4', value: '#020105' }] },
    ],
    [
      'multi-valued RDN',
      () =>
        handmade({
          subject: [
            encodeSet(encodeSequence(encodeOid(OID.cn), encodeUtf8String('a')), encodeSequence(encodeOid(OID.o), encodeUtf8String('b'))),
          ],
        }),
      {
        subject: [
          { oid: OID.cn, value: 'a' },
          { oid: OID.o, value: 'b' },
        ],
      },
    ],
    ['no attributes field', () => handmade({ attrs: null }), { uris: [], sanCritical: undefined }],
    [
      'unrelated attribute',
      () =>
        handmade({
          attrs: attributes(
            encodeSequence(encodeOid('1.2.840.113549.1.9.7'), encodeSet(encodeUtf8String('pw'))),
            extensionRequest(SPIFFE_SAN),
          ),
        }),
      { uris: [SPIFFE] },
    ],
    [
      'explicit critical FALSE',
      () => handmade({ attrs: attributes(extensionRequest(extension(OID.san, sanValue(uriName(SPIFFE)), false))) }),
      { sanCritical: false },
    ],
    [
      'cA FALSE with pathLen',
      () =>
        handmade({ attrs: attributes(extensionRequest(extension(OID.bc, encodeSequence(encodeBoolean(false), encodeSmallInteger(3))))) }),
      { requestsCa: false },
    ],
    [
      'pathLen only',
      () => handmade({ attrs: attributes(extensionRequest(extension(OID.bc, encodeSequence(encodeSmallInteger(0))))) }),
      { requestsCa: false },
    ],
    [
      'RSASSA-PSS built by node',
      () =>
        handmade({
          ...rsaSigned,
          algorithm: pssAlg(SHA256, SHA256, 20),
          signer: (tbs) => sign('sha256', tbs, { key: rsa.privateKey, padding: constants.RSA_PKCS1_PSS_PADDING, saltLength: 20 }),
        }),
      { signatureAlgorithm: 'rsa-pss', pssSaltLength: 20 },
    ],
    ['version 1', () => handmade({ version: 1 }), 'ERR_CSR_MALFORMED'],
    ['trailing bytes after the CSR', () => handmade({ trailing: Buffer.from([0]) }), 'ERR_CSR_MALFORMED'],
    ['duplicate SAN extension', () => handmade({ attrs: attributes(extensionRequest(SPIFFE_SAN, SPIFFE_SAN)) }), 'ERR_CSR_MALFORMED'],
    [
      'duplicate extensionRequest',
      () => handmade({ attrs: attributes(extensionRequest(SPIFFE_SAN), extensionRequest(SPIFFE_SAN)) }),
      'ERR_CSR_MALFORMED',
    ],
    ['empty RDN', () => handmade({ subject: [encodeSet()] }), 'ERR_CSR_MALFORMED'],
    [
      'IP SAN of 5 bytes',
      () => handmade({ attrs: attributes(extensionRequest(extension(OID.san, sanValue(ipName('0102030405'))))) }),
      'ERR_CSR_MALFORMED',
    ],
    ['empty SAN', () => handmade({ attrs: attributes(extensionRequest(extension(OID.san, sanValue()))) }), 'ERR_CSR_MALFORMED'],
    [
      'unknown GeneralName [9]',
      () => handmade({ attrs: attributes(extensionRequest(extension(OID.san, sanValue(encodeImplicit(9, Buffer.from('x')))))) }),
      'ERR_CSR_MALFORMED',
    ],
    [
      'SAN value with trailing bytes',
      () => handmade({ attrs: attributes(extensionRequest(extension(OID.san, Buffer.concat([sanValue(uriName(SPIFFE)), encodeNull()])))) }),
      'ERR_CSR_MALFORMED',
    ],
    [
      'non-ASCII URI',
      () => handmade({ attrs: attributes(extensionRequest(extension(OID.san, sanValue(encodeTlv(0x86, Buffer.from('spiffe://td/é')))))) }),
      'ERR_CSR_MALFORMED',
    ],
    [
      'BasicConstraints with a stray field',
      () => handmade({ attrs: attributes(extensionRequest(extension(OID.bc, encodeSequence(encodeNull())))) }),
      'ERR_CSR_MALFORMED',
    ],
    [
      'BOOLEAN critical 0x01',
      () =>
        handmade({
          attrs: attributes(
            extensionRequest(
              encodeSequence(encodeOid(OID.san), encodeTlv(1, Buffer.from([1])), encodeOctetString(sanValue(uriName(SPIFFE)))),
            ),
          ),
        }),
      'ERR_CSR_MALFORMED',
    ],
    [
      'ECDSA algorithm with NULL parameters',
      () => handmade({ algorithm: encodeSequence(encodeOid('1.2.840.10045.4.3.2'), encodeNull()) }),
      'ERR_CSR_MALFORMED',
    ],
    ['EC point of the wrong length', () => handmade({ spki: ecSpki(Buffer.alloc(64, 4)) }), 'ERR_CSR_MALFORMED'],
    ['RSA key signed as ECDSA', () => handmade({ ...rsaSigned, algorithm: ALG.ecdsaSha256 }), 'ERR_CSR_UNSUPPORTED_SIGNATURE'],
    [
      'sha1WithRSAEncryption',
      () => handmade({ ...rsaSigned, algorithm: encodeSequence(encodeOid('1.2.840.113549.1.1.5'), encodeNull()) }),
      'ERR_CSR_UNSUPPORTED_SIGNATURE',
    ],
    [
      'RSASSA-PSS with SHA-1 defaults',
      () => handmade({ ...rsaSigned, algorithm: encodeSequence(encodeOid('1.2.840.113549.1.1.10'), encodeSequence()) }),
      'ERR_CSR_UNSUPPORTED_SIGNATURE',
    ],
    [
      'RSASSA-PSS with MGF1-SHA-1',
      () => handmade({ ...rsaSigned, algorithm: pssAlg(SHA256, '1.3.14.3.2.26', 32) }),
      'ERR_CSR_UNSUPPORTED_SIGNATURE',
    ],
    ['EC key on an implicit curve', () => handmade({ spki: ecSpki(Buffer.alloc(65, 4), encodeNull()) }), 'ERR_CSR_UNSUPPORTED_KEY'],
    [
      'RSA exponent 2^40+1',
      () => handmade({ ...rsaSigned, spki: rsaSpki(256, Buffer.from('010000000001', 'hex')) }),
      'ERR_CSR_UNSUPPORTED_KEY',
    ],
    ['even RSA exponent', () => handmade({ ...rsaSigned, spki: rsaSpki(256, Buffer.from([4])) }), 'ERR_CSR_UNSUPPORTED_KEY'],
    [
      '16384-bit RSA modulus',
      () => handmade({ ...rsaSigned, spki: rsaSpki(2048, Buffer.from('010001', 'hex')) }),
      'ERR_CSR_UNSUPPORTED_KEY',
    ],
    [
      'DSA key',
      () => handmade({ spki: encodeSequence(encodeSequence(encodeOid('1.2.840.10040.4.1')), encodeBitString(Buffer.from([2, 1, 1]))) }),
      'ERR_CSR_UNSUPPORTED_KEY',
    ],
  ];
  it.each(cases)('%s', async (_name, build, outcome) => {
    const der = build();
    if (typeof outcome === 'string') {
      expectPkiError(() => parseCsrDer(der), outcome);
      return;
    }
    const csr = parseCsrDer(der);
    expect(csr).toMatchObject(outcome);
    expect(await verifyCsrSignature(csr)).toBe(true);
  });

  it('reports an unusual RSA modulus size by its exact bit length', () => {
    expect(parseCsrDer(handmade({ ...rsaSigned, spki: rsaSpki(385, Buffer.from('010001', 'hex')) })).rsaModulusBits).toBe(3080);
  });

  it.each([
    ['00000000000000000000000000000000', '::'],
    ['00000000000000000000000000000001', '::1'],
    ['00010000000000000000000000000000', '1::'],
    ['20010db8000000000001000000000001', '2001:db8::1:0:0:1'],
    ['20010db8000000010001000100010001', '2001:db8:0:1:1:1:1:1'],
    ['fe800000000000000000000000ab0cde', 'fe80::ab:cde'],
    ['00000000000000000000ffffc0000201', '::ffff:c000:201'],
    ['c0000201', '192.0.2.1'],
  ])('formats IP SAN %s as %s', (hex, text) => {
    const csr = parseCsrDer(handmade({ attrs: attributes(extensionRequest(extension(OID.san, sanValue(ipName(hex))))) }));
    expect(csr.ipAddresses).toEqual([text]);
  });

  // Every way the server can check a CSR signature: node:crypto's libuv pool, the event loop
  // (--verify-threads 0) and a verifier thread, each through node:crypto and the native addon
  // (test/pki-native-ecdsa.test.ts fails in CI when the addon is missing).
  const native = nativeEcdsaUnavailable() === undefined;
  const pools = [
    new CsrVerifierPool(0),
    new CsrVerifierPool(1),
    ...(native ? [new CsrVerifierPool(0, 'native'), new CsrVerifierPool(1, 'native')] : []),
  ];
  const [onLoop, inThread, nativeOnLoop, nativeInThread] = pools;
  afterAll(() => Promise.all(pools.map((p) => p.close())));
  const through = (pool: CsrVerifierPool | undefined) => (csr: CertificationRequest) => pool!.verify(csr);
  // The same cases through signerFor: a valid CSR yields the issuer's signature over the TBS, an
  // invalid one ERR_CSR_SIGNATURE_INVALID (read as false) and no signature.
  const issuer = generateKeyPairSync('ec', { namedCurve: 'P-256' });
  const tbs = Buffer.from('a TBSCertificate stand-in');
  const thenSigning = (verifier: CsrVerifier | undefined) => async (csr: CertificationRequest) => {
    const signature = await verifier!
      .signerFor(csr)('sha256', tbs, issuer.privateKey)
      .catch((e: unknown) => (e instanceof PkiError && e.code === 'ERR_CSR_SIGNATURE_INVALID' ? undefined : Promise.reject(e)));
    if (signature) expect(verify('sha256', tbs, issuer.publicKey, signature)).toBe(true);
    return signature !== undefined;
  };
  describe.each([
    ['the libuv pool', verifyCsrSignature],
    ['the libuv pool, then signing there', thenSigning(threadPoolCsrVerifier)],
    ['the event loop', through(onLoop)],
    ['the event loop, then signing on the libuv pool', thenSigning(onLoop)],
    ['a verifier thread', through(inThread)],
    ['a verifier thread, then signing in it', thenSigning(inThread)],
    ...(native
      ? ([
          ['the event loop, natively', through(nativeOnLoop)],
          ['a verifier thread, natively', through(nativeInThread)],
          ['a verifier thread, natively, then signing in it', thenSigning(nativeInThread)],
        ] as const)
      : []),
  ] as const)('signature check on %s', (_where, check) => {
    it('accepts a valid signature', async () => {
      expect(await check(parseCsrDer(handmade()))).toBe(true);
    });

    it('rejects an off-curve EC point with ERR_CSR_UNSUPPORTED_KEY', async () => {
      const point = Buffer.from(spkiOf(ec.publicKey).subarray(-65));
      point[64]! ^= 1;
      const csr = parseCsrDer(handmade({ spki: ecSpki(point) }));
      await expect(check(csr)).rejects.toMatchObject({ code: 'ERR_CSR_UNSUPPORTED_KEY' });
    });

    it('verifies a compressed EC point through the SPKI fallback', async () => {
      const jwk = ec.publicKey.export({ format: 'jwk' });
      const y = Buffer.from(jwk.y!, 'base64url');
      const point = Buffer.concat([Buffer.from([y[31]! & 1 ? 3 : 2]), Buffer.from(jwk.x!, 'base64url')]);
      const csr = parseCsrDer(handmade({ spki: ecSpki(point) }));
      expect(await check(csr)).toBe(true);
    });

    it('returns false for a signature made by a different key', async () => {
      const other = generateKeyPairSync('ec', { namedCurve: 'P-256' });
      const csr = parseCsrDer(handmade({ signer: (tbs) => sign('sha256', tbs, other.privateKey) }));
      expect(await check(csr)).toBe(false);
    });

    it('checks RSA signatures too', async () => {
      const csr = parseCsrDer(handmade(rsaSigned));
      expect(await check(csr)).toBe(true);
    });

    it('checks P-384 signatures, and refuses a P-384 point off the curve', async () => {
      const point = spkiOf(p384.publicKey).subarray(-97);
      const signed = (spki: Buffer) => ({
        spki,
        algorithm: ALG.ecdsaSha384,
        signer: (tbs: Buffer) => sign('sha384', tbs, p384.privateKey),
      });
      expect(await check(parseCsrDer(handmade(signed(ecSpki(point, P384)))))).toBe(true);
      const offCurve = Buffer.from(point);
      offCurve[96]! ^= 1;
      await expect(check(parseCsrDer(handmade(signed(ecSpki(offCurve, P384)))))).rejects.toMatchObject({ code: 'ERR_CSR_UNSUPPORTED_KEY' });
    });
  });
  it.each([['a verifier thread', inThread], ...(native ? ([['a verifier thread, natively', nativeInThread]] as const) : [])] as const)(
    "signs one turn's CSRs for several issuers on %s, in slices of MAX_VERIFIER_BATCH, each with its own key, and skips the altered CSRs",
    async (_where, pool) => {
      const issuers = [
        generateKeyPairSync('ec', { namedCurve: 'P-256' }),
        generateKeyPairSync('ec', { namedCurve: 'P-384' }),
        generateKeyPairSync('rsa', { modulusLength: 2048 }),
      ];
      const forged = parseCsrDer(
        handmade({ signer: (data) => sign('sha256', data, generateKeyPairSync('ec', { namedCurve: 'P-256' }).privateKey) }),
      );
      // One forgery in each slice, at different offsets, so a result landing in the wrong place shows.
      const forgeries = new Set([7, MAX_VERIFIER_BATCH, 2 * MAX_VERIFIER_BATCH + 5]);
      const count = 2 * MAX_VERIFIER_BATCH + 8;
      const csrs = Array.from({ length: count }, (_, i) => (forgeries.has(i) ? forged : parseCsrDer(handmade())));
      const sent = vi.spyOn(WorkerClient.prototype, 'call');
      // Issued in one event-loop turn: they leave for the thread together, in slices.
      const outcomes = await Promise.allSettled(
        csrs.map((csr, i) => pool!.signerFor(csr)('sha256', Buffer.from(`tbs ${i}`), issuers[i % 3]!.privateKey)),
      );
      const slices = sent.mock.calls.map(([batch]) => (batch as VerifierBatch).items.length);
      sent.mockRestore();
      expect(slices).toEqual([MAX_VERIFIER_BATCH, MAX_VERIFIER_BATCH, 8]);
      outcomes.forEach((outcome, i) => {
        if (forgeries.has(i)) return expect(outcome).toMatchObject({ status: 'rejected', reason: { code: 'ERR_CSR_SIGNATURE_INVALID' } });
        expect(outcome.status).toBe('fulfilled');
        const signature = (outcome as PromiseFulfilledResult<Buffer>).value;
        expect(verify('sha256', Buffer.from(`tbs ${i}`), createPublicKey(issuers[i % 3]!.privateKey), signature)).toBe(true);
      });
    },
  );
});

describe('hostile input', () => {
  type Mutation = (der: Buffer, rand: (n: number) => number) => Buffer;
  const MUTATIONS: Mutation[] = [
    (d, rand) => ((d[rand(d.length)]! ^= 1 << rand(8)), d), // bit flip
    (d, rand) => d.subarray(0, rand(d.length)), // truncation
    (d, rand) => ((d[rand(d.length)] = 0x80 | rand(6)), d), // length-form lie
    (d, rand) => {
      if (d.length < 6) return d;
      const at = rand(d.length - 5);
      d[at] = 0x84;
      d.writeUInt32BE(rand(0x7fffffff) * 2, at + 1);
      return d;
    }, // huge length
    (d, rand) => ((d[rand(d.length)] = rand(256)), d), // random byte
    (d, rand) => Buffer.concat([d.subarray(0, rand(d.length)), d.subarray(rand(d.length))]), // splice
  ];

  /** Where the input ended up; anything but a PkiError or a boolean verdict fails the test. */
  async function expectOnlyPkiErrors(der: Buffer): Promise<'rejected' | 'verified' | 'forged'> {
    let csr: CertificationRequest;
    try {
      csr = parseCsrDer(der);
    } catch (err) {
      if (!(err instanceof PkiError)) throw err;
      return 'rejected';
    }
    try {
      return (await verifyCsrSignature(csr)) ? 'verified' : 'forged';
    } catch (err) {
      if (!(err instanceof PkiError)) throw err;
      return 'rejected';
    }
  }

  it('throws only PkiError for 2000 deterministic mutations, without hanging', async () => {
    const corpus: Buffer[] = [...csrPem.values()].map((pem) => Buffer.from(pem.split('-----')[2]!.replace(/\s+/g, ''), 'base64'));
    corpus.push(handmade(), handmade(rsaSigned));
    const rand = prng(20240611);
    const started = Date.now();
    const outcomes = { rejected: 0, verified: 0, forged: 0 };
    for (let i = 0; i < 2000; i++) {
      let der: Buffer = Buffer.from(corpus[rand(corpus.length)]!);
      for (let k = 0; k <= rand(3); k++) der = Buffer.from(MUTATIONS[rand(MUTATIONS.length)]!(der, rand));
      const outcome = await expectOnlyPkiErrors(der);
      outcomes[outcome]++;
      // Only a mutation that changed nothing may still verify: no malleable encodings accepted.
      if (outcome === 'verified') expect(corpus.some((original) => original.equals(der))).toBe(true);
    }
    expect(Date.now() - started).toBeLessThan(20_000);
    // The mutations must reach the signature check too, not only the DER framing.
    expect(outcomes.rejected).toBeGreaterThan(500);
    expect(outcomes.forged).toBeGreaterThan(50);
  });

  it.each([
    ['empty input', Buffer.alloc(0)],
    ['64 KiB of garbage', Buffer.from(Array.from({ length: 64 * 1024 }, (_, i) => (i * 7919) & 0xff))],
    ['64 KiB of SEQUENCE headers', Buffer.alloc(64 * 1024, 0x30)],
    ['deeply nested SEQUENCEs', Buffer.concat([Buffer.from('3084', 'hex'), Buffer.alloc(4, 0xff), Buffer.alloc(60_000, 0x30)])],
    ['over the size limit', Buffer.alloc(64 * 1024 + 1, 0x30)],
  ])('%s', async (_name, der) => {
    expectPkiError(() => parseCsrDer(der), 'ERR_CSR_MALFORMED');
    await expectOnlyPkiErrors(der);
  });

  it('rejects huge or garbage PEM text with PkiError', () => {
    for (const text of [
      '',
      '-----BEGIN CERTIFICATE REQUEST-----\n' + 'A'.repeat(200_000) + '\n-----END CERTIFICATE REQUEST-----\n',
      'x'.repeat(65536),
    ]) {
      expect(() => parseCsr(text)).toThrow(PkiError);
    }
  });
});
