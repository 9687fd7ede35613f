import { describe, expect, it } from 'vitest';
import {
  DerReader,
  MAX_DER_DEPTH,
  Tag,
  encodeAscii,
  encodeBitString,
  encodeBoolean,
  encodeExplicit,
  encodeImplicit,
  encodeInteger,
  encodeNamedBits,
  encodeNull,
  encodeOid,
  encodePrintableString,
  encodeSequence,
  encodeSet,
  encodeSmallInteger,
  encodeTime,
  encodeTlv,
  encodeUtf8String,
  type DerElement,
} from '../src/pki/der.js';
import { PkiError } from '../src/pki/errors.js';

const hex = (s: string): Buffer => Buffer.from(s.replace(/\s+/g, ''), 'hex');
const reader = (bytes: Buffer): DerReader => new DerReader(bytes, 'ERR_CSR_MALFORMED');

/** Visits every element recursively, like a generic dumper would. */
function walk(r: DerReader, el: DerElement): number {
  if (!(el.tag & 0x20)) return 1;
  return 1 + r.children(el).reduce((n, child) => n + walk(r, child), 0);
}

function expectPkiError(fn: () => unknown, code = 'ERR_CSR_MALFORMED', message?: RegExp): void {
  try {
    fn();
  } catch (err) {
    expect(err).toBeInstanceOf(PkiError);
    expect((err as PkiError).code).toBe(code);
    if (message) expect((err as PkiError).message).toMatch(message);
    return;
  }
  throw new Error('expected a PkiError');
}

const nested = (depth: number): Buffer => {
  let el: Buffer = encodeNull();
  for (let i = 0; i < depth; i++) el = encodeSequence(el);
  return el;
};

describe('DerReader framing', () => {
  const accepted: [string, Buffer, number][] = [
    ['short form length', hex('02 01 05'), 1],
    ['zero length', hex('04 00'), 0],
    ['long form, one length octet', Buffer.concat([hex('04 81 80'), Buffer.alloc(0x80)]), 0x80],
    ['long form, two length octets', Buffer.concat([hex('04 82 01 00'), Buffer.alloc(0x100)]), 0x100],
    ['constructed with children', hex('30 06 02 01 01 02 01 02'), 6],
  ];
  it.each(accepted)('accepts %s', (_name, bytes, contentLength) => {
    const r = reader(bytes);
    const el = r.top();
    expect(el.end - el.contentStart).toBe(contentLength);
    expect(el.end).toBe(bytes.length);
  });

  const rejected: [string, Buffer, RegExp][] = [
    ['empty input', Buffer.alloc(0), /truncated/],
    ['only a tag', hex('30'), /truncated/],
    ['indefinite length', hex('30 80 02 01 00 00 00'), /indefinite/],
    ['non-minimal long form for a short length', hex('04 81 05 0102030405'), /non-minimal/],
    ['leading zero length octet', Buffer.concat([hex('04 82 00 80'), Buffer.alloc(0x80)]), /non-minimal/],
    ['five length octets', hex('04 85 00 00 00 00 01 00'), /too large/],
    ['truncated length octets', hex('04 82 01'), /truncated/],
    ['content shorter than length', hex('30 05 02 01'), /exceeds/],
    ['lying 4 GiB length', hex('04 84 ff ff ff ff 00'), /exceeds/],
    ['trailing bytes', hex('02 01 00 00'), /trailing/],
    ['high-tag-number form', hex('1f 81 00 00'), /high-tag/],
    ['reserved length octet 0xff', hex('04 ff 00'), /too large/],
  ];
  it.each(rejected)('rejects %s', (_name, bytes, message) => {
    expectPkiError(() => reader(bytes).top(), 'ERR_CSR_MALFORMED', message);
  });

  it('rejects a child that overruns its parent even when the input is long enough', () => {
    const r = reader(hex('30 03 04 05 00 00 00 00 00'));
    const outer = r.elementAt(0, 5, 0);
    expectPkiError(() => r.children(outer), 'ERR_CSR_MALFORMED', /exceeds/);
  });

  it('uses the error code the caller chose', () => {
    expectPkiError(() => new DerReader(hex('30'), 'ERR_CERT_MALFORMED').top(), 'ERR_CERT_MALFORMED');
  });

  it.each([
    [MAX_DER_DEPTH, true],
    [MAX_DER_DEPTH + 1, false],
    [5000, false],
  ])('nesting depth %i accepted: %s', (depth, ok) => {
    const r = reader(nested(depth));
    if (ok) expect(walk(r, r.top())).toBe(depth + 1);
    else expectPkiError(() => walk(r, r.top()), 'ERR_CSR_MALFORMED', /too deep/);
  });
});

