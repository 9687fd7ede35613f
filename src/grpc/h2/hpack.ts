/**
 * HPACK (RFC 7541) for meshca's HTTP/2 server: a full decoder (static and dynamic tables, Huffman)
 * for request header blocks, and an encoder for the few response blocks the server sends, which
 * uses only literals that the peer does not index, so the peer's table never depends on us.
 */

/** A malformed header block. The decoder's table can no longer be trusted: a connection error. */
export class HpackError extends Error {
  readonly code = 'ERR_HPACK';
}

/** RFC 7541 Appendix A. */
const STATIC_TABLE: readonly (readonly [string, string])[] = [
  [':authority', ''],
  [':method', 'GET'],
  [':method', 'POST'],
  [':path', '/'],
  [':path', '/index.html'],
  [':scheme', 'http'],
  [':scheme', 'https'],
  [':status', '200'],
  [':status', '204'],
  [':status', '206'],
  [':status', '304'],
  [':status', '400'],
  [':status', '404'],
  [':status', '500'],
  ['accept-charset', ''],
  ['accept-encoding', 'gzip, deflate'],
  ['accept-language', ''],
  ['accept-ranges', ''],
  ['accept', ''],
  ['access-control-allow-origin', ''],
  ['age', ''],
  ['allow', ''],
  ['authorization', ''],
  ['cache-control', ''],
  ['content-disposition', ''],
  ['content-encoding', ''],
  ['content-language', ''],
  ['content-length', ''],
  ['content-location', ''],
  ['content-range', ''],
  ['content-type', ''],
  ['cookie', ''],
  ['date', ''],
  ['etag', ''],
  ['expect', ''],
  ['expires', ''],
  ['from', ''],
  ['host', ''],
  ['if-match', ''],
  ['if-modified-since', ''],
  ['if-none-match', ''],
  ['if-range', ''],
  ['if-unmodified-since', ''],
  ['last-modified', ''],
  ['link', ''],
  ['location', ''],
  ['max-forwards', ''],
  ['proxy-authenticate', ''],
  ['proxy-authorization', ''],
  ['range', ''],
  ['referer', ''],
  ['refresh', ''],
  ['retry-after', ''],
  ['server', ''],
  ['set-cookie', ''],
  ['strict-transport-security', ''],
  ['transfer-encoding', ''],
  ['user-agent', ''],
  ['vary', ''],
  ['via', ''],
  ['www-authenticate', ''],
];

