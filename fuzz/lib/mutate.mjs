// @ts-check
// Generic mutators over bytes, strings and JSON values. Each takes the case's Rng and returns a new
// value (inputs are never modified) plus, where useful, a short name for the case's description.

/** Byte values that sit on parser boundaries (sign bits, length forms, tag classes). */
export const INTERESTING_BYTES = [
  0x00, 0x01, 0x02, 0x03, 0x04, 0x05, 0x06, 0x0c, 0x13, 0x16, 0x1f, 0x20, 0x30, 0x31, 0x7f, 0x80, 0x81, 0x82, 0x83, 0x84, 0x85, 0xa0, 0xbf,
  0xfe, 0xff,
];

const BYTE_MUTATORS = {
  bitflip(rng, buf) {
    const out = Buffer.from(buf);
    for (let n = rng.range(1, 8); n > 0 && out.length > 0; n--) out[rng.int(out.length)] ^= 1 << rng.int(8);
    return out;
  },
  'byte-set'(rng, buf) {
    const out = Buffer.from(buf);
    if (out.length > 0) out[rng.int(out.length)] = rng.pick(INTERESTING_BYTES);
    return out;
  },
  'byte-random'(rng, buf) {
    const out = Buffer.from(buf);
    for (let n = rng.range(1, 4); n > 0 && out.length > 0; n--) out[rng.int(out.length)] = rng.int(256);
    return out;
  },
  insert(rng, buf) {
    const at = rng.int(buf.length + 1);
    const extra = rng.bool(0.5) ? rng.bytes(rng.range(1, 16)) : Buffer.alloc(rng.range(1, 8), rng.pick(INTERESTING_BYTES));
    return Buffer.concat([buf.subarray(0, at), extra, buf.subarray(at)]);
  },
  delete(rng, buf) {
    if (buf.length === 0) return buf;
    const at = rng.int(buf.length);
    const n = Math.min(buf.length - at, rng.size(32) + 1);
    return Buffer.concat([buf.subarray(0, at), buf.subarray(at + n)]);
  },
  truncate(rng, buf) {
    return Buffer.from(buf.subarray(0, rng.int(buf.length + 1)));
  },
  'duplicate-range'(rng, buf) {
    if (buf.length === 0) return buf;
    const from = rng.int(buf.length);
    const n = Math.min(buf.length - from, rng.size(64) + 1);
    const at = rng.int(buf.length + 1);
    return Buffer.concat([buf.subarray(0, at), buf.subarray(from, from + n), buf.subarray(at)]);
  },
  'append-garbage'(rng, buf) {
    return Buffer.concat([buf, rng.bytes(rng.range(1, 64))]);
  },
  'swap-bytes'(rng, buf) {
    const out = Buffer.from(buf);
    if (out.length < 2) return out;
    const i = rng.int(out.length);
    const j = rng.int(out.length);
    [out[i], out[j]] = [out[j], out[i]];
    return out;
  },
};

export const BYTE_MUTATOR_NAMES = Object.keys(BYTE_MUTATORS);

/** One random byte-level mutation; returns [bytes, name]. */
export function mutateBytes(rng, buf, name = rng.pick(BYTE_MUTATOR_NAMES)) {
  return [BYTE_MUTATORS[name](rng, buf), name];
}

/** Characters that break parsers of URL-like and base64-like strings. */
export const NASTY_CHARS = [
  '%',
  '%2F',
  '%00',
  '?',
  '#',
  '/',
  '//',
  '.',
  '..',
  ':',
  '@',
  ' ',
  '\t',
  '\n',
  '\r\n',
  '\0',
  '\\',
  '"',
  "'",
  '<',
  '=',
  '+',
  '-',
  '_',
  '~',
  '*',
  ',',
  ';',
  '[',
  ']',
  '{',
  '}',
  'A',
  'Z',
  'é',
  'ß',
  'İ',
  'ı',
  '\u212a' /* Kelvin sign, lowercases to k */,
  '\u00a0',
  '\u200b',
  '\ufeff',
  '\ud800',
  '\udfff',
  '😀',
  '\uffff',
  '\u0085',
  '\u2028',
];

