import { createPublicKey, generateKeyPairSync, randomBytes, type KeyObject } from 'node:crypto';
import { mkdtempSync, readFileSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { PkiError } from '../src/pki/errors.js';
import {
  KEY_TYPES,
  generateKeyPair,
  importPrivateKeyPem,
  keyTypeOf,
  openPrivateKey,
  parseKek,
  parseKeyType,
  privateKeyMatchesCertificate,
  privateKeyPem,
  sealPrivateKey,
  type KeyPair,
  type KeyType,
} from '../src/pki/keys.js';
import { pemDecodeOne } from '../src/pki/pem.js';
import { openssl } from './support/openssl.js';

const dir = mkdtempSync(join(tmpdir(), 'meshca-keys-'));
afterAll(() => rmSync(dir, { recursive: true, force: true }));

function errorOf(fn: () => unknown): PkiError {
  try {
    fn();
  } catch (err) {
    expect(err).toBeInstanceOf(PkiError);
    return err as PkiError;
  }
  throw new Error('expected a PkiError, nothing was thrown');
}

/** No 12-character run of any secret's base64 or hex may appear in an error message. */
function expectNoSecret(message: string, secrets: readonly string[]): void {
  for (const secret of secrets) {
    const body = secret.replace(/-----[A-Z ]+-----|\s/g, '');
    for (let i = 0; i + 12 <= body.length; i += 6) expect(message).not.toContain(body.slice(i, i + 12));
  }
}

const pkcs8 = (key: KeyObject): Buffer => key.export({ type: 'pkcs8', format: 'der' });
const AUTHORITY = 'authority-1';

describe('key types', () => {
  it.each(KEY_TYPES)('parseKeyType accepts %s', (type) => expect(parseKeyType(type)).toBe(type));

  it.each(['ec-p521', 'RSA-2048', 'rsa-1024', 'ed25519', ''])('parseKeyType rejects %j, listing the accepted values', (input) => {
    const err = errorOf(() => parseKeyType(input));
    expect(err.code).toBe('ERR_KEY_UNSUPPORTED');
    expect(err.message).toContain(KEY_TYPES.join(', '));
  });

  const unsupported: [string, () => KeyObject][] = [
    ['rsa-1024', () => generateKeyPairSync('rsa', { modulusLength: 1024 }).privateKey],
    ['ed25519', () => generateKeyPairSync('ed25519').privateKey],
    ['x25519 public', () => generateKeyPairSync('x25519').publicKey],
    ['secp256k1', () => generateKeyPairSync('ec', { namedCurve: 'secp256k1' }).privateKey],
    ['P-521', () => generateKeyPairSync('ec', { namedCurve: 'P-521' }).publicKey],
  ];
  it.each(unsupported)('keyTypeOf rejects %s', (_name, make) => {
    expect(errorOf(() => keyTypeOf(make())).code).toBe('ERR_KEY_UNSUPPORTED');
  });
});

describe.each(KEY_TYPES)('%s', (type: KeyType) => {
  let pair: KeyPair;
  let kek: Buffer;
  let sealed: Buffer;
  beforeAll(async () => {
    pair = await generateKeyPair(type);
    kek = randomBytes(32);
    sealed = sealPrivateKey(pair.privateKey, kek, AUTHORITY);
  });

  it('generates a key pair of that type', () => {
    expect(pair.privateKey.type).toBe('private');
    expect(pair.publicKey.type).toBe('public');
    expect(keyTypeOf(pair.privateKey)).toBe(type);
    expect(keyTypeOf(pair.publicKey)).toBe(type);
  });

  it('seals as version | nonce | tag | ciphertext and opens back to the same key', () => {
    expect(sealed[0]).toBe(1);
    expect(sealed.length).toBeGreaterThan(1 + 12 + 16 + pkcs8(pair.privateKey).length - 1);
    expect(pkcs8(openPrivateKey(sealed, kek, AUTHORITY))).toEqual(pkcs8(pair.privateKey));
    expect(sealPrivateKey(pair.privateKey, kek, AUTHORITY).subarray(1, 13)).not.toEqual(sealed.subarray(1, 13));
  });

  const tamperings: [string, (s: Buffer, k: Buffer) => [Buffer, Buffer, string]][] = [
    ['a wrong KEK', (s) => [s, randomBytes(32), AUTHORITY]],
    ['a wrong aad', (s, k) => [s, k, 'authority-2']],
    ['a flipped ciphertext byte', (s, k) => [flip(s, s.length - 1), k, AUTHORITY]],
    ['a flipped nonce byte', (s, k) => [flip(s, 1), k, AUTHORITY]],
    ['a flipped tag byte', (s, k) => [flip(s, 13), k, AUTHORITY]],
    ['a different version', (s, k) => [flip(s, 0), k, AUTHORITY]],
    ['truncation', (s, k) => [s.subarray(0, 29), k, AUTHORITY]],
  ];
  it.each(tamperings)('refuses to open with %s', (_name, tamper) => {
    const err = errorOf(() => openPrivateKey(...tamper(sealed, kek)));
    expect(err.code).toBe('ERR_KEY_UNSEALABLE');
    expectNoSecret(err.message, [privateKeyPem(pair.privateKey), kek.toString('base64'), kek.toString('hex')]);
  });

  it('exports PKCS#8 PEM that imports back to the same key', () => {
    const pem = privateKeyPem(pair.privateKey);
    expect(pem).toMatch(/^-----BEGIN PRIVATE KEY-----\n/);
    expect(pkcs8(importPrivateKeyPem(pem))).toEqual(pkcs8(pair.privateKey));
  });
});

function flip(buf: Buffer, index: number): Buffer {
  const copy = Buffer.from(buf);
  copy[index]! ^= 0x01;
  return copy;
}

describe('sealing misuse', () => {
  const { privateKey, publicKey } = generateKeyPairSync('ec', { namedCurve: 'P-256' });
  it('refuses a public key', () =>
    expect(errorOf(() => sealPrivateKey(publicKey, randomBytes(32), AUTHORITY)).code).toBe('ERR_KEY_UNSUPPORTED'));
  it.each([16, 31, 33])('refuses a %d-byte KEK', (n) => {
    expect(errorOf(() => sealPrivateKey(privateKey, randomBytes(n), AUTHORITY)).code).toBe('ERR_KEK_INVALID');
    expect(errorOf(() => openPrivateKey(Buffer.alloc(64, 1), randomBytes(n), AUTHORITY)).code).toBe('ERR_KEK_INVALID');
  });
});

describe('parseKek', () => {
  it('accepts what `openssl rand -base64 32` prints, trailing newline included', () => {
    const printed = openssl(['rand', '-base64', '32']);
    expect(printed.endsWith('\n')).toBe(true);
    expect(parseKek(printed)).toEqual(Buffer.from(printed.trim(), 'base64'));
    expect(parseKek(`  ${printed.trim()}\r\n\n`)).toHaveLength(32);
  });

  const bad: [string, string][] = [
    ['16 bytes', randomBytes(16).toString('base64')],
    ['31 bytes', randomBytes(31).toString('base64')],
    ['33 bytes', randomBytes(33).toString('base64')],
    ['hex of 32 bytes', randomBytes(32).toString('hex')],
    ['base64url', Buffer.alloc(32, 0xff).toString('base64url')],
    ['non-base64 text', 'this is not a key at all, really!!'],
    ['missing padding', randomBytes(31).toString('base64').replace(/=+$/, '')],
    ['embedded space', `${randomBytes(16).toString('base64')} ${randomBytes(16).toString('base64')}`],
    ['empty', '\n'],
  ];
  it.each(bad)('rejects %s and says how to generate one, without echoing it', (_name, text) => {
    const err = errorOf(() => parseKek(text));
    expect(err.code).toBe('ERR_KEK_INVALID');
    expect(err.message).toContain('openssl rand -base64 32');
    if (text.trim().length >= 12) expectNoSecret(err.message, [text]);
  });
});

describe('importPrivateKeyPem', () => {
  const made: [string, string[], KeyType][] = [
    ['PKCS#8 EC (genpkey)', ['genpkey', '-algorithm', 'EC', '-pkeyopt', 'ec_paramgen_curve:P-256'], 'ec-p256'],
    ['PKCS#8 RSA (genpkey)', ['genpkey', '-algorithm', 'RSA', '-pkeyopt', 'rsa_keygen_bits:2048'], 'rsa-2048'],
    ['SEC1 with EC PARAMETERS (ecparam -genkey)', ['ecparam', '-name', 'secp384r1', '-genkey'], 'ec-p384'],
    ['SEC1 alone (ecparam -genkey -noout)', ['ecparam', '-name', 'prime256v1', '-genkey', '-noout'], 'ec-p256'],
    ['PKCS#1 (genrsa -traditional)', ['genrsa', '-traditional', '2048'], 'rsa-2048'],
  ];
  it.each(made)('imports %s', (_name, args, type) => {
    const pem = openssl(args);
    const key = importPrivateKeyPem(pem);
    expect(key.type).toBe('private');
    expect(keyTypeOf(key)).toBe(type);
    expect(createPublicKey(key).export({ type: 'spki', format: 'pem' })).toBe(openssl(['pkey', '-pubout'], pem));
  });

  const rejected: [string, () => string, string][] = [
    [
      'an encrypted PKCS#8 key',
      () => openssl(['genpkey', '-algorithm', 'EC', '-pkeyopt', 'ec_paramgen_curve:P-256', '-aes256', '-pass', 'pass:x']),
      'ERR_PEM_MALFORMED',
    ],
    [
      'an encrypted traditional key',
      () => openssl(['ec', '-aes256', '-passout', 'pass:x'], openssl(['ecparam', '-name', 'prime256v1', '-genkey', '-noout'])),
      'ERR_PEM_MALFORMED',
    ],
    ['an Ed25519 key', () => openssl(['genpkey', '-algorithm', 'ED25519']), 'ERR_KEY_UNSUPPORTED'],
    ['an RSA-1024 key', () => openssl(['genrsa', '-traditional', '1024']), 'ERR_KEY_UNSUPPORTED'],
    [
      'a public key',
      () => openssl(['pkey', '-pubout'], openssl(['genpkey', '-algorithm', 'EC', '-pkeyopt', 'ec_paramgen_curve:P-256'])),
      'ERR_PEM_MALFORMED',
    ],
    ['two keys', () => openssl(['ecparam', '-name', 'prime256v1', '-genkey', '-noout']).repeat(2), 'ERR_PEM_MALFORMED'],
    ['no PEM at all', () => 'not a key', 'ERR_PEM_MALFORMED'],
    [
      'a corrupted body',
      () => corrupt(openssl(['genpkey', '-algorithm', 'EC', '-pkeyopt', 'ec_paramgen_curve:P-256'])),
      'ERR_PEM_MALFORMED',
    ],
    [
      'a SEC1 body under a PKCS#1 label',
      () => relabel(openssl(['ecparam', '-name', 'prime256v1', '-genkey', '-noout']), 'EC', 'RSA'),
      'ERR_PEM_MALFORMED',
    ],
  ];
  it.each(rejected)('rejects %s with a message free of key material', (_name, make, code) => {
    const pem = make();
    const err = errorOf(() => importPrivateKeyPem(pem));
    expect(err.code).toBe(code);
    expectNoSecret(err.message, [pem]);
  });
});

function corrupt(pem: string): string {
  const lines = pem.split('\n');
  lines[1] = lines[1]!.slice(0, 8) + 'AAAAAAAA' + lines[1]!.slice(16);
  return lines.join('\n');
}

function relabel(pem: string, from: string, to: string): string {
  return pem.replaceAll(`${from} PRIVATE KEY`, `${to} PRIVATE KEY`);
}

describe('privateKeyMatchesCertificate', () => {
  const keyPath = join(dir, 'key.pem');
  const certPath = join(dir, 'cert.pem');
  beforeAll(() => {
    openssl(['ecparam', '-name', 'prime256v1', '-genkey', '-noout', '-out', keyPath]);
    openssl(['req', '-x509', '-new', '-key', keyPath, '-subj', '/CN=match test', '-days', '1', '-out', certPath]);
  });
  const certDer = (): Buffer => pemDecodeOne(readFileSync(certPath, 'utf8'), ['CERTIFICATE']);

  it('is true for the certified key, private or public', () => {
    const key = importPrivateKeyPem(readFileSync(keyPath, 'utf8'));
    expect(privateKeyMatchesCertificate(key, certDer())).toBe(true);
    expect(privateKeyMatchesCertificate(createPublicKey(key), certDer())).toBe(true);
  });

  // The SEC1 import afterwards guards against OpenSSL error-queue leakage from a cross-type compare.
  it.each(KEY_TYPES.slice(0, 3))('is false for an unrelated %s key, and leaves later imports working', async (type) => {
    expect(privateKeyMatchesCertificate((await generateKeyPair(type)).privateKey, certDer())).toBe(false);
    expect(keyTypeOf(importPrivateKeyPem(readFileSync(keyPath, 'utf8')))).toBe('ec-p256');
  });

  it('throws ERR_CERT_MALFORMED on garbage', () => {
    const key = importPrivateKeyPem(readFileSync(keyPath, 'utf8'));
    expect(errorOf(() => privateKeyMatchesCertificate(key, Buffer.from('garbage'))).code).toBe('ERR_CERT_MALFORMED');
  });
});
