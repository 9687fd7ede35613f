// The native ECDSA verifier (native/ecdsa_verify.c) against node:crypto, case by case: both must
// accept and refuse exactly the same signatures and keys. In CI a missing addon is a failure.
import { generateKeyPairSync, KeyObject, sign, verify, webcrypto, type KeyObject as Key } from 'node:crypto';
import { describe, expect, it } from 'vitest';
import type { EcPublicPoint } from '../src/pki/csr.js';
import { type EcSignature, nativeEcdsaUnavailable, verifyEcdsaNatively } from '../src/pki/native-ecdsa.js';

const unavailable = nativeEcdsaUnavailable();

describe('native ECDSA verifier availability', () => {
  // .ci/run builds it with MESHCA_REQUIRE_NATIVE=1; a test run without it would only cover node:crypto.
  const required = Boolean(process.env.CI) || process.env.MESHCA_REQUIRE_NATIVE === '1';
  const title = unavailable && !required ? `is built (skipped: ${unavailable})` : 'is built';
  it.skipIf(unavailable !== undefined && !required)(title, () => expect(unavailable, unavailable).toBeUndefined());
});

type Curve = EcPublicPoint['namedCurve'];
const ORDER: Record<Curve, bigint> = {
  'P-256': 0xffffffff00000000ffffffffffffffffbce6faada7179e84f3b9cac2fc632551n,
  'P-384': 0xffffffffffffffffffffffffffffffffffffffffffffffffc7634d81f4372ddf581a0db248b0a77aecec196accc52973n,
};
const PRIME: Record<Curve, bigint> = {
  'P-256': 0xffffffff00000001000000000000000000000000ffffffffffffffffffffffffn,
  'P-384': 0xfffffffffffffffffffffffffffffffffffffffffffffffffffffffffffffffeffffffff0000000000000000ffffffffn,
};
const SIZE: Record<Curve, number> = { 'P-256': 32, 'P-384': 48 };
const keys: Record<Curve, { privateKey: Key; publicKey: Key }> = {
  'P-256': generateKeyPairSync('ec', { namedCurve: 'P-256' }),
  'P-384': generateKeyPairSync('ec', { namedCurve: 'P-384' }),
};
const DATA = Buffer.from('certificationRequestInfo stand-in');

const pointOf = (curve: Curve) => keys[curve].publicKey.export({ format: 'der', type: 'spki' }).subarray(-(2 * SIZE[curve] + 1));
const bytes = (n: bigint, size: number) => Buffer.from(n.toString(16).padStart(size * 2, '0'), 'hex');
const int = (n: bigint) => {
  let body = Buffer.from(
    n
      .toString(16)
      .padStart(2, '0')
      .replace(/^(.(..)*)$/, '0$1'),
    'hex',
  );
  if (body[0]! & 0x80) body = Buffer.concat([Buffer.from([0]), body]);
  return Buffer.concat([Buffer.from([0x02, body.length]), body]);
};
const derSig = (r: bigint, s: bigint) => {
  const body = Buffer.concat([int(r), int(s)]);
  return Buffer.concat([Buffer.from([0x30, body.length]), body]);
};
/** r and s of a DER signature (short lengths only: P-256/P-384). */
function rs(sig: Buffer): [bigint, bigint] {
  const rLen = sig[3]!;
  const r = BigInt(`0x${sig.subarray(4, 4 + rLen).toString('hex')}`);
  const s = BigInt(`0x${sig.subarray(6 + rLen).toString('hex')}`);
  return [r, s];
}

interface Case {
  readonly name: string;
  readonly curve: Curve;
  readonly hash?: string;
  /** Changes the signature, point or data from a valid one. */
  readonly change?: (c: {
    sig: Buffer;
    point: Buffer;
    data: Buffer;
    curve: Curve;
  }) => Partial<{ sig: Buffer; point: Buffer; data: Buffer }>;
  readonly expected: 'valid' | 'invalid' | 'bad key';
}

const flip = (b: Buffer, at: number) => {
  const copy = Buffer.from(b);
  copy[at < 0 ? copy.length + at : at]! ^= 1;
  return copy;
};