/** RFC 7541 Appendix B: code, bit length, for symbols 0–255 and 256 (EOS); exported for tests. */
// biome-ignore format: the RFC's table, eight codes to a line
export const HUFFMAN_CODES: readonly number[] = [
  0x1ff8, 13, 0x7fffd8, 23, 0xfffffe2, 28, 0xfffffe3, 28, 0xfffffe4, 28, 0xfffffe5, 28, 0xfffffe6, 28, 0xfffffe7, 28,
  0xfffffe8, 28, 0xffffea, 24, 0x3ffffffc, 30, 0xfffffe9, 28, 0xfffffea, 28, 0x3ffffffd, 30, 0xfffffeb, 28, 0xfffffec, 28,
  0xfffffed, 28, 0xfffffee, 28, 0xfffffef, 28, 0xffffff0, 28, 0xffffff1, 28, 0xffffff2, 28, 0x3ffffffe, 30, 0xffffff3, 28,
  0xffffff4, 28, 0xffffff5, 28, 0xffffff6, 28, 0xffffff7, 28, 0xffffff8, 28, 0xffffff9, 28, 0xffffffa, 28, 0xffffffb, 28,
  0x14, 6, 0x3f8, 10, 0x3f9, 10, 0xffa, 12, 0x1ff9, 13, 0x15, 6, 0xf8, 8, 0x7fa, 11,
  0x3fa, 10, 0x3fb, 10, 0xf9, 8, 0x7fb, 11, 0xfa, 8, 0x16, 6, 0x17, 6, 0x18, 6,
  0x0, 5, 0x1, 5, 0x2, 5, 0x19, 6, 0x1a, 6, 0x1b, 6, 0x1c, 6, 0x1d, 6,
  0x1e, 6, 0x1f, 6, 0x5c, 7, 0xfb, 8, 0x7ffc, 15, 0x20, 6, 0xffb, 12, 0x3fc, 10,
  0x1ffa, 13, 0x21, 6, 0x5d, 7, 0x5e, 7, 0x5f, 7, 0x60, 7, 0x61, 7, 0x62, 7,
  0x63, 7, 0x64, 7, 0x65, 7, 0x66, 7, 0x67, 7, 0x68, 7, 0x69, 7, 0x6a, 7,
  0x6b, 7, 0x6c, 7, 0x6d, 7, 0x6e, 7, 0x6f, 7, 0x70, 7, 0x71, 7, 0x72, 7,
  0xfc, 8, 0x73, 7, 0xfd, 8, 0x1ffb, 13, 0x7fff0, 19, 0x1ffc, 13, 0x3ffc, 14, 0x22, 6,
  0x7ffd, 15, 0x3, 5, 0x23, 6, 0x4, 5, 0x24, 6, 0x5, 5, 0x25, 6, 0x26, 6,
  0x27, 6, 0x6, 5, 0x74, 7, 0x75, 7, 0x28, 6, 0x29, 6, 0x2a, 6, 0x7, 5,
  0x2b, 6, 0x76, 7, 0x2c, 6, 0x8, 5, 0x9, 5, 0x2d, 6, 0x77, 7, 0x78, 7,
  0x79, 7, 0x7a, 7, 0x7b, 7, 0x7ffe, 15, 0x7fc, 11, 0x3ffd, 14, 0x1ffd, 13, 0xffffffc, 28,
  0xfffe6, 20, 0x3fffd2, 22, 0xfffe7, 20, 0xfffe8, 20, 0x3fffd3, 22, 0x3fffd4, 22, 0x3fffd5, 22, 0x7fffd9, 23,
  0x3fffd6, 22, 0x7fffda, 23, 0x7fffdb, 23, 0x7fffdc, 23, 0x7fffdd, 23, 0x7fffde, 23, 0xffffeb, 24, 0x7fffdf, 23,
  0xffffec, 24, 0xffffed, 24, 0x3fffd7, 22, 0x7fffe0, 23, 0xffffee, 24, 0x7fffe1, 23, 0x7fffe2, 23, 0x7fffe3, 23,
  0x7fffe4, 23, 0x1fffdc, 21, 0x3fffd8, 22, 0x7fffe5, 23, 0x3fffd9, 22, 0x7fffe6, 23, 0x7fffe7, 23, 0xffffef, 24,
  0x3fffda, 22, 0x1fffdd, 21, 0xfffe9, 20, 0x3fffdb, 22, 0x3fffdc, 22, 0x7fffe8, 23, 0x7fffe9, 23, 0x1fffde, 21,
  0x7fffea, 23, 0x3fffdd, 22, 0x3fffde, 22, 0xfffff0, 24, 0x1fffdf, 21, 0x3fffdf, 22, 0x7fffeb, 23, 0x7fffec, 23,
  0x1fffe0, 21, 0x1fffe1, 21, 0x3fffe0, 22, 0x1fffe2, 21, 0x7fffed, 23, 0x3fffe1, 22, 0x7fffee, 23, 0x7fffef, 23,
  0xfffea, 20, 0x3fffe2, 22, 0x3fffe3, 22, 0x3fffe4, 22, 0x7ffff0, 23, 0x3fffe5, 22, 0x3fffe6, 22, 0x7ffff1, 23,
  0x3ffffe0, 26, 0x3ffffe1, 26, 0xfffeb, 20, 0x7fff1, 19, 0x3fffe7, 22, 0x7ffff2, 23, 0x3fffe8, 22, 0x1ffffec, 25,
  0x3ffffe2, 26, 0x3ffffe3, 26, 0x3ffffe4, 26, 0x7ffffde, 27, 0x7ffffdf, 27, 0x3ffffe5, 26, 0xfffff1, 24, 0x1ffffed, 25,
  0x7fff2, 19, 0x1fffe3, 21, 0x3ffffe6, 26, 0x7ffffe0, 27, 0x7ffffe1, 27, 0x3ffffe7, 26, 0x7ffffe2, 27, 0xfffff2, 24,
  0x1fffe4, 21, 0x1fffe5, 21, 0x3ffffe8, 26, 0x3ffffe9, 26, 0xffffffd, 28, 0x7ffffe3, 27, 0x7ffffe4, 27, 0x7ffffe5, 27,
  0xfffec, 20, 0xfffff3, 24, 0xfffed, 20, 0x1fffe6, 21, 0x3fffe9, 22, 0x1fffe7, 21, 0x1fffe8, 21, 0x7ffff3, 23,
  0x3fffea, 22, 0x3fffeb, 22, 0x1ffffee, 25, 0x1ffffef, 25, 0xfffff4, 24, 0xfffff5, 24, 0x3ffffea, 26, 0x7ffff4, 23,
  0x3ffffeb, 26, 0x7ffffe6, 27, 0x3ffffec, 26, 0x3ffffed, 26, 0x7ffffe7, 27, 0x7ffffe8, 27, 0x7ffffe9, 27, 0x7ffffea, 27,
  0x7ffffeb, 27, 0xffffffe, 28, 0x7ffffec, 27, 0x7ffffed, 27, 0x7ffffee, 27, 0x7ffffef, 27, 0x7fffff0, 27, 0x3ffffee, 26,
  0x3fffffff, 30,
];