describe('DerReader values', () => {
  type Case = [string, string, (r: DerReader, el: DerElement) => unknown, unknown];
  const values: Case[] = [
    ['INTEGER 0', '02 01 00', (r, el) => r.integer(el, 'x').toString('hex'), '00'],
    ['INTEGER with needed 0x00', '02 02 00 80', (r, el) => r.integer(el, 'x').toString('hex'), '0080'],
    ['INTEGER negative', '02 01 80', (r, el) => r.integer(el, 'x').toString('hex'), '80'],
    ['small INTEGER', '02 02 01 00', (r, el) => r.smallInteger(el, 'x'), 256],
    ['BOOLEAN true', '01 01 ff', (r, el) => r.boolean(el, 'x'), true],
    ['BOOLEAN false', '01 01 00', (r, el) => r.boolean(el, 'x'), false],
    ['NULL', '05 00', (r, el) => r.null(el, 'x'), undefined],
    ['BIT STRING', '03 03 00 ab cd', (r, el) => r.bitString(el, 'x').toString('hex'), 'abcd'],
    ['empty BIT STRING', '03 01 00', (r, el) => r.bitString(el, 'x').length, 0],
    ['OCTET STRING', '04 02 01 02', (r, el) => r.octetString(el, 'x').toString('hex'), '0102'],
    ['UTF8String', '0c 03 68 c3 a9', (r, el) => r.string(el, 'x'), 'hé'],
    ['PrintableString', '13 04 41 2d 7a 3f', (r, el) => r.string(el, 'x'), 'A-z?'],
    ['empty PrintableString', '13 00', (r, el) => r.string(el, 'x'), ''],
    ['IA5String', '16 03 61 40 62', (r, el) => r.string(el, 'x'), 'a@b'],
    ['BMPString', '1e 04 00 68 00 e9', (r, el) => r.string(el, 'x'), 'hé'],
    ['UniversalString', '1c 04 00 01 f6 00', (r, el) => r.string(el, 'x'), '😀'],
    ['TeletexString', '14 02 68 e9', (r, el) => r.string(el, 'x'), 'hé'],
    ['UTCTime 2049', '17 0d 3439313233313233353935395a', (r, el) => r.time(el, 'x').toISOString(), '2049-12-31T23:59:59.000Z'],
    ['UTCTime 1950', '17 0d 3530303130313030303030305a', (r, el) => r.time(el, 'x').toISOString(), '1950-01-01T00:00:00.000Z'],
    ['GeneralizedTime 2050', '18 0f 32303530303130313030303030305a', (r, el) => r.time(el, 'x').toISOString(), '2050-01-01T00:00:00.000Z'],
    ['leap day', '18 0f 32303438303232393132303030305a', (r, el) => r.time(el, 'x').toISOString(), '2048-02-29T12:00:00.000Z'],
    ['EXPLICIT inner', 'a0 03 02 01 02', (r, el) => r.smallInteger(r.inner(el, 'x'), 'x'), 2],
  ];
  it.each(values)('reads %s', (_name, bytes, read, expected) => {
    const r = reader(hex(bytes));
    expect(read(r, r.top())).toEqual(expected);
  });

  const invalid: [string, string, (r: DerReader, el: DerElement) => unknown][] = [
    ['empty INTEGER', '02 00', (r, el) => r.integer(el, 'x')],
    ['INTEGER with redundant 0x00', '02 02 00 7f', (r, el) => r.integer(el, 'x')],
    ['INTEGER with redundant 0xff', '02 02 ff 80', (r, el) => r.integer(el, 'x')],
    ['negative small INTEGER', '02 01 ff', (r, el) => r.smallInteger(el, 'x')],
    ['BOOLEAN 0x01', '01 01 01', (r, el) => r.boolean(el, 'x')],
    ['two-byte BOOLEAN', '01 02 ff ff', (r, el) => r.boolean(el, 'x')],
    ['non-empty NULL', '05 01 00', (r, el) => r.null(el, 'x')],
    ['BIT STRING with unused bits', '03 02 01 80', (r, el) => r.bitString(el, 'x')],
    ['BIT STRING without unused-bits octet', '03 00', (r, el) => r.bitString(el, 'x')],
    ['wrong tag', '04 01 00', (r, el) => r.integer(el, 'x')],
    ['invalid UTF-8', '0c 02 c3 28', (r, el) => r.string(el, 'x')],
    ['@ in PrintableString', '13 01 40', (r, el) => r.string(el, 'x')],
    ['8-bit IA5String', '16 01 80', (r, el) => r.string(el, 'x')],
    ['odd-length BMPString', '1e 03 00 68 00', (r, el) => r.string(el, 'x')],
    ['surrogate in BMPString', '1e 02 d8 00', (r, el) => r.string(el, 'x')],
    ['not a string type', '02 01 00', (r, el) => r.string(el, 'x')],
    ['UTCTime without seconds', '17 0b 343931323331323335395a', (r, el) => r.time(el, 'x')],
    ['UTCTime without Z', '17 0d 343931323331323335393530', (r, el) => r.time(el, 'x')],
    ['fractional GeneralizedTime', '18 11 32303530303130313030303030302e355a', (r, el) => r.time(el, 'x')],
    ['month 13', '17 0d 3439313333313233353935395a', (r, el) => r.time(el, 'x')],
    ['31 April', '17 0d 3439303433313030303030305a', (r, el) => r.time(el, 'x')],
    ['29 February 2049', '17 0d 3439303232393030303030305a', (r, el) => r.time(el, 'x')],
    ['non-digit time', '17 0d 34393132333132333539355a5a', (r, el) => r.time(el, 'x')],
    ['time of wrong type', '04 0d 3439313233313233353935395a', (r, el) => r.time(el, 'x')],
    ['EXPLICIT with trailing bytes', 'a0 04 05 00 05 00', (r, el) => r.inner(el, 'x')],
    ['children of a primitive', '04 02 05 00', (r, el) => r.children(el)],
  ];
  it.each(invalid)('rejects %s', (_name, bytes, read) => {
    const r = reader(hex(bytes));
    expectPkiError(() => read(r, r.top()));
  });

  it('returns views into the input, not copies', () => {
    const bytes = hex('30 04 04 02 01 02');
    const r = reader(bytes);
    const [octets] = r.children(r.top());
    const view = r.octetString(octets!, 'x');
    bytes[4] = 0xee;
    expect(view[0]).toBe(0xee);
    expect(r.raw(octets!).toString('hex')).toBe('0402ee02');
  });
});