/** Edits a string: inserts, deletes, replaces, repeats, case-flips. Returns [text, name]. */
export function mutateString(rng, text) {
  const name = rng.pick(['insert-char', 'delete', 'replace', 'repeat', 'case', 'truncate', 'duplicate']);
  const at = rng.int(text.length + 1);
  switch (name) {
    case 'insert-char':
      return [text.slice(0, at) + rng.pick(NASTY_CHARS) + text.slice(at), name];
    case 'delete':
      return [text.slice(0, at) + text.slice(at + rng.range(1, 8)), name];
    case 'replace':
      return [text.slice(0, at) + rng.pick(NASTY_CHARS) + text.slice(at + 1), name];
    case 'repeat': {
      const piece = text.slice(at, at + rng.range(1, 16)) || 'a';
      return [text.slice(0, at) + piece.repeat(rng.pick([2, 16, 300, 5000])) + text.slice(at), name];
    }
    case 'case':
      return [text.slice(0, at) + text.slice(at, at + rng.range(1, 12)).toUpperCase() + text.slice(at + 12), name];
    case 'truncate':
      return [text.slice(0, at), name];
    default:
      return [text + text.slice(at), name];
  }
}

/** Values of every JSON type, and of none (undefined drops the member). */
export function weirdJsonValue(rng, depth = 0) {
  const kind = rng.int(depth > 2 ? 10 : 13);
  switch (kind) {
    case 0:
      return null;
    case 1:
      return rng.bool();
    case 2:
      return rng.pick([0, -1, 1, 0.5, -0.0, 1e308, -1e308, 2 ** 53 + 1, 2 ** 31, 2 ** 32, Number.MAX_SAFE_INTEGER, 1_900_000_000, 1e21]);
    case 3:
      return '';
    case 4:
      return rng.pick(NASTY_CHARS).repeat(rng.pick([1, 2, 100]));
    case 5:
      return 'x'.repeat(rng.pick([1, 255, 256, 2048, 2049, 70_000]));
    case 6:
      return rng.pick([
        'true',
        'null',
        '0',
        '1900000000',
        '__proto__',
        'constructor',
        'toString',
        'spiffe://cluster.local',
        'spiffe://cluster.local/ns/app/sa/api',
      ]);
    case 7:
      return undefined;
    case 8:
      return '\ud800\udc00\ud800';
    case 9:
      return rng.bytes(rng.range(1, 24)).toString('latin1');
    case 10:
      return [weirdJsonValue(rng, depth + 1)];
    case 11:
      return { [rng.pick(['a', '__proto__', 'constructor', '', 'keyType'])]: weirdJsonValue(rng, depth + 1) };
    default:
      return nestedArray(rng.pick([10, 100, 1000]));
  }
}

/** JSON text nested `depth` deep, as text: JSON.stringify itself overflows the stack around 5,000. */
export function deepJsonText(depth, open = '[', close = ']') {
  return open.repeat(depth) + close.repeat(depth);
}

export function nestedArray(depth) {
  let v = [];
  for (let i = 0; i < depth; i++) v = [v];
  return v;
}

/**
 * Mutates a JSON object's members: set a member to a weird value, delete one, add an unknown one,
 * change a value's type, or mutate a string value. Returns [object, description].
 */
export function mutateJsonObject(rng, object, keys, valueFor = weirdJsonValue) {
  const out = { ...object }; // members are replaced, never edited in place
  const key = rng.bool(0.85) && keys.length > 0 ? rng.pick(keys) : rng.pick(['extra', '__proto__', 'constructor', '', 'a'.repeat(300)]);
  const op = rng.int(5);
  if (op === 0) {
    delete out[key];
    return [out, `delete ${key}`];
  }
  if (op === 1 && typeof out[key] === 'string') {
    const [text, how] = mutateString(rng, out[key]);
    out[key] = text;
    return [out, `${how} ${key}`];
  }
  if (op === 2 && out[key] !== undefined) {
    out[key] = [out[key]];
    return [out, `wrap ${key} in array`];
  }
  const value = valueFor(rng, key);
  if (value === undefined) delete out[key];
  else if (key === '__proto__') Object.defineProperty(out, key, { value, enumerable: true, configurable: true, writable: true });
  else out[key] = value;
  return [out, `set ${key}`];
}
