/**
 * A strict, minimal DER reader and writer for the issuance hot path.
 *
 * The reader never copies: elements are offsets into the input, and every length is checked
 * against the bytes that are really there before anything is read, so a lying length field can
 * neither allocate nor read out of bounds. All reader failures are PkiError with the code the
 * caller chose (CSR input and issuer certificates fail with different codes).
 */
import { isUtf8 } from 'node:buffer';
import { PkiError, type PkiErrorCode } from './errors.js';

/** Identifier octets of the universal types we read or write. */
export const Tag = {
  BOOLEAN: 0x01,
  INTEGER: 0x02,
  BIT_STRING: 0x03,
  OCTET_STRING: 0x04,
  NULL: 0x05,
  OID: 0x06,
  UTF8_STRING: 0x0c,
  NUMERIC_STRING: 0x12,
  PRINTABLE_STRING: 0x13,
  TELETEX_STRING: 0x14,
  IA5_STRING: 0x16,
  UTC_TIME: 0x17,
  GENERALIZED_TIME: 0x18,
  VISIBLE_STRING: 0x1a,
  UNIVERSAL_STRING: 0x1c,
  BMP_STRING: 0x1e,
  SEQUENCE: 0x30,
  SET: 0x31,
} as const;

const CONTEXT_CLASS = 0x80;
const CONSTRUCTED = 0x20;
const HIGH_TAG_NUMBER = 0x1f;

/** Identifier octet of a context-specific tag [n] (n < 31). */
export function contextTag(n: number, constructed: boolean): number {
  return CONTEXT_CLASS | (constructed ? CONSTRUCTED : 0) | n;
}

/** Deeper than any certificate or CSR structure we accept; stops stack-eating inputs. */
export const MAX_DER_DEPTH = 32;
/** OIDs we meet are short; this bounds work on hostile ones. */
export const MAX_OID_BYTES = 128;
export const MAX_OID_ARCS = 64;

/** One TLV, as offsets into the reader's input. */
export interface DerElement {
  /** Identifier octet: class, constructed bit and tag number (low-tag-number form only). */
  readonly tag: number;
  /** Offset of the identifier octet. */
  readonly start: number;
  /** Offset of the first content octet. */
  readonly contentStart: number;
  /** Offset one past the last content octet. */
  readonly end: number;
  /** Nesting depth; the outermost element is 0. */
  readonly depth: number;
}

// PrintableString alphabet, plus '*' and '&' which real-world encoders emit (Go accepts them too).
const PRINTABLE = new Uint8Array(128);
for (const c of "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789 '()+,-./:=?*&") {
  PRINTABLE[c.charCodeAt(0)] = 1;
}

export class DerReader {
  constructor(
    readonly input: Buffer,
    readonly errorCode: PkiErrorCode = 'ERR_CSR_MALFORMED',
  ) {}

  fail(message: string): never {
    throw new PkiError(this.errorCode, message);
  }

  /** The single outermost element; trailing bytes are an error. */
  top(): DerElement {
    const el = this.elementAt(0, this.input.length, 0);
    if (el.end !== this.input.length) this.fail('trailing bytes after DER element');
    return el;
  }

  /** The element whose identifier octet is at `offset`; it must end by `limit`. */
  elementAt(offset: number, limit: number, depth: number): DerElement {
    if (depth > MAX_DER_DEPTH) this.fail('DER nesting too deep');
    const buf = this.input;
    limit = Math.min(limit, buf.length); // never read past the input, whatever the caller says
    if (offset + 2 > limit) this.fail('truncated DER element');
    const tag = buf.readUInt8(offset);
    if ((tag & HIGH_TAG_NUMBER) === HIGH_TAG_NUMBER) this.fail('high-tag-number form is not supported');
    let pos = offset + 1;
    const first = buf.readUInt8(pos++);
    let length = first;
    if (first & 0x80) {
      const count = first & 0x7f;
      if (count === 0) this.fail('indefinite length is not DER');
      if (count > 4) this.fail('DER length too large');
      if (pos + count > limit) this.fail('truncated DER length');
      if (buf[pos] === 0) this.fail('non-minimal DER length');
      length = 0;
      for (let i = 0; i < count; i++) length = length * 256 + buf.readUInt8(pos++);
      if (length < 0x80) this.fail('non-minimal DER length');
    }
    if (length > limit - pos) this.fail('DER length exceeds available input');
    return { tag, start: offset, contentStart: pos, end: pos + length, depth };
  }