const EOS = 256;
// A transition of the Huffman decoder, packed: next state (bits 0-7), up to two symbols completed
// on the way (8-15, 16-23), how many (24-25), and flags.
const EMITTED_SHIFT = 24;
const FAIL = 1 << 26;
const ACCEPT = 1 << 27;

/**
 * The decoder reads a byte at a time: a state is an inner node of the code tree (there are 256),
 * and each of its 256 transitions says where eight more bits lead, which symbols they complete (at
 * most two: the shortest code is 5 bits), and whether a string may end there. A string may end
 * only on a symbol boundary or within the first 7 bits of the all-ones EOS prefix (§5.2).
 */
const HUFFMAN_TRANSITIONS: Uint32Array = (() => {
  // Inner nodes 0..255; a child >= 0 is an inner node, ~symbol is a leaf.
  const children: number[][] = [[-1, -1]];
  for (let symbol = 0; symbol <= EOS; symbol++) {
    const code = HUFFMAN_CODES[2 * symbol]!;
    const bits = HUFFMAN_CODES[2 * symbol + 1]!;
    let node = 0;
    for (let i = bits - 1; i > 0; i--) {
      const bit = (code >>> i) & 1;
      let next = children[node]![bit]!;
      if (next === -1) {
        next = children.length;
        children.push([-1, -1]);
        children[node]![bit] = next;
      }
      node = next;
    }
    children[node]![code & 1] = ~symbol;
  }
  // The all-ones path: nodes at depth <= 7 are valid padding.
  const padding = new Set<number>([0]);
  for (let node = 0, depth = 1; depth <= 7; depth++) {
    node = children[node]![1]!;
    padding.add(node);
  }
  const table = new Uint32Array(children.length * 256);
  for (let state = 0; state < children.length; state++) {
    for (let byte = 0; byte < 256; byte++) {
      let node = state;
      let entry = 0;
      let emitted = 0;
      for (let i = 7; i >= 0; i--) {
        const child = children[node]![(byte >>> i) & 1]!;
        if (child >= 0) node = child;
        else if (~child === EOS) entry |= FAIL;
        else {
          entry |= ~child << (8 + 8 * emitted++);
          node = 0;
        }
      }
      table[state * 256 + byte] = entry | (emitted << EMITTED_SHIFT) | node | (padding.has(node) ? ACCEPT : 0);
    }
  }
  return table;
})();