const CASES: Case[] = [
  { name: 'P-256, SHA-256', curve: 'P-256', expected: 'valid' },
  { name: 'P-256, SHA-384', curve: 'P-256', hash: 'sha384', expected: 'valid' },
  { name: 'P-256, SHA-512', curve: 'P-256', hash: 'sha512', expected: 'valid' },
  { name: 'P-384, SHA-384', curve: 'P-384', hash: 'sha384', expected: 'valid' },
  { name: 'P-384, SHA-256', curve: 'P-384', expected: 'valid' },
  { name: 'tampered data', curve: 'P-256', change: ({ data }) => ({ data: flip(data, 3) }), expected: 'invalid' },
  { name: 'tampered signature', curve: 'P-256', change: ({ sig }) => ({ sig: flip(sig, -1) }), expected: 'invalid' },
  { name: 'signature by another key', curve: 'P-384', change: () => ({ point: otherKey() }), expected: 'invalid' },
  { name: 'empty signature', curve: 'P-256', change: () => ({ sig: Buffer.alloc(0) }), expected: 'invalid' },
  { name: 'garbage signature', curve: 'P-256', change: () => ({ sig: Buffer.alloc(70, 0x30) }), expected: 'invalid' },
  {
    name: 'trailing byte after the DER',
    curve: 'P-256',
    change: ({ sig }) => ({ sig: Buffer.concat([sig, Buffer.from([0])]) }),
    expected: 'invalid',
  },
  {
    name: 'non-canonical DER (r padded with a zero)',
    curve: 'P-256',
    change: ({ sig }) => {
      const [r, s] = rs(sig);
      const rBody = int(r).subarray(2);
      const padded = Buffer.concat([Buffer.from([0x02, rBody.length + 1, 0]), rBody, int(s)]);
      return { sig: Buffer.concat([Buffer.from([0x30, padded.length]), padded]) };
    },
    expected: 'invalid',
  },
  { name: 'r = 0', curve: 'P-256', change: ({ sig }) => ({ sig: derSig(0n, rs(sig)[1]) }), expected: 'invalid' },
  { name: 's = n', curve: 'P-256', change: ({ sig, curve }) => ({ sig: derSig(rs(sig)[0], ORDER[curve]) }), expected: 'invalid' },
  {
    name: 's = n + s (same value mod n)',
    curve: 'P-256',
    change: ({ sig, curve }) => ({ sig: derSig(rs(sig)[0], ORDER[curve] + rs(sig)[1]) }),
    expected: 'invalid',
  },
  { name: 'point off the curve (P-256)', curve: 'P-256', change: ({ point }) => ({ point: flip(point, -1) }), expected: 'bad key' },
  {
    name: 'point off the curve (P-384)',
    curve: 'P-384',
    hash: 'sha384',
    change: ({ point }) => ({ point: flip(point, -1) }),
    expected: 'bad key',
  },
  {
    name: 'x coordinate = p (not reduced)',
    curve: 'P-256',
    change: ({ point, curve }) => ({ point: Buffer.concat([point.subarray(0, 1), bytes(PRIME[curve], 32), point.subarray(33)]) }),
    expected: 'bad key',
  },
  { name: 'point truncated by one byte', curve: 'P-256', change: ({ point }) => ({ point: point.subarray(0, -1) }), expected: 'bad key' },
  {
    name: 'P-256 point checked as P-384',
    curve: 'P-384',
    hash: 'sha384',
    change: () => ({ point: pointOf('P-256') }),
    expected: 'bad key',
  },
  { name: 'point at infinity (0x00)', curve: 'P-256', change: () => ({ point: Buffer.from([0]) }), expected: 'bad key' },
];

let other: Buffer | undefined;
function otherKey(): Buffer {
  other ??= generateKeyPairSync('ec', { namedCurve: 'P-384' }).publicKey.export({ format: 'der', type: 'spki' }).subarray(-97);
  return other;
}

function material(c: Case): EcSignature {
  const hash = c.hash ?? 'sha256';
  const valid = { sig: sign(hash, DATA, keys[c.curve].privateKey), point: pointOf(c.curve), data: DATA };
  const changed = { ...valid, ...c.change?.({ ...valid, curve: c.curve }) };
  return { hash, data: changed.data, signature: changed.sig, ecPoint: { namedCurve: c.curve, point: changed.point } };
}

/** What node:crypto says: the verifier thread's own path (WebCrypto raw import, then verify). */
async function nodeVerdict(check: EcSignature): Promise<Case['expected']> {
  let key: KeyObject;
  try {
    key = KeyObject.from(
      await webcrypto.subtle.importKey('raw', check.ecPoint.point, { name: 'ECDSA', namedCurve: check.ecPoint.namedCurve }, true, [
        'verify',
      ]),
    );
  } catch {
    return 'bad key';
  }
  return verify(check.hash, check.data, key, check.signature) ? 'valid' : 'invalid';
}

function nativeVerdict(check: EcSignature): Case['expected'] {
  const result = verifyEcdsaNatively(check);
  return result === 1 ? 'valid' : result === 0 ? 'invalid' : 'bad key';
}

describe.skipIf(unavailable !== undefined)('native ECDSA verifier agrees with node:crypto', () => {
  it.each(CASES)('$name: $expected', async (c) => {
    const check = material(c);
    expect(await nodeVerdict(check)).toBe(c.expected);
    expect(nativeVerdict(check)).toBe(c.expected);
  });

  it('agrees on 300 random keys, signatures and single-bit changes', async () => {
    for (let i = 0; i < 300; i++) {
      const curve: Curve = i % 3 === 0 ? 'P-384' : 'P-256';
      const check = material({ name: 'random', curve, expected: 'valid' });
      const mutated = i % 2 === 0 ? check : { ...check, signature: flip(Buffer.from(check.signature), i % check.signature.length) };
      expect(nativeVerdict(mutated)).toBe(await nodeVerdict(mutated));
    }
  });

  it.each([
    [
      'a string point',
      () => verifyEcdsaNatively({ ...material(CASES[0]!), ecPoint: { namedCurve: 'P-256', point: 'x' as unknown as Buffer } }),
    ],
    ['an unknown hash', () => verifyEcdsaNatively({ ...material(CASES[0]!), hash: 'md5' })],
  ])('throws on %s instead of crashing', (_name, call) => {
    expect(call).toThrow();
  });
});