  /** The elements inside a constructed element, in order. */
  children(parent: DerElement): DerElement[] {
    if (!(parent.tag & CONSTRUCTED)) this.fail('expected a constructed element');
    const out: DerElement[] = [];
    for (let pos = parent.contentStart; pos < parent.end; ) {
      const child = this.elementAt(pos, parent.end, parent.depth + 1);
      out.push(child);
      pos = child.end;
    }
    return out;
  }

  /** `els[index]`, or a decoding failure naming the missing field. */
  field(els: readonly DerElement[], index: number, what: string): DerElement {
    return els[index] ?? this.fail(`${what}: missing`);
  }

  /** Asserts the identifier octet; `what` names the field in the error message. */
  expect(el: DerElement, tag: number, what: string): DerElement {
    if (el.tag !== tag) this.fail(`${what}: expected tag 0x${hex2(tag)}, found 0x${hex2(el.tag)}`);
    return el;
  }

  /** Children of a SEQUENCE (or another constructed tag). */
  sequence(el: DerElement, what: string, tag: number = Tag.SEQUENCE): DerElement[] {
    return this.children(this.expect(el, tag, what));
  }

  /** The one element that makes up `el`'s whole content (EXPLICIT tags, OCTET STRING wrapping). */
  inner(el: DerElement, what: string): DerElement {
    const child = this.elementAt(el.contentStart, el.end, el.depth + 1);
    if (child.end !== el.end) this.fail(`${what}: trailing bytes`);
    return child;
  }

  /** Whole TLV bytes, without copying. */
  raw(el: DerElement): Buffer {
    return this.input.subarray(el.start, el.end);
  }

  /** Content bytes, without copying. */
  content(el: DerElement): Buffer {
    return this.input.subarray(el.contentStart, el.end);
  }

  /** INTEGER content bytes (two's complement, minimal). */
  integer(el: DerElement, what: string): Buffer {
    const c = this.content(this.expect(el, Tag.INTEGER, what));
    if (c.length === 0) this.fail(`${what}: empty INTEGER`);
    if (nonMinimalInteger(c)) {
      this.fail(`${what}: non-minimal INTEGER`);
    }
    return c;
  }

  /** A small non-negative INTEGER such as a version or pathLen. */
  smallInteger(el: DerElement, what: string): number {
    const c = this.integer(el, what);
    if (c.readUInt8(0) & 0x80 || c.length > 4) this.fail(`${what}: INTEGER out of range`);
    let n = 0;
    for (const b of c) n = n * 256 + b;
    return n;
  }

  oid(el: DerElement, what: string): string {
    return decodeOid(this.content(this.expect(el, Tag.OID, what)), (m) => this.fail(`${what}: ${m}`));
  }

  /** BIT STRING bytes; every use of ours requires whole octets (unused bits = 0). */
  bitString(el: DerElement, what: string): Buffer {
    const c = this.content(this.expect(el, Tag.BIT_STRING, what));
    if (c.length === 0) this.fail(`${what}: empty BIT STRING`);
    if (c[0] !== 0) this.fail(`${what}: BIT STRING must have no unused bits`);
    return c.subarray(1);
  }

  octetString(el: DerElement, what: string): Buffer {
    return this.content(this.expect(el, Tag.OCTET_STRING, what));
  }

  boolean(el: DerElement, what: string): boolean {
    const c = this.content(this.expect(el, Tag.BOOLEAN, what));
    if (c.length !== 1 || (c[0] !== 0 && c[0] !== 0xff)) this.fail(`${what}: BOOLEAN must be 0x00 or 0xFF`);
    return c[0] === 0xff;
  }

  null(el: DerElement, what: string): void {
    if (this.expect(el, Tag.NULL, what).end !== el.contentStart) this.fail(`${what}: NULL must be empty`);
  }

  /** Any ASN.1 character string type we know, decoded and validated for its alphabet. */
  string(el: DerElement, what: string): string {
    const decoded = decodeString(el.tag, this.content(el));
    if (decoded === undefined) this.fail(`${what}: invalid or unsupported string (tag 0x${hex2(el.tag)})`);
    return decoded;
  }

  /** IA5String content validated as ASCII; also used for IMPLICIT-tagged IA5 (GeneralName). */
  ascii(el: DerElement, what: string): string {
    const c = this.content(el);
    for (const b of c) if (b > 0x7f) this.fail(`${what}: non-ASCII byte in IA5String`);
    return c.toString('latin1', 0, c.length);
  }