/** Scratch for decoded strings; a string of n Huffman octets decodes to at most 8n/5 octets. */
let scratch = Buffer.allocUnsafe(4096);

function huffmanDecode(block: Buffer, start: number, end: number): string {
  const need = Math.ceil(((end - start) * 8) / 5);
  if (scratch.length < need) scratch = Buffer.allocUnsafe(need);
  const out = scratch;
  let t = ACCEPT;
  let n = 0;
  for (let i = start; i < end; i++) {
    t = HUFFMAN_TRANSITIONS[((t & 0xff) << 8) | block[i]!]!;
    const emitted = (t >>> EMITTED_SHIFT) & 3;
    if (emitted !== 0) {
      out[n++] = (t >>> 8) & 0xff;
      if (emitted === 2) out[n++] = (t >>> 16) & 0xff;
    }
    if (t & FAIL) throw new HpackError('Huffman string contains EOS');
  }
  if (!(t & ACCEPT)) throw new HpackError('Huffman string has invalid padding');
  return out.toString('latin1', 0, n);
}

/** One decoded header field, in order. Values are Latin-1 strings of the octets sent. */
export type HeaderField = readonly [name: string, value: string];

/** Entry overhead counted toward table and header-list sizes (§4.1). */
const ENTRY_OVERHEAD = 32;
/** Larger integers than this are not sizes or indices a sane peer sends. */
const MAX_INTEGER = 2 ** 31 - 1;

/** Decodes a connection's request header blocks, in order; one instance per connection. */
export class HpackDecoder {
  /** Newest first. */
  readonly #table: HeaderField[] = [];
  #tableBytes = 0;
  #maxTableBytes: number;
  #pos = 0;
  #block: Buffer = Buffer.alloc(0);

  /** @param settingsMaxTableBytes our SETTINGS_HEADER_TABLE_SIZE (4,096 unless advertised otherwise) */
  constructor(private readonly settingsMaxTableBytes = 4096) {
    this.#maxTableBytes = settingsMaxTableBytes;
  }