describe('OIDs', () => {
  const roundTrips = [
    '0.0',
    '0.39',
    '1.39',
    '1.2.840.113549.1.1.11',
    '1.2.840.10045.3.1.7',
    '2.5.29.17',
    '2.999',
    '2.999.1',
    '1.3.6.1.4.1.311.21.20',
    '1.2.9007199254740991', // 2^53 - 1: largest arc a number holds exactly
    '1.2.9007199254740993', // 2^53 + 1: needs bigint
    '2.25.329800735698586629295641978511506172918', // UUID-derived arc
    Array.from({ length: 64 }, (_, i) => (i < 2 ? 1 : i)).join('.'),
  ];
  it.each(roundTrips)('round trips %s', (dotted) => {
    const r = reader(encodeOid(dotted));
    expect(r.oid(r.top(), 'x')).toBe(dotted);
  });

  it('encodes known OIDs byte-exactly', () => {
    expect(encodeOid('1.2.840.113549.1.1.11').toString('hex')).toBe('06092a864886f70d01010b');
    expect(encodeOid('2.5.29.17').toString('hex')).toBe('0603551d11');
    expect(encodeOid('2.999').toString('hex')).toBe('06028837');
  });

  const badContent: [string, string][] = [
    ['empty', '06 00'],
    ['non-minimal arc', '06 03 2a 80 01'],
    ['non-minimal first arc', '06 02 80 2a'],
    ['truncated arc', '06 02 2a 86'],
    ['more than 64 arcs', '06 41 ' + '01'.repeat(0x41)],
    ['more than 128 bytes', '06 81 81 ' + '81'.repeat(0x80) + '01'],
  ];
  it.each(badContent)('rejects %s content', (_name, bytes) => {
    const r = reader(hex(bytes));
    expectPkiError(() => r.oid(r.top(), 'x'));
  });

  it.each(['', '1', '3.1', '1.40', '1.2.03', '1..2', '1.2.a', '-1.2'])('refuses to encode %j', (dotted) => {
    expectPkiError(() => encodeOid(dotted), 'ERR_CERT_MALFORMED');
  });
});