  /** UTCTime or GeneralizedTime in RFC 5280's form: seconds present, 'Z', no fractions. */
  time(el: DerElement, what: string): Date {
    const c = this.content(el);
    const utc = el.tag === Tag.UTC_TIME;
    if (!utc && el.tag !== Tag.GENERALIZED_TIME) this.fail(`${what}: expected UTCTime or GeneralizedTime`);
    const date = decodeTime(c, utc);
    if (date === undefined) this.fail(`${what}: malformed time`);
    return date;
  }
}

function hex2(n: number): string {
  return n.toString(16).padStart(2, '0');
}

/** Dotted form of OID content; rejects non-minimal arcs, truncation and oversized OIDs. */
function decodeOid(c: Buffer, fail: (message: string) => never): string {
  if (c.length === 0) fail('empty OID');
  if (c.length > MAX_OID_BYTES) fail('OID too long');
  if (c.readUInt8(c.length - 1) & 0x80) fail('truncated OID arc');
  let out = '';
  let arcs = 0;
  for (let pos = 0; pos < c.length; ) {
    if (c[pos] === 0x80) fail('non-minimal OID arc');
    let end = pos;
    while (c.readUInt8(end) & 0x80) end++;
    const arc = decodeArc(c, pos, end + 1);
    if (++arcs > MAX_OID_ARCS - 1) fail('OID has too many arcs');
    out += pos === 0 ? firstArcs(arc) : '.' + arc.toString();
    pos = end + 1;
  }
  return out;
}

/** Base-128 arc; numbers while exact, bigint beyond 2^53 (e.g. 2.25 UUID arcs). */
function decodeArc(c: Buffer, from: number, to: number): number | bigint {
  if (to - from <= 7) {
    let n = 0;
    for (let i = from; i < to; i++) n = n * 128 + (c.readUInt8(i) & 0x7f);
    return n;
  }
  let n = 0n;
  for (let i = from; i < to; i++) n = (n << 7n) | BigInt(c.readUInt8(i) & 0x7f);
  return n;
}

/** The first subidentifier packs two arcs: 40 * X + Y. */
function firstArcs(v: number | bigint): string {
  if (typeof v === 'number') return v < 40 ? `0.${v}` : v < 80 ? `1.${v - 40}` : `2.${v - 80}`;
  return `2.${v - 80n}`;
}

const utf8 = (c: Buffer): string | undefined => (isUtf8(c) ? c.toString('utf8') : undefined);

/** True for the character string types `DerReader.string` decodes. */
export function isStringTag(tag: number): boolean {
  return STRING_TAGS.has(tag);
}

const STRING_TAGS: ReadonlySet<number> = new Set([
  Tag.UTF8_STRING,
  Tag.PRINTABLE_STRING,
  Tag.IA5_STRING,
  Tag.NUMERIC_STRING,
  Tag.VISIBLE_STRING,
  Tag.TELETEX_STRING,
  Tag.BMP_STRING,
  Tag.UNIVERSAL_STRING,
]);

function decodeString(tag: number, c: Buffer): string | undefined {
  switch (tag) {
    case Tag.UTF8_STRING:
      return utf8(c);
    case Tag.PRINTABLE_STRING:
      return asciiWhere(c, (b) => PRINTABLE[b] === 1);
    case Tag.IA5_STRING:
      return asciiWhere(c, () => true);
    case Tag.NUMERIC_STRING:
      return asciiWhere(c, (b) => b === 0x20 || (b >= 0x30 && b <= 0x39));
    case Tag.VISIBLE_STRING:
      return asciiWhere(c, (b) => b >= 0x20 && b < 0x7f);
    case Tag.TELETEX_STRING:
      return c.toString('latin1', 0, c.length); // T.61 is treated as Latin-1 in practice
    case Tag.BMP_STRING:
      return decodeUcs(c, 2);
    case Tag.UNIVERSAL_STRING:
      return decodeUcs(c, 4);
    default:
      return undefined;
  }
}

function asciiWhere(c: Buffer, allowed: (b: number) => boolean): string | undefined {
  for (const b of c) if (b > 0x7f || !allowed(b)) return undefined;
  return c.toString('latin1', 0, c.length);
}

/** Big-endian UCS-2 (BMPString) or UCS-4 (UniversalString); surrogates are not characters. */
function decodeUcs(c: Buffer, width: 2 | 4): string | undefined {
  if (c.length % width !== 0) return undefined;
  let out = '';
  for (let i = 0; i < c.length; i += width) {
    const cp = width === 2 ? c.readUInt16BE(i) : c.readUInt32BE(i);
    if ((cp >= 0xd800 && cp <= 0xdfff) || cp > 0x10ffff) return undefined;
    out += String.fromCodePoint(cp);
  }
  return out;
}

