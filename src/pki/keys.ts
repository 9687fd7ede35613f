/**
 * CA key handling: generation, type checks, sealing at rest (docs/architecture.md) and PEM import for
 * plug-in CAs. Nothing here ever puts key material into an error message.
 */
import {
  X509Certificate,
  createCipheriv,
  createDecipheriv,
  createPrivateKey,
  createPublicKey,
  generateKeyPair as generateKeyPairCallback,
  randomBytes,
  type KeyObject,
} from 'node:crypto';
import { promisify } from 'node:util';
import { PkiError } from './errors.js';
import { pemBlocks } from './pem.js';

export type KeyType = 'ec-p256' | 'ec-p384' | 'rsa-2048' | 'rsa-3072' | 'rsa-4096';

export const KEY_TYPES: readonly KeyType[] = Object.freeze(['ec-p256', 'ec-p384', 'rsa-2048', 'rsa-3072', 'rsa-4096']);

export interface KeyPair {
  readonly privateKey: KeyObject;
  readonly publicKey: KeyObject;
}

const EC_CURVES: ReadonlyMap<string, KeyType> = new Map([
  ['prime256v1', 'ec-p256'],
  ['secp384r1', 'ec-p384'],
]);
const RSA_SIZES: ReadonlyMap<number, KeyType> = new Map([
  [2048, 'rsa-2048'],
  [3072, 'rsa-3072'],
  [4096, 'rsa-4096'],
]);

export function parseKeyType(input: string): KeyType {
  const found = KEY_TYPES.find((t) => t === input);
  if (found === undefined) {
    throw new PkiError('ERR_KEY_UNSUPPORTED', `unsupported key type "${input}"; use one of ${KEY_TYPES.join(', ')}`);
  }
  return found;
}

const generate = promisify(generateKeyPairCallback);

/** Async so that RSA-4096 generation (seconds) does not block the event loop. */
export async function generateKeyPair(type: KeyType): Promise<KeyPair> {
  if (type === 'ec-p256' || type === 'ec-p384') {
    return generate('ec', { namedCurve: type === 'ec-p256' ? 'P-256' : 'P-384' });
  }
  const modulusLength = Number(parseKeyType(type).slice('rsa-'.length));
  return generate('rsa', { modulusLength, publicExponent: 0x10001 });
}

/** The meshca key type of a public or private key; anything else (rsa-1024, ed25519, rsa-pss) is rejected. */
export function keyTypeOf(key: KeyObject): KeyType {
  const type = lookupKeyType(key);
  if (type === undefined)
    throw new PkiError('ERR_KEY_UNSUPPORTED', `unsupported key: ${describeKey(key)}; use one of ${KEY_TYPES.join(', ')}`);
  return type;
}

function lookupKeyType(key: KeyObject): KeyType | undefined {
  if (key.type === 'secret') return undefined;
  const details = key.asymmetricKeyDetails;
  if (key.asymmetricKeyType === 'ec') return EC_CURVES.get(details?.namedCurve ?? '');
  if (key.asymmetricKeyType === 'rsa') return RSA_SIZES.get(details?.modulusLength ?? 0);
  return undefined;
}

/** Algorithm and size only: safe to show. */
function describeKey(key: KeyObject): string {
  if (key.type === 'secret') return 'a symmetric key';
  const d = key.asymmetricKeyDetails;
  const size = d?.namedCurve ?? (d?.modulusLength !== undefined ? `${d.modulusLength} bits` : undefined);
  return [key.asymmetricKeyType ?? 'unknown', size].filter(Boolean).join(' ');
}

// ---------------------------------------------------------------------------------------------
// Key-encryption key and sealing

const KEK_BYTES = 32;
const KEK_HINT = 'generate one with `openssl rand -base64 32`';
const BASE64_RE = /^(?:[A-Za-z0-9+/]{4})*(?:[A-Za-z0-9+/]{2}==|[A-Za-z0-9+/]{3}=)?$/;

/** A KEK as `openssl rand -base64 32` prints it. The text itself is secret, so it is never echoed. */
export function parseKek(text: string): Buffer {
  const b64 = text.trim();
  if (b64 === '' || !BASE64_RE.test(b64)) {
    throw new PkiError('ERR_KEK_INVALID', `key-encryption key is not valid base64; ${KEK_HINT}`);
  }
  const kek = Buffer.from(b64, 'base64');
  if (kek.length !== KEK_BYTES) {
    throw new PkiError('ERR_KEK_INVALID', `key-encryption key must be ${KEK_BYTES} bytes, got ${kek.length}; ${KEK_HINT}`);
  }
  return kek;
}

const SEAL_VERSION = 1;
const NONCE_BYTES = 12;
const TAG_BYTES = 16;
const HEADER_BYTES = 1 + NONCE_BYTES + TAG_BYTES;
const CIPHER = 'aes-256-gcm';

function checkKek(kek: Buffer): void {
  if (kek.length !== KEK_BYTES) {
    throw new PkiError('ERR_KEK_INVALID', `key-encryption key must be ${KEK_BYTES} bytes, got ${kek.length}; ${KEK_HINT}`);
  }
}

function requirePrivate(key: KeyObject): void {
  if (key.type !== 'private') throw new PkiError('ERR_KEY_UNSUPPORTED', `expected a private key, got ${key.type} key`);
}