describe('DER writer', () => {
  it.each([0, 1, 127, 128, 255, 256, 65535, 65536, 70000])('encodes a %i-byte content length minimally', (n) => {
    const el = encodeTlv(Tag.OCTET_STRING, Buffer.alloc(n, 7));
    const expectedHeader = n < 0x80 ? 2 : n < 0x100 ? 3 : n < 0x10000 ? 4 : 5;
    expect(el.length).toBe(expectedHeader + n);
    const r = reader(el);
    expect(r.octetString(r.top(), 'x').equals(Buffer.alloc(n, 7))).toBe(true);
  });

  const encodings: [string, Buffer, string][] = [
    ['empty SEQUENCE', encodeSequence(), '3000'],
    ['SEQUENCE of parts', encodeSequence(encodeNull(), encodeBoolean(true)), '30050500 0101ff'],
    ['SET sorted', encodeSet(hex('0201 02'), hex('0201 01')), '3106020101020102'],
    ['INTEGER from content', encodeInteger(hex('00 80')), '02020080'],
    ['small INTEGER 0', encodeSmallInteger(0), '020100'],
    ['small INTEGER 127', encodeSmallInteger(127), '02017f'],
    ['small INTEGER 128', encodeSmallInteger(128), '02020080'],
    ['small INTEGER 256', encodeSmallInteger(256), '02020100'],
    ['BIT STRING', encodeBitString(hex('abcd')), '030300abcd'],
    ['BOOLEAN false', encodeBoolean(false), '010100'],
    ['NULL', encodeNull(), '0500'],
    ['IA5String', encodeAscii('a@b'), '1603614062'],
    ['URI GeneralName', encodeAscii('x', 0x86), '860178'],
    ['UTF8String', encodeUtf8String('hé'), '0c0368c3a9'],
    ['PrintableString', encodePrintableString('AB'), '13024142'],
    ['EXPLICIT [0]', encodeExplicit(0, encodeSmallInteger(2)), 'a003020102'],
    ['IMPLICIT [0] primitive', encodeImplicit(0, hex('0102')), '80020102'],
    ['IMPLICIT [1] constructed', encodeImplicit(1, hex('0500'), true), 'a1020500'],
    ['KeyUsage digitalSignature', encodeNamedBits([0]), '03020780'],
    ['KeyUsage digitalSignature+keyEncipherment', encodeNamedBits([0, 2]), '030205a0'],
    ['KeyUsage keyCertSign+cRLSign', encodeNamedBits([5, 6]), '03020106'],
    ['named bits across octets', encodeNamedBits([0, 8]), '0303078080'],
    ['no named bits', encodeNamedBits([]), '030100'],
  ];
  it.each(encodings)('encodes %s', (_name, actual, expected) => {
    expect(actual.toString('hex')).toBe(expected.replace(/\s+/g, ''));
  });

  it.each([
    ['non-minimal INTEGER', () => encodeInteger(hex('00 01'))],
    ['empty INTEGER', () => encodeInteger(Buffer.alloc(0))],
    ['negative small INTEGER', () => encodeSmallInteger(-1)],
    ['non-ASCII IA5String', () => encodeAscii('é')],
    ['@ in PrintableString', () => encodePrintableString('a@b')],
    ['8 unused bits', () => encodeBitString(hex('00'), 8)],
    ['invalid date', () => encodeTime(new Date(Number.NaN))],
    ['year 10000', () => encodeTime(new Date(Date.UTC(10000, 0, 1)))],
  ])('refuses %s', (_name, fn) => {
    expectPkiError(fn, 'ERR_CERT_MALFORMED');
  });
});