function decodeTime(c: Buffer, utc: boolean): Date | undefined {
  const digits = utc ? 12 : 14;
  if (c.length !== digits + 1 || c[digits] !== 0x5a /* Z */) return undefined;
  for (const digit of c.subarray(0, digits)) if (digit < 0x30 || digit > 0x39) return undefined;
  const num = (at: number, len: number): number => {
    let n = 0;
    for (let i = at; i < at + len; i++) n = n * 10 + c.readUInt8(i) - 0x30;
    return n;
  };
  let year = utc ? num(0, 2) : num(0, 4);
  if (utc) year += year >= 50 ? 1900 : 2000;
  const p = utc ? 2 : 4;
  const [month, day, hour, minute, second] = [num(p, 2), num(p + 2, 2), num(p + 4, 2), num(p + 6, 2), num(p + 8, 2)];
  if (month < 1 || month > 12 || day < 1 || hour > 23 || minute > 59 || second > 59) return undefined;
  const date = new Date(0);
  date.setUTCFullYear(year, month - 1, day); // unlike Date.UTC, no 0-99 => 19xx mapping
  date.setUTCHours(hour, minute, second, 0);
  if (date.getUTCDate() !== day) return undefined; // e.g. 31 April
  return date;
}

// ---------------------------------------------------------------------------------------------
// Writer. Inputs here come from our own code and validated requests; a bad one is a bug in the
// certificate we were about to produce, hence ERR_CERT_MALFORMED.

function writerFail(message: string): never {
  throw new PkiError('ERR_CERT_MALFORMED', message);
}

function lengthOctets(n: number): number {
  return n < 0x80 ? 1 : n < 0x100 ? 2 : n < 0x10000 ? 3 : n < 0x1000000 ? 4 : 5;
}

/** A TLV whose content is the concatenation of `parts`; one allocation. */
export function encodeTlv(tag: number, ...parts: readonly Uint8Array[]): Buffer {
  let length = 0;
  for (const p of parts) length += p.length;
  const lenOctets = lengthOctets(length);
  const out = Buffer.allocUnsafe(1 + lenOctets + length);
  out[0] = tag;
  if (lenOctets === 1) out[1] = length;
  else {
    out[1] = 0x80 | (lenOctets - 1);
    for (let i = lenOctets - 1, n = length; i >= 1; i--, n = Math.floor(n / 256)) out[1 + i] = n & 0xff;
  }
  let pos = 1 + lenOctets;
  for (const p of parts) {
    out.set(p, pos);
    pos += p.length;
  }
  return out;
}

export const encodeSequence = (...children: readonly Uint8Array[]): Buffer => encodeTlv(Tag.SEQUENCE, ...children);

/** SET OF: DER sorts the encoded elements. */
export function encodeSet(...children: readonly Uint8Array[]): Buffer {
  return encodeTlv(Tag.SET, ...[...children].sort((a, b) => Buffer.compare(a, b)));
}

/** A leading 0x00 before a clear high bit, or 0xff before a set one, is a redundant sign byte. */
function nonMinimalInteger(content: Uint8Array): boolean {
  const [first, second] = content;
  return second !== undefined && ((first === 0 && second < 0x80) || (first === 0xff && second >= 0x80));
}

/** INTEGER from content bytes, which must already be minimal two's complement. */
export function encodeInteger(content: Uint8Array): Buffer {
  if (content.length === 0) writerFail('empty INTEGER');
  if (nonMinimalInteger(content)) {
    writerFail('non-minimal INTEGER content');
  }
  return encodeTlv(Tag.INTEGER, content);
}

/** INTEGER for a small non-negative number (versions, pathLen). */
export function encodeSmallInteger(n: number): Buffer {
  if (!Number.isSafeInteger(n) || n < 0) writerFail(`not a small non-negative integer: ${n}`);
  const bytes: number[] = [];
  do {
    bytes.unshift(n & 0xff);
    n = Math.floor(n / 256);
  } while (n > 0);
  if ((bytes[0] ?? 0) & 0x80) bytes.unshift(0);
  return encodeTlv(Tag.INTEGER, Uint8Array.from(bytes));
}