  /** The fields of one complete header block (HEADERS plus CONTINUATION fragments). */
  decode(block: Buffer): HeaderField[] {
    this.#block = block;
    this.#pos = 0;
    const fields: HeaderField[] = [];
    let sizeUpdateAllowed = true;
    while (this.#pos < block.length) {
      const byte = block[this.#pos]!;
      if (byte & 0x80) {
        fields.push(this.#entry(this.#integer(7)));
      } else if (byte & 0x40) {
        const field = this.#literal(6);
        this.#insert(field);
        fields.push(field);
      } else if (byte & 0x20) {
        // §4.2: only at the start of a block, and never above what our SETTINGS allow.
        if (!sizeUpdateAllowed) throw new HpackError('dynamic table size update after a header field');
        const size = this.#integer(5);
        if (size > this.settingsMaxTableBytes) throw new HpackError('dynamic table size update above SETTINGS_HEADER_TABLE_SIZE');
        this.#maxTableBytes = size;
        this.#evict(0);
        continue;
      } else {
        fields.push(this.#literal(4)); // without indexing (0000) or never indexed (0001)
      }
      sizeUpdateAllowed = false;
    }
    this.#block = Buffer.alloc(0);
    return fields;
  }

  #integer(prefixBits: number): number {
    const block = this.#block;
    const max = (1 << prefixBits) - 1;
    let value = block[this.#pos++]! & max;
    if (value < max) return value;
    for (let shift = 0; ; shift += 7) {
      if (this.#pos >= block.length) throw new HpackError('truncated integer');
      const byte = block[this.#pos++]!;
      value += (byte & 0x7f) * 2 ** shift;
      if (value > MAX_INTEGER) throw new HpackError('integer too large');
      if (!(byte & 0x80)) return value;
    }
  }

  #string(): string {
    if (this.#pos >= this.#block.length) throw new HpackError('truncated string');
    const huffman = (this.#block[this.#pos]! & 0x80) !== 0;
    const length = this.#integer(7);
    const start = this.#pos;
    const end = start + length;
    if (end > this.#block.length) throw new HpackError('string runs past the header block');
    this.#pos = end;
    return huffman ? huffmanDecode(this.#block, start, end) : this.#block.toString('latin1', start, end);
  }

  #literal(prefixBits: number): HeaderField {
    const index = this.#integer(prefixBits);
    const name = index === 0 ? this.#string() : this.#entry(index)[0];
    return [name, this.#string()];
  }

  #entry(index: number): HeaderField {
    if (index === 0) throw new HpackError('index 0');
    if (index <= STATIC_TABLE.length) return STATIC_TABLE[index - 1]!;
    const entry = this.#table[index - STATIC_TABLE.length - 1];
    if (!entry) throw new HpackError(`index ${index} is not in the table`);
    return entry;
  }

  #insert(field: HeaderField): void {
    const size = field[0].length + field[1].length + ENTRY_OVERHEAD;
    this.#evict(size);
    // §4.4: an entry larger than the table empties it and is not added.
    if (size > this.#maxTableBytes) return;
    this.#table.unshift(field);
    this.#tableBytes += size;
  }

  /** Evicts oldest entries until `incoming` more bytes fit. */
  #evict(incoming: number): void {
    while (this.#table.length > 0 && this.#tableBytes + incoming > this.#maxTableBytes) {
      const [name, value] = this.#table.pop()!;
      this.#tableBytes -= name.length + value.length + ENTRY_OVERHEAD;
    }
  }
}

/** The §4.1 size of a header list: what SETTINGS_MAX_HEADER_LIST_SIZE bounds. */
export function headerListBytes(fields: readonly HeaderField[]): number {
  let bytes = 0;
  for (const [name, value] of fields) bytes += name.length + value.length + ENTRY_OVERHEAD;
  return bytes;
}

const STATIC_NAME_INDEX = new Map<string, number>();
for (let i = STATIC_TABLE.length - 1; i >= 0; i--) STATIC_NAME_INDEX.set(STATIC_TABLE[i]![0], i + 1);

/**
 * A response header block: ":status: 200" from the static table, every other field a literal
 * without indexing (a static name index where there is one), no Huffman. Values are Latin-1.
 */
export function encodeHeaderBlock(fields: readonly HeaderField[]): Buffer {
  const out: number[] = [];
  for (const [name, value] of fields) {
    if (name === ':status' && value === '200') {
      out.push(0x88);
      continue;
    }
    const index = STATIC_NAME_INDEX.get(name);
    if (index === undefined) {
      out.push(0x00);
      pushString(out, name);
    } else pushInteger(out, 0x00, 4, index);
    pushString(out, value);
  }
  return Buffer.from(out);
}

function pushString(out: number[], text: string): void {
  pushInteger(out, 0x00, 7, text.length);
  for (let i = 0; i < text.length; i++) out.push(text.charCodeAt(i) & 0xff);
}

function pushInteger(out: number[], flags: number, prefixBits: number, value: number): void {
  const max = (1 << prefixBits) - 1;
  if (value < max) {
    out.push(flags | value);
    return;
  }
  out.push(flags | max);
  let rest = value - max;
  while (rest >= 0x80) {
    out.push((rest & 0x7f) | 0x80);
    rest = Math.floor(rest / 128);
  }
  out.push(rest);
}