describe('times (RFC 5280 §4.1.2.5)', () => {
  const times: [string, string, number, string][] = [
    ['1949-12-31T23:59:59Z', 'GeneralizedTime', Tag.GENERALIZED_TIME, '19491231235959Z'],
    ['1950-01-01T00:00:00Z', 'UTCTime', Tag.UTC_TIME, '500101000000Z'],
    ['2026-03-04T05:06:07.999Z', 'UTCTime (milliseconds dropped)', Tag.UTC_TIME, '260304050607Z'],
    ['2049-12-31T23:59:59Z', 'UTCTime', Tag.UTC_TIME, '491231235959Z'],
    ['2050-01-01T00:00:00Z', 'GeneralizedTime', Tag.GENERALIZED_TIME, '20500101000000Z'],
    ['9999-12-31T23:59:59Z', 'GeneralizedTime', Tag.GENERALIZED_TIME, '99991231235959Z'],
  ];
  it.each(times)('%s is %s', (iso, _kind, tag, text) => {
    const encoded = encodeTime(new Date(iso));
    const r = reader(encoded);
    const el = r.top();
    expect(el.tag).toBe(tag);
    expect(r.content(el).toString('latin1')).toBe(text);
    expect(r.time(el, 'x').getTime()).toBe(Math.floor(new Date(iso).getTime() / 1000) * 1000);
  });
});

describe('reader robustness', () => {
  it('throws only PkiError on random and mutated input', () => {
    let seed = 0x5eed;
    const rand = (n: number): number => {
      seed = (Math.imul(seed ^ (seed >>> 15), 0x2c1b3c6d) + 0x6d2b79f5) | 0;
      return ((seed >>> 0) % n) | 0;
    };
    const sample = encodeSequence(encodeOid('1.2.840.113549.1.1.11'), encodeTime(new Date()), nested(10), encodeAscii('x'));
    for (let i = 0; i < 3000; i++) {
      const bytes = i % 3 === 0 ? Buffer.from(Array.from({ length: rand(64) }, () => rand(256))) : Buffer.from(sample);
      if (i % 3 !== 0) for (let k = 0; k <= rand(4); k++) bytes[rand(bytes.length)] = rand(256);
      const r = reader(bytes.subarray(0, rand(bytes.length + 1)));
      try {
        const top = r.top();
        walk(r, top);
        for (const child of top.tag & 0x20 ? r.children(top) : [top]) {
          const reads = [r.oid, r.time, r.string, r.integer, r.bitString, r.boolean].map(
            (m) => m.bind(r) as (el: DerElement, what: string) => unknown,
          );
          for (const read of reads) {
            try {
              read(child, 'x');
            } catch (err) {
              if (!(err instanceof PkiError)) throw err;
            }
          }
        }
      } catch (err) {
        expect(err).toBeInstanceOf(PkiError);
      }
    }
  });
});