/**
 * AES-256-GCM over the PKCS#8 DER. Layout: version 1 | nonce (12) | tag (16) | ciphertext.
 * `aad` (the authority id) is authenticated, so a sealed key cannot be swapped onto another authority.
 */
export function sealPrivateKey(key: KeyObject, kek: Buffer, aad: string): Buffer {
  checkKek(kek);
  requirePrivate(key);
  const nonce = randomBytes(NONCE_BYTES);
  const cipher = createCipheriv(CIPHER, kek, nonce, { authTagLength: TAG_BYTES });
  cipher.setAAD(Buffer.from(aad, 'utf8'));
  const plain = key.export({ type: 'pkcs8', format: 'der' });
  const ciphertext = Buffer.concat([cipher.update(plain), cipher.final()]);
  plain.fill(0);
  return Buffer.concat([Buffer.from([SEAL_VERSION]), nonce, cipher.getAuthTag(), ciphertext]);
}

export function openPrivateKey(sealed: Buffer, kek: Buffer, aad: string): KeyObject {
  checkKek(kek);
  if (sealed.length <= HEADER_BYTES || sealed[0] !== SEAL_VERSION) {
    throw new PkiError('ERR_KEY_UNSEALABLE', 'sealed key is truncated or has an unknown format version');
  }
  const plain = decrypt(sealed, kek, aad);
  try {
    return createPrivateKey({ key: plain, format: 'der', type: 'pkcs8' });
  } catch {
    throw new PkiError('ERR_KEY_UNSEALABLE', 'sealed key decrypted but is not a PKCS#8 private key');
  } finally {
    plain.fill(0);
  }
}

function decrypt(sealed: Buffer, kek: Buffer, aad: string): Buffer {
  const nonce = sealed.subarray(1, 1 + NONCE_BYTES);
  const tag = sealed.subarray(1 + NONCE_BYTES, HEADER_BYTES);
  const decipher = createDecipheriv(CIPHER, kek, nonce, { authTagLength: TAG_BYTES });
  decipher.setAAD(Buffer.from(aad, 'utf8'));
  decipher.setAuthTag(tag);
  try {
    return Buffer.concat([decipher.update(sealed.subarray(HEADER_BYTES)), decipher.final()]);
  } catch {
    throw new PkiError(
      'ERR_KEY_UNSEALABLE',
      `cannot decrypt the key of authority "${aad}": wrong key-encryption key, or the stored key was altered or belongs to another authority`,
    );
  }
}

// ---------------------------------------------------------------------------------------------
// PEM import / export

const PRIVATE_KEY_LABELS: Readonly<Record<string, 'pkcs8' | 'sec1' | 'pkcs1'>> = {
  'PRIVATE KEY': 'pkcs8',
  'EC PRIVATE KEY': 'sec1',
  'RSA PRIVATE KEY': 'pkcs1',
};

/**
 * PKCS#8, SEC1 or PKCS#1 PEM. Other blocks (e.g. the "EC PARAMETERS" that `openssl ecparam -genkey`
 * prints first) are ignored; encrypted keys are refused with a hint.
 */
export function importPrivateKeyPem(pem: string): KeyObject {
  if (/-----BEGIN ENCRYPTED PRIVATE KEY-----|Proc-Type: *4, *ENCRYPTED/.test(pem)) {
    throw new PkiError('ERR_PEM_MALFORMED', 'private key is encrypted; decrypt it first, e.g. `openssl pkey -in key.pem -out plain.pem`');
  }
  const blocks = pemBlocks(pem).filter((b) => b.label in PRIVATE_KEY_LABELS);
  const [block] = blocks;
  const type = block && PRIVATE_KEY_LABELS[block.label];
  if (block === undefined || type === undefined || blocks.length !== 1) {
    throw new PkiError(
      'ERR_PEM_MALFORMED',
      `expected exactly one PRIVATE KEY, EC PRIVATE KEY or RSA PRIVATE KEY PEM block, found ${blocks.length}`,
    );
  }
  const { label, der } = block;
  let key: KeyObject;
  try {
    key = createPrivateKey({ key: der, format: 'der', type });
  } catch {
    throw new PkiError('ERR_PEM_MALFORMED', `the ${label} PEM block does not hold a valid private key`);
  } finally {
    der.fill(0);
  }
  keyTypeOf(key);
  return key;
}

/**
 * Compares public keys semantically (EVP_PKEY_eq), so point encodings do not matter. Algorithm and
 * size are compared first: EVP_PKEY_eq on keys of different types leaves an error on OpenSSL's
 * queue that Node does not clear, and the next unrelated createPrivateKey then fails.
 */
export function privateKeyMatchesCertificate(key: KeyObject, certificateDer: Buffer): boolean {
  let certKey: KeyObject;
  try {
    certKey = new X509Certificate(certificateDer).publicKey;
  } catch {
    throw new PkiError('ERR_CERT_MALFORMED', 'certificate is not valid DER');
  }
  if (key.type === 'secret') throw new PkiError('ERR_KEY_UNSUPPORTED', 'expected an asymmetric key, got a symmetric key');
  const publicKey = key.type === 'public' ? key : createPublicKey(key);
  return describeKey(publicKey) === describeKey(certKey) && publicKey.equals(certKey);
}

/** PKCS#8 PEM, for writing 0600 key files only. */
export function privateKeyPem(key: KeyObject): string {
  requirePrivate(key);
  return key.export({ type: 'pkcs8', format: 'pem' }).toString();
}
