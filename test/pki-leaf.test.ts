import { execFileSync } from 'node:child_process';
import { X509Certificate, createHash, createPrivateKey, generateKeyPairSync, type KeyObject } from 'node:crypto';
import { mkdtempSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { DerReader, Tag } from '../src/pki/der.js';
import { PkiError } from '../src/pki/errors.js';
import { LeafTemplate, type LeafRequest } from '../src/pki/leaf.js';
import { pemDecodeOne, pemEncode } from '../src/pki/pem.js';
import { randomSerial, serialToHex, timeOrderedSerial } from '../src/pki/serial.js';

import { inspect } from 'node:util';
import { x509 } from '../src/pki/x509.js';
import { prng } from './support/prng.js';

const dir = mkdtempSync(join(tmpdir(), 'meshca-leaf-'));
afterAll(() => rmSync(dir, { recursive: true, force: true }));
const openssl = (...args: string[]): string => execFileSync('openssl', args, { cwd: dir, stdio: ['ignore', 'pipe', 'pipe'] }).toString();

const KEY_ARGS = {
  p256: ['-algorithm', 'EC', '-pkeyopt', 'ec_paramgen_curve:P-256'],
  p384: ['-algorithm', 'EC', '-pkeyopt', 'ec_paramgen_curve:P-384'],
  rsa2048: ['-algorithm', 'RSA', '-pkeyopt', 'rsa_keygen_bits:2048'],
} as const;
type KeyType = keyof typeof KEY_ARGS;
const KEY_TYPES = Object.keys(KEY_ARGS) as KeyType[];

interface Issuer {
  readonly name: string;
  readonly keyType: KeyType;
  readonly key: KeyObject;
  readonly certFile: string;
  readonly certDer: Buffer;
  /** OpenSSL's strict mode insists on an issuer SKID, which the no-SKID CA lacks by design. */
  readonly strictFlags: readonly string[];
  /** SKID as openssl prints it (colon hex), or SHA-1 of the key bits for the no-SKID CA. */
  readonly keyIdHex: string;
  readonly template: LeafTemplate;
}

interface SubjectKey {
  readonly keyType: KeyType;
  readonly spkiDer: Buffer;
  readonly keyBits: Buffer;
}

const issuers = new Map<string, Issuer>();
const subjectKeys = new Map<KeyType, SubjectKey>();
const SPIFFE = 'spiffe://cluster.local/ns/default/sa/httpbin';

/** subjectPublicKey BIT STRING value of an SPKI (what key identifiers hash). */
function keyBitsOf(spkiDer: Buffer): Buffer {
  const r = new DerReader(spkiDer);
  return r.bitString(r.children(r.top())[1]!, 'key');
}

const sha1Hex = (bytes: Buffer): string => createHash('sha1').update(bytes).digest('hex');

function createIssuer(name: string, keyType: KeyType, extraExtensions: readonly string[]): Issuer {
  openssl('genpkey', ...KEY_ARGS[keyType], '-out', `${name}.key`);
  const extensions = ['basicConstraints=critical,CA:TRUE', 'keyUsage=critical,keyCertSign,cRLSign', ...extraExtensions];
  openssl(
    'req',
    '-x509',
    '-new',
    '-config',
    'openssl.cnf',
    '-key',
    `${name}.key`,
    '-subj',
    `/O=meshca/CN=${name}`,
    '-days',
    '3650',
    ...extensions.flatMap((e) => ['-addext', e]),
    '-out',
    `${name}.pem`,
  );
  const certDer = pemDecodeOne(readFileSync(join(dir, `${name}.pem`), 'utf8'), ['CERTIFICATE']);
  const key = createPrivateKey(readFileSync(join(dir, `${name}.key`)));
  const skidText = openssl('x509', '-in', `${name}.pem`, '-noout', '-ext', 'subjectKeyIdentifier');
  const skid = /Identifier: *\n\s*([0-9A-F:]+)/.exec(skidText)?.[1]?.replaceAll(':', '').toLowerCase();
  const spki = new X509Certificate(certDer).publicKey.export({ type: 'spki', format: 'der' });
  const keyIdHex = skid ?? sha1Hex(keyBitsOf(spki));
  const strictFlags = skid === undefined ? [] : ['-x509_strict'];
  return { name, keyType, key, certFile: `${name}.pem`, certDer, strictFlags, keyIdHex, template: LeafTemplate.create(certDer, key) };
}

beforeAll(() => {
  writeFileSync(join(dir, 'openssl.cnf'), '[req]\ndistinguished_name = dn\n[dn]\n');
  for (const keyType of KEY_TYPES) issuers.set(keyType, createIssuer(`ca-${keyType}`, keyType, []));
  issuers.set('no-skid', createIssuer('ca-no-skid', 'p256', ['subjectKeyIdentifier=none', 'authorityKeyIdentifier=none']));
  const generated = {
    p256: generateKeyPairSync('ec', { namedCurve: 'P-256' }),
    p384: generateKeyPairSync('ec', { namedCurve: 'P-384' }),
    rsa2048: generateKeyPairSync('rsa', { modulusLength: 2048 }),
  };
  for (const keyType of KEY_TYPES) {
    const spkiDer = generated[keyType].publicKey.export({ type: 'spki', format: 'der' });
    subjectKeys.set(keyType, { keyType, spkiDer, keyBits: keyBitsOf(spkiDer) });
  }
});

const HOUR = 3_600_000;

function leafRequest(subject: SubjectKey, overrides: Partial<LeafRequest> = {}): LeafRequest {
  const notBefore = new Date(Math.floor(Date.now() / 1000) * 1000 - 60_000);
  return {
    serial: randomSerial(),
    notBefore,
    notAfter: new Date(notBefore.getTime() + 24 * HOUR),
    spkiDer: subject.spkiDer,
    uris: [SPIFFE],
    keyEncipherment: subject.keyType === 'rsa2048',
    ...overrides,
  };
}

const writeLeaf = (file: string, der: Buffer): string => (writeFileSync(join(dir, file), pemEncode(der, 'CERTIFICATE')), file);
/** @peculiar/x509 wants ArrayBuffer-backed bytes. */
const peculiarCertificate = (der: Buffer) => new x509.X509Certificate(new Uint8Array(der));
const normalizeSerial = (hex: string): string => hex.toLowerCase().replace(/^0+(?=.)/, '');

/** The validity element tags, straight from the DER. */
function validityTags(der: Buffer): number[] {
  const r = new DerReader(der, 'ERR_CERT_MALFORMED');
  const tbs = r.children(r.children(r.top())[0]!);
  return r.children(tbs[4]!).map((el) => el.tag);
}

const expectedTimeTag = (date: Date): number => (date.getUTCFullYear() < 2050 ? Tag.UTC_TIME : Tag.GENERALIZED_TIME);

// Exact DER of the constant extensions (the X509-SVID profile, docs/architecture.md); KU must be a minimal named-bit BIT STRING.
const EXTENSION_BYTES = {
  basicConstraints: '300c0603551d130101ff04023000',
  keyUsageSign: '300e0603551d0f0101ff040403020780',
  keyUsageSignEncipher: '300e0603551d0f0101ff0404030205a0',
  extKeyUsage: '301d0603551d250416301406082b0601050507030106082b06010505070302',
};

describe('LeafTemplate against openssl and @peculiar/x509', () => {
  const combos = [...KEY_TYPES, 'no-skid'].flatMap((issuer) => KEY_TYPES.map((subject) => [issuer, subject] as const));

  it.each(combos)('issuer %s, subject key %s', async (issuerName, subjectType) => {
    const issuer = issuers.get(issuerName)!;
    const subject = subjectKeys.get(subjectType)!;
    const request = leafRequest(subject);
    const der = await issuer.template.sign(request);
    const file = writeLeaf(`leaf-${issuerName}-${subjectType}.pem`, der);

    for (const purpose of ['sslclient', 'sslserver']) {
      expect(openssl('verify', ...issuer.strictFlags, '-purpose', purpose, '-CAfile', issuer.certFile, file).trim()).toBe(`${file}: OK`);
    }
    const text = openssl('x509', '-in', file, '-noout', '-text');
    const rsaSubject = subjectType === 'rsa2048';
    expect(text).toMatch(new RegExp(`X509v3 Subject Alternative Name: critical\\n\\s+URI:${SPIFFE}\\n`));
    expect(text).toMatch(/X509v3 Basic Constraints: critical\n\s+CA:FALSE\n/);
    expect(text).toMatch(
      rsaSubject ? /Key Usage: critical\n\s+Digital Signature, Key Encipherment\n/ : /Key Usage: critical\n\s+Digital Signature\n/,
    );
    expect(text).toMatch(/X509v3 Extended Key Usage: *\n\s+TLS Web Server Authentication, TLS Web Client Authentication\n/);
    expect(text).toMatch(/Subject: *\n/);
    const aki = /Authority Key Identifier: *\n\s*(?:keyid:)?([0-9A-F:]+)/.exec(text)?.[1];
    expect(aki?.replaceAll(':', '').toLowerCase()).toBe(issuer.keyIdHex);

    const hexDer = der.toString('hex');
    expect(hexDer).toContain(EXTENSION_BYTES.basicConstraints);
    expect(hexDer).toContain(rsaSubject ? EXTENSION_BYTES.keyUsageSignEncipher : EXTENSION_BYTES.keyUsageSign);
    expect(hexDer).toContain(EXTENSION_BYTES.extKeyUsage);

    const leaf = peculiarCertificate(der);
    const ca = peculiarCertificate(issuer.certDer);
    expect(normalizeSerial(leaf.serialNumber)).toBe(serialToHex(request.serial));
    expect(leaf.notBefore.getTime()).toBe(request.notBefore.getTime());
    expect(leaf.notAfter.getTime()).toBe(request.notAfter.getTime());
    expect(leaf.subject).toBe('');
    expect(leaf.issuer).toBe(ca.subject);
    expect(leaf.extensions.map((e) => [e.type, e.critical])).toEqual([
      ['2.5.29.17', true],
      ['2.5.29.19', true],
      ['2.5.29.15', true],
      ['2.5.29.37', false],
      ['2.5.29.35', false],
      ['2.5.29.14', false],
    ]);
    const san = leaf.getExtension(x509.SubjectAlternativeNameExtension)!;
    expect(san.names.items.map((n) => [n.type, n.value])).toEqual([['url', SPIFFE]]);
    expect(leaf.getExtension(x509.BasicConstraintsExtension)!.ca).toBe(false);
    expect(leaf.getExtension(x509.SubjectKeyIdentifierExtension)!.keyId).toBe(sha1Hex(subject.keyBits));
    expect(leaf.getExtension(x509.AuthorityKeyIdentifierExtension)!.keyId).toBe(issuer.keyIdHex);
    expect(Buffer.from(leaf.publicKey.rawData).equals(subject.spkiDer)).toBe(true);
    expect(await leaf.verify({ publicKey: ca.publicKey, signatureOnly: true })).toBe(true);
  });

  it('writes DNS SANs for named profiles', async () => {
    const issuer = issuers.get('p256')!;
    const dnsNames = ['istiod.istio-system.svc', 'istiod-canary.istio-system.svc'];
    const der = await issuer.template.sign(leafRequest(subjectKeys.get('p256')!, { uris: [], dnsNames }));
    const file = writeLeaf('leaf-dns.pem', der);
    expect(openssl('verify', '-x509_strict', '-purpose', 'sslserver', '-CAfile', issuer.certFile, file).trim()).toBe(`${file}: OK`);
    expect(openssl('x509', '-in', file, '-noout', '-text')).toMatch(
      /Subject Alternative Name: critical\n\s+DNS:istiod.istio-system.svc, DNS:istiod-canary.istio-system.svc\n/,
    );
  });
});

async function expectRejected(promise: () => Promise<unknown>, code: string): Promise<void> {
  await expect(promise()).rejects.toSatisfy((err: unknown) => err instanceof PkiError && err.code === code);
}

describe('LeafTemplate key handling', () => {
  it('keeps the issuer key unreachable: inspecting or serializing a template shows no key', () => {
    const { template, key } = issuers.get('p256')!;
    const d = String((key.export({ format: 'jwk' }) as { d: string }).d);
    for (const text of [inspect(template, { showHidden: true, depth: 10 }), JSON.stringify(template)]) {
      expect(text).not.toContain('KeyObject');
      expect(text).not.toContain(d);
    }
  });
});

describe('LeafTemplate input checks', () => {
  const base = (): LeafRequest => leafRequest(subjectKeys.get('p256')!);
  const bad: [string, () => Partial<LeafRequest>][] = [
    ['no SANs at all', () => ({ uris: [], dnsNames: [] })],
    ['an empty URI', () => ({ uris: [''] })],
    ['a non-ASCII URI', () => ({ uris: ['spiffe://td/é'] })],
    ['an empty serial', () => ({ serial: Buffer.alloc(0) })],
    ['a negative serial', () => ({ serial: Buffer.from([0x80, 1]) })],
    ['a non-minimal serial', () => ({ serial: Buffer.from([0x00, 0x01]) })],
    ['a zero serial', () => ({ serial: Buffer.from([0x00]) })],
    ['a 21-octet serial', () => ({ serial: Buffer.concat([Buffer.from([0]), Buffer.alloc(20, 0xff)]) })],
    ['notBefore after notAfter', () => ({ notBefore: new Date(2e12), notAfter: new Date(1e12) })],
    ['an invalid date', () => ({ notAfter: new Date(Number.NaN) })],
    ['a garbage SPKI', () => ({ spkiDer: Buffer.from('3003020100', 'hex') })],
  ];
  it.each(bad)('rejects %s with ERR_CERT_MALFORMED', async (_name, overrides) => {
    await expectRejected(() => issuers.get('p256')!.template.sign({ ...base(), ...overrides() }), 'ERR_CERT_MALFORMED');
  });

  it('accepts a 20-octet serial', async () => {
    const serial = Buffer.alloc(20, 0x7f);
    const der = await issuers.get('p256')!.template.sign({ ...base(), serial });
    expect(normalizeSerial(new X509Certificate(der).serialNumber)).toBe(serial.toString('hex'));
  });

  const badIssuers: [string, () => [Buffer, KeyObject], string][] = [
    ['garbage certificate', () => [Buffer.from('not a certificate'), issuers.get('p256')!.key], 'ERR_CERT_MALFORMED'],
    ['truncated certificate', () => [issuers.get('p256')!.certDer.subarray(0, 100), issuers.get('p256')!.key], 'ERR_CERT_MALFORMED'],
    ['key of another CA', () => [issuers.get('p256')!.certDer, issuers.get('no-skid')!.key], 'ERR_KEY_MISMATCH'],
    [
      'public key',
      () => [issuers.get('p256')!.certDer, new X509Certificate(issuers.get('p256')!.certDer).publicKey],
      'ERR_KEY_UNSUPPORTED',
    ],
    ['Ed25519 key', () => [issuers.get('p256')!.certDer, generateKeyPairSync('ed25519').privateKey], 'ERR_KEY_UNSUPPORTED'],
  ];
  it.each(badIssuers)('LeafTemplate.create rejects a %s', (_name, args, code) => {
    const [certDer, key] = args();
    let thrown: unknown;
    try {
      LeafTemplate.create(certDer, key);
    } catch (err) {
      thrown = err;
    }
    expect(thrown).toBeInstanceOf(PkiError);
    expect((thrown as PkiError).code).toBe(code);
  });
});

describe('timeOrderedSerial (leaf serials)', () => {
  const T = Date.UTC(2026, 11, 6, 12, 0, 0, 0);
  const cases: [string, number, (serial: Buffer) => void][] = [
    ['keeps the millisecond in its first 6 bytes', T, (s) => expect(s.readUIntBE(0, 6)).toBe(T)],
    [
      'is 16 bytes, positive, minimal (no sign byte, no leading zero)',
      T,
      (s) => expect([s.length, s[0]! > 0, s[0]! < 0x80]).toEqual([16, true, true]),
    ],
    ['stays positive at the largest time it can hold', 2 ** 47 - 1, (s) => expect(s[0]).toBe(0x7f)],
    ['clamps a time beyond 48 bits instead of wrapping', 2 ** 50, (s) => expect(s.readUIntBE(0, 6)).toBe(2 ** 47 - 1)],
    ['keeps the full width for a clock before 2004', 0, (s) => expect([s.length, s[0]]).toEqual([16, 1])],
  ];
  it.each(cases)('%s', (_name, at, check) => check(timeOrderedSerial(at)));

  it('ascends with time as the API hex (the serial index key), with unique random suffixes', () => {
    const hex = Array.from({ length: 3000 }, (_, i) => serialToHex(timeOrderedSerial(T + Math.floor(i / 3))));
    for (let i = 3; i < hex.length; i += 3) expect(hex[i - 1]! < hex[i]!).toBe(true);
    expect(new Set(hex).size).toBe(hex.length);
    const suffixes = new Set(hex.map((h) => h.slice(-20)));
    expect(suffixes.size).toBe(hex.length); // 80 random bits each: a repeat would mean a broken pool
  });

  it('signs leaves that openssl and @peculiar/x509 read back with the same serial', async () => {
    const serial = timeOrderedSerial();
    const der = await issuers
      .get('p256')!
      .template.sign({ ...leafRequest(subjectKeys.get('p256')!, { uris: ['spiffe://td/ns/a/sa/b'] }), serial });
    expect(normalizeSerial(peculiarCertificate(der).serialNumber)).toBe(serialToHex(serial));
    expect(openssl('x509', '-noout', '-serial', '-in', writeLeaf('time-serial.pem', der)).trim()).toBe(
      `serial=${serial.toString('hex').toUpperCase()}`,
    );
  });
});

describe('LeafTemplate properties', () => {
  const ALPHABET = 'abcdefghijklmnopqrstuvwxyz0123456789-._';
  const word = (rand: (n: number) => number, max: number): string =>
    Array.from({ length: 1 + rand(max) }, () => ALPHABET[rand(ALPHABET.length)]).join('');

  /** Positive, minimal, 1-20 octets; about half have the high bit set and need the 0x00 prefix. */
  function handMadeSerial(rand: (n: number) => number): Buffer {
    const length = 1 + rand(19);
    const bytes = Buffer.from(Array.from({ length }, () => rand(256)));
    if (bytes[0] === 0) bytes[0] = 1 + rand(255);
    return bytes[0]! & 0x80 ? Buffer.concat([Buffer.from([0]), bytes]) : bytes;
  }

  const YEAR = 365.25 * 24 * HOUR;
  const YEAR_SECONDS = YEAR / 1000;
  const BOUNDARY = Date.UTC(2050, 0, 1);

  it('1000 random leaves parse, verify, and keep serial, validity and identity', async () => {
    const rand = prng(0x5f1ffe);
    const issuerNames = [...KEY_TYPES, 'no-skid'];
    const openSslSample = new Map<string, string[]>();
    const seen = { generalized: 0, utc: 0, highBitSerials: 0 };
    for (let i = 0; i < 1000; i++) {
      const issuer = issuers.get(issuerNames[rand(issuerNames.length)]!)!;
      const subject = subjectKeys.get(KEY_TYPES[rand(KEY_TYPES.length)]!)!;
      const uri = `spiffe://${word(rand, 20)}.${word(rand, 10)}/ns/${word(rand, 30)}/sa/${word(rand, 30)}`;
      const serials = [randomSerial, () => timeOrderedSerial(rand(2 ** 31) * 65536), () => handMadeSerial(rand)];
      const serial = serials[i % 3]!();
      // Lifetimes around the 2050 UTCTime/GeneralizedTime switch, some exactly on it.
      const notBefore =
        i % 100 === 0 ? new Date(BOUNDARY - 1000) : new Date(BOUNDARY - 3 * YEAR + rand(5 * YEAR_SECONDS) * 1000 + rand(1000));
      const notAfter = new Date(notBefore.getTime() + (i % 100 === 0 ? 1000 : 1000 + rand(3 * YEAR_SECONDS) * 1000));
      const request = leafRequest(subject, { serial, notBefore, notAfter, uris: [uri] });
      const der = await issuer.template.sign(request);

      const node = new X509Certificate(der);
      expect(node.verify(new X509Certificate(issuer.certDer).publicKey)).toBe(true);
      expect(node.subjectAltName).toBe(`URI:${uri}`);
      const peculiar = peculiarCertificate(der);
      expect(normalizeSerial(peculiar.serialNumber)).toBe(serialToHex(serial));
      expect(peculiar.notBefore.getTime()).toBe(Math.floor(notBefore.getTime() / 1000) * 1000);
      expect(peculiar.notAfter.getTime()).toBe(Math.floor(notAfter.getTime() / 1000) * 1000);
      const tags = validityTags(der);
      expect(tags).toEqual([expectedTimeTag(notBefore), expectedTimeTag(notAfter)]);
      for (const tag of tags) seen[tag === Tag.UTC_TIME ? 'utc' : 'generalized']++;
      if (serial[0] === 0) seen.highBitSerials++;

      if (i % 50 === 0) {
        const files = openSslSample.get(issuer.name) ?? [];
        files.push(writeLeaf(`prop-${i}.pem`, der));
        openSslSample.set(issuer.name, files);
      }
    }
    expect(seen.utc).toBeGreaterThan(200);
    expect(seen.generalized).toBeGreaterThan(200);
    expect(seen.highBitSerials).toBeGreaterThan(60);

    for (const [issuerName, files] of openSslSample) {
      const issuer = [...issuers.values()].find((candidate) => candidate.name === issuerName)!;
      // -no_check_time: the sampled validity windows are in the future.
      const out = openssl('verify', '-no_check_time', ...issuer.strictFlags, '-purpose', 'sslclient', '-CAfile', issuer.certFile, ...files);
      expect(out.trim().split('\n')).toEqual(files.map((f) => `${f}: OK`));
    }
  });

  it('signs concurrently without mixing up requests', async () => {
    const issuer = issuers.get('p256')!;
    const requests = Array.from({ length: 200 }, (_, i) => leafRequest(subjectKeys.get('p256')!, { uris: [`spiffe://td/ns/n/sa/${i}`] }));
    const certificates = await Promise.all(requests.map((r) => issuer.template.sign(r)));
    certificates.forEach((der, i) => {
      const cert = new X509Certificate(der);
      expect(cert.subjectAltName).toBe(`URI:spiffe://td/ns/n/sa/${i}`);
      expect(normalizeSerial(cert.serialNumber)).toBe(serialToHex(requests[i]!.serial));
    });
  });
});