/** OID from dotted form. Hot paths should encode once into a module constant. */
export function encodeOid(dotted: string): Buffer {
  const text = dotted.split('.');
  if (text.length < 2 || text.length > MAX_OID_ARCS || !text.every((a) => /^(0|[1-9][0-9]*)$/.test(a))) {
    writerFail(`invalid OID ${dotted}`);
  }
  const [first, second, ...rest] = text.map((a) => BigInt(a));
  if (first === undefined || second === undefined || first > 2n || (first < 2n && second >= 40n)) writerFail(`invalid OID ${dotted}`);
  const bytes: number[] = [];
  for (const arc of [first * 40n + second, ...rest]) bytes.push(...base128(arc));
  if (bytes.length > MAX_OID_BYTES) writerFail(`OID too long: ${dotted}`);
  return encodeTlv(Tag.OID, Uint8Array.from(bytes));
}

function base128(arc: bigint): number[] {
  const out = [Number(arc & 0x7fn)];
  for (let n = arc >> 7n; n > 0n; n >>= 7n) out.unshift(Number(n & 0x7fn) | 0x80);
  return out;
}

export function encodeBitString(bytes: Uint8Array, unusedBits = 0): Buffer {
  if (unusedBits < 0 || unusedBits > 7 || (bytes.length === 0 && unusedBits !== 0)) writerFail('bad BIT STRING');
  return encodeTlv(Tag.BIT_STRING, Uint8Array.of(unusedBits), bytes);
}

/**
 * A named-bit-list BIT STRING (KeyUsage), DER-minimal: trailing zero bits are dropped, so
 * digitalSignature alone is 03 02 07 80.
 */
export function encodeNamedBits(bitNumbers: readonly number[]): Buffer {
  const highest = Math.max(-1, ...bitNumbers);
  if (highest < 0) return encodeBitString(new Uint8Array(0));
  const bytes = new Uint8Array((highest >> 3) + 1);
  for (const bit of bitNumbers) bytes[bit >> 3] = (bytes[bit >> 3] ?? 0) | (0x80 >> (bit & 7));
  return encodeBitString(bytes, 7 - (highest & 7));
}

export const encodeOctetString = (bytes: Uint8Array): Buffer => encodeTlv(Tag.OCTET_STRING, bytes);
export const encodeBoolean = (value: boolean): Buffer => encodeTlv(Tag.BOOLEAN, Uint8Array.of(value ? 0xff : 0));
export const encodeNull = (): Buffer => encodeTlv(Tag.NULL);

/** IA5String (or an IMPLICIT tag over one, e.g. GeneralName); rejects non-ASCII. */
export function encodeAscii(text: string, tag: number = Tag.IA5_STRING): Buffer {
  for (let i = 0; i < text.length; i++) if (text.charCodeAt(i) > 0x7f) writerFail('non-ASCII character in IA5String');
  return encodeTlv(tag, Buffer.from(text, 'latin1'));
}

export const encodeUtf8String = (text: string): Buffer => encodeTlv(Tag.UTF8_STRING, Buffer.from(text, 'utf8'));

export function encodePrintableString(text: string): Buffer {
  for (let i = 0; i < text.length; i++) {
    if (PRINTABLE[text.charCodeAt(i)] !== 1) writerFail('character not allowed in PrintableString');
  }
  return encodeTlv(Tag.PRINTABLE_STRING, Buffer.from(text, 'latin1'));
}

/** RFC 5280 §4.1.2.5: UTCTime for 1950-2049, GeneralizedTime otherwise; whole seconds, 'Z'. */
export function encodeTime(date: Date): Buffer {
  const ms = date.getTime();
  if (!Number.isFinite(ms)) writerFail('invalid date');
  const year = date.getUTCFullYear();
  if (year < 0 || year > 9999) writerFail(`year ${year} cannot be encoded`);
  const rest =
    pad2(date.getUTCMonth() + 1) +
    pad2(date.getUTCDate()) +
    pad2(date.getUTCHours()) +
    pad2(date.getUTCMinutes()) +
    pad2(date.getUTCSeconds()) +
    'Z';
  if (year >= 1950 && year <= 2049) return encodeTlv(Tag.UTC_TIME, Buffer.from(pad2(year % 100) + rest, 'latin1'));
  return encodeTlv(Tag.GENERALIZED_TIME, Buffer.from(String(year).padStart(4, '0') + rest, 'latin1'));
}

function pad2(n: number): string {
  return n < 10 ? '0' + n : String(n);
}

/** [n] EXPLICIT: a constructed context tag wrapping complete elements. */
export const encodeExplicit = (n: number, ...inner: readonly Uint8Array[]): Buffer => encodeTlv(contextTag(n, true), ...inner);

/** [n] IMPLICIT: the content of the underlying type under a context tag. */
export const encodeImplicit = (n: number, content: Uint8Array, constructed = false): Buffer =>
  encodeTlv(contextTag(n, constructed), content);
