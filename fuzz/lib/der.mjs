// @ts-check
// Lenient DER tools for building and mutating test inputs. Independent of src/pki/der.ts on purpose:
// the fuzzer must be able to produce what the parser under test refuses.

import { INTERESTING_BYTES, mutateBytes } from './mutate.mjs';

/** Length octets for n (definite, minimal). */
export function encodeLength(n) {
  if (n < 0x80) return Buffer.of(n);
  const bytes = [];
  for (let v = n; v > 0; v = Math.floor(v / 256)) bytes.unshift(v & 0xff);
  return Buffer.from([0x80 | bytes.length, ...bytes]);
}

export function tlv(tag, ...parts) {
  const content = Buffer.concat(parts);
  return Buffer.concat([Buffer.of(tag), encodeLength(content.length), content]);
}

/** OID content octets from dotted form; arcs may be bigint-sized strings. */
export function oidContent(dotted) {
  const arcs = dotted.split('.').map((a) => BigInt(a));
  const out = [];
  const first = arcs[0] * 40n + arcs[1];
  for (const arc of [first, ...arcs.slice(2)]) {
    const chunk = [Number(arc & 0x7fn)];
    for (let v = arc >> 7n; v > 0n; v >>= 7n) chunk.unshift(Number(v & 0x7fn) | 0x80);
    out.push(...chunk);
  }
  return Buffer.from(out);
}

/**
 * A tree node: { tag, children } for constructed elements (and for BIT/OCTET STRINGs that wrap DER,
 * with `prefix` holding a BIT STRING's unused-bits octet), or { tag, content } for leaves.
 */
function parseElements(buf, start, end, depth) {
  const nodes = [];
  let pos = start;
  while (pos < end) {
    if (pos + 2 > end) return undefined;
    const tag = buf[pos];
    if ((tag & 0x1f) === 0x1f) return undefined;
    let len = buf[pos + 1];
    let p = pos + 2;
    if (len & 0x80) {
      const count = len & 0x7f;
      if (count === 0 || count > 4 || p + count > end) return undefined;
      len = 0;
      for (let i = 0; i < count; i++) len = len * 256 + buf[p++];
    }
    if (p + len > end) return undefined;
    nodes.push(toNode(buf, tag, p, p + len, depth));
    pos = p + len;
  }
  return nodes;
}

function toNode(buf, tag, start, end, depth) {
  if (depth < 40) {
    if (tag & 0x20) {
      const children = parseElements(buf, start, end, depth + 1);
      if (children !== undefined) return { tag, children };
    } else if ((tag === 0x04 || tag === 0x03) && end - start >= 2) {
      const skip = tag === 0x03 ? 1 : 0;
      if (tag !== 0x03 || buf[start] === 0) {
        const first = buf[start + skip];
        if (first === 0x30 || first === 0x31) {
          const children = parseElements(buf, start + skip, end, depth + 1);
          if (children !== undefined && children.length === 1)
            return { tag, prefix: Buffer.from(buf.subarray(start, start + skip)), children };
        }
      }
    }
  }
  return { tag, content: Buffer.from(buf.subarray(start, end)) };
}

/** The DER as a tree, or undefined when it is not one well-formed element. */
export function parseTree(buf) {
  const nodes = parseElements(buf, 0, buf.length, 0);
  return nodes?.length === 1 ? nodes[0] : undefined;
}

export function encodeTree(node) {
  if (node.children) return tlv(node.tag, node.prefix ?? Buffer.alloc(0), ...node.children.map(encodeTree));
  return tlv(node.tag, node.content);
}

export function cloneTree(node) {
  return node.children
    ? { tag: node.tag, prefix: node.prefix, children: node.children.map(cloneTree) }
    : { tag: node.tag, content: Buffer.from(node.content) };
}

/** Every node with its parent, depth-first. */
export function allNodes(root) {
  const out = [];
  const walk = (node, parent, index) => {
    out.push({ node, parent, index });
    node.children?.forEach((child, i) => walk(child, node, i));
  };
  walk(root, undefined, -1);
  return out;
}

/** Where every TLV header sits in `buf` (lenient; descends into constructed and wrapping strings). */
export function tlvHeaders(buf) {
  const out = [];
  const walk = (start, end, depth) => {
    let pos = start;
    while (pos + 2 <= end && depth < 40) {
      const tag = buf[pos];
      let len = buf[pos + 1];
      let p = pos + 2;
      if (len & 0x80) {
        const count = len & 0x7f;
        if (count === 0 || count > 4 || p + count > end) return;
        len = 0;
        for (let i = 0; i < count; i++) len = len * 256 + buf[p++];
      }
      if (p + len > end) return;
      out.push({ offset: pos, lengthOffset: pos + 1, contentStart: p, length: len, tag });
      if (tag & 0x20) walk(p, p + len, depth + 1);
      else if (tag === 0x04 && buf[p] === 0x30) walk(p, p + len, depth + 1);
      else if (tag === 0x03 && buf[p] === 0 && buf[p + 1] === 0x30) walk(p + 1, p + len, depth + 1);
      pos = p + len;
    }
  };
  walk(0, buf.length, 0);
  return out;
}

/** Length octets that lie: off by one, zero, indefinite, non-minimal, huge. */
function lyingLength(rng, real) {
  return rng.pick([
    () => encodeLength(real + 1),
    () => encodeLength(Math.max(0, real - 1)),
    () => encodeLength(real + rng.range(2, 4096)),
    () => encodeLength(Math.floor(real / 2)),
    () => Buffer.of(0x00),
    () => Buffer.of(0x7f),
    () => Buffer.of(0x80),
    () => Buffer.of(0x81, real & 0xff),
    () => Buffer.of(0x82, (real >> 8) & 0xff, real & 0xff),
    () => Buffer.of(0x83, 0, (real >> 8) & 0xff, real & 0xff),
    () => Buffer.of(0x84, 0xff, 0xff, 0xff, 0xff),
    () => Buffer.of(0x84, 0x7f, 0xff, 0xff, 0xff),
    () => Buffer.of(0x84, 0x00, 0x00, 0x00, real & 0x7f),
    () => Buffer.of(0x85, 0x01, 0x00, 0x00, 0x00, 0x00),
    () => Buffer.of(0x88, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff),
    () => Buffer.of(0xff),
    () => Buffer.of(0x81),
  ])();
}

/** Rewrites one TLV's length field in place of the real one; content stays as it was. */
export function lieAboutLength(rng, buf) {
  const headers = tlvHeaders(buf);
  if (headers.length === 0) return buf;
  const h = rng.pick(headers);
  return Buffer.concat([buf.subarray(0, h.lengthOffset), lyingLength(rng, h.length), buf.subarray(h.contentStart)]);
}

/** Replaces one TLV's tag octet. */
export function swapTag(rng, buf) {
  const headers = tlvHeaders(buf);
  if (headers.length === 0) return buf;
  const out = Buffer.from(buf);
  out[rng.pick(headers).offset] = rng.pick(TAGS);
  return out;
}

export const TAGS = [
  0x01, 0x02, 0x03, 0x04, 0x05, 0x06, 0x0c, 0x12, 0x13, 0x14, 0x16, 0x17, 0x18, 0x1a, 0x1c, 0x1e, 0x1f, 0x30, 0x31, 0x3f, 0x80, 0x81, 0x82,
  0x86, 0x87, 0x88, 0xa0, 0xa1, 0xa3, 0xa4, 0xbf, 0xff, 0x00,
];

/** OIDs the CSR parser and policy know, and some they do not. */
export const OIDS = [
  '1.2.840.113549.1.9.14', // extensionRequest
  '1.2.840.113549.1.9.7', // challengePassword
  '2.5.29.17',
  '2.5.29.19',
  '2.5.29.15',
  '2.5.29.37',
  '2.5.29.14',
  '2.5.29.35',
  '2.5.29.30',
  '1.3.6.1.5.5.7.1.1',
  '1.2.840.10045.2.1',
  '1.2.840.113549.1.1.1',
  '1.2.840.113549.1.1.10',
  '1.2.840.113549.1.1.8',
  '1.3.101.112',
  '1.2.840.10040.4.1',
  '1.2.840.10045.3.1.7',
  '1.3.132.0.34',
  '1.3.132.0.35',
  '1.3.132.0.10',
  '1.2.840.10045.4.3.2',
  '1.2.840.10045.4.3.3',
  '1.2.840.10045.4.3.4',
  '1.2.840.10045.4.1',
  '1.2.840.113549.1.1.11',
  '1.2.840.113549.1.1.12',
  '1.2.840.113549.1.1.13',
  '1.2.840.113549.1.1.5',
  '1.2.840.113549.1.1.4',
  '2.16.840.1.101.3.4.2.1',
  '2.16.840.1.101.3.4.2.2',
  '2.16.840.1.101.3.4.2.3',
  '1.3.14.3.2.26',
  '2.5.4.3',
  '2.5.4.10',
  '2.5.4.11',
  '2.5.4.6',
  '0.9.2342.19200300.100.1.25',
  '1.2.840.113549.1.9.1',
  '2.25.329800735698586629295641978511506172918',
  '0.0',
  '2.999',
  '1.39.4294967296',
];

/** Content octets of hostile OIDs: too long, too many arcs, non-minimal, truncated, huge arcs. */
export function hostileOid(rng) {
  return rng.pick([
    () => Buffer.alloc(0),
    () => Buffer.of(0x80, 0x01),
    () => Buffer.of(0x2a, 0x86),
    () => Buffer.concat([Buffer.alloc(rng.pick([7, 8, 20, 127, 128, 129, 500, 4000]), 0xff), Buffer.of(0x7f)]),
    () => Buffer.alloc(rng.pick([63, 64, 65, 200, 5000]), 0x01),
    () => oidContent('2.' + '9'.repeat(rng.pick([16, 39, 40, 100]))),
    () => oidContent(['1', '2', ...Array.from({ length: rng.pick([60, 62, 63, 64, 100]) }, () => String(rng.int(1 << 20)))].join('.')),
    () => rng.bytes(rng.range(1, 200)),
  ])();
}

/** Awkward INTEGER contents: non-minimal, negative, empty, huge, exponent edge cases. */
export function hostileInteger(rng) {
  return rng.pick([
    () => Buffer.alloc(0),
    () => Buffer.of(0x00),
    () => Buffer.of(0x00, 0x01),
    () => Buffer.of(0xff),
    () => Buffer.of(0xff, 0x80),
    () => Buffer.of(0x80),
    () => Buffer.of(0x01),
    () => Buffer.of(0x02),
    () => Buffer.of(0x03),
    () => Buffer.of(0x01, 0x00, 0x01),
    () => Buffer.of(0x7f, 0xff, 0xff, 0xff),
    () => Buffer.of(0x00, 0x80, 0x00, 0x00, 0x00),
    () => Buffer.of(0x01, 0x00, 0x00, 0x00, 0x01),
    () => Buffer.concat([Buffer.of(0x00), Buffer.alloc(rng.pick([127, 128, 255, 256, 512, 1024, 1025, 2048]), 0xff)]),
    () => Buffer.concat([Buffer.of(0x00, 0xc1), rng.bytes(rng.pick([255, 1023, 1024]))]),
    () => rng.bytes(rng.range(1, 64)),
  ])();
}

const STRING_TAGS = new Set([0x0c, 0x12, 0x13, 0x14, 0x16, 0x1a, 0x1c, 0x1e, 0x81, 0x82, 0x86]);

/** Text a string leaf (incl. SAN GeneralNames) might be given. */
export function hostileStringContent(rng) {
  const id = 'spiffe://cluster.local/ns/app/sa/api';
  return rng.pick([
    () => Buffer.from(id.toUpperCase()),
    () => Buffer.from(id + '/'),
    () => Buffer.from(id + '?x=1'),
    () => Buffer.from(id + '#f'),
    () => Buffer.from(id.replace('api', 'a%70i')),
    () => Buffer.from(id.replace('app', '..')),
    () => Buffer.from(id + '\0'),
    () => Buffer.from('spiffe://cluster.local/ns/app/sa/other'),
    () => Buffer.from('spiffe://cluster.local:443/ns/app/sa/api'),
    () => Buffer.from('spiffe://user@cluster.local/ns/app/sa/api'),
    () => Buffer.from('spiffe://cluster.local'),
    () => Buffer.from('https://cluster.local/ns/app/sa/api'),
    () => Buffer.from('spiffe://cluster.local/ns/app/sa/' + 'a'.repeat(rng.pick([2000, 2100, 60_000]))),
    () => Buffer.from('spiffe://cluster.local/ns/app/sa/api\u00e9', 'utf8'),
    () => Buffer.from(id, 'utf16le'),
    () => Buffer.from([0xc3, 0x28, 0xa0, 0xa1, 0xed, 0xa0, 0x80, 0xf4, 0x90, 0x80, 0x80, 0xff]),
    () => Buffer.alloc(0),
    () => Buffer.of(0x00, 0xd8, 0x00, 0x41),
    () => rng.bytes(rng.range(1, 40)),
  ])();
}

/**
 * One structure-aware mutation on a tree (mutated in place). `donors` are other trees to splice
 * nodes from. Returns the mutation's name.
 */
export function mutateTree(rng, root, donors) {
  const nodes = allNodes(root);
  const leaves = nodes.filter((n) => n.node.content !== undefined);
  const parents = nodes.filter((n) => n.node.children && n.node.children.length > 0);
  const ofTag = (pred) => leaves.filter((n) => pred(n.node.tag));
  const op = rng.pick([
    'leaf-bytes',
    'leaf-interesting',
    'oid',
    'oid-hostile',
    'tag',
    'drop',
    'dup',
    'swap',
    'insert',
    'nest',
    'string',
    'integer',
    'boolean',
    'splice',
    'empty-children',
  ]);
  const target = (list) => (list.length > 0 ? rng.pick(list) : undefined);
  switch (op) {
    case 'leaf-bytes': {
      const t = target(leaves);
      if (t) t.node.content = mutateBytes(rng, t.node.content)[0];
      break;
    }
    case 'leaf-interesting': {
      const t = target(leaves);
      if (t) t.node.content = rng.bool() ? Buffer.alloc(0) : Buffer.alloc(rng.pick([1, 2, 128, 1000]), rng.pick(INTERESTING_BYTES));
      break;
    }
    case 'oid': {
      const t = target(ofTag((tag) => tag === 0x06));
      if (t) t.node.content = oidContent(rng.pick(OIDS));
      break;
    }
    case 'oid-hostile': {
      const t = target(ofTag((tag) => tag === 0x06));
      if (t) t.node.content = hostileOid(rng);
      break;
    }
    case 'tag': {
      const t = target(nodes);
      if (t) t.node.tag = rng.pick(TAGS);
      break;
    }
    case 'drop': {
      const t = target(parents);
      if (t) t.node.children.splice(rng.int(t.node.children.length), 1);
      break;
    }
    case 'dup': {
      const t = target(parents);
      if (t) {
        const i = rng.int(t.node.children.length);
        t.node.children.splice(i, 0, cloneTree(t.node.children[i]));
      }
      break;
    }
    case 'swap': {
      const t = target(parents);
      if (t) {
        const c = t.node.children;
        const i = rng.int(c.length);
        const j = rng.int(c.length);
        [c[i], c[j]] = [c[j], c[i]];
      }
      break;
    }
    case 'insert': {
      const t = target(parents);
      if (t) t.node.children.splice(rng.int(t.node.children.length + 1), 0, randomNode(rng, nodes, donors));
      break;
    }
    case 'nest': {
      const t = target(nodes.filter((n) => n.parent));
      if (t) {
        let wrapped = t.node;
        for (let k = rng.pick([1, 2, 30, 31, 32, 33, 40, 200]); k > 0; k--)
          wrapped = { tag: rng.bool(0.8) ? 0x30 : 0x31, children: [wrapped] };
        t.parent.children[t.index] = wrapped;
      }
      break;
    }
    case 'string': {
      const t = target(ofTag((tag) => STRING_TAGS.has(tag)));
      if (t) t.node.content = hostileStringContent(rng);
      break;
    }
    case 'integer': {
      const t = target(ofTag((tag) => tag === 0x02));
      if (t) t.node.content = hostileInteger(rng);
      break;
    }
    case 'boolean': {
      const t = target(ofTag((tag) => tag === 0x01));
      if (t) t.node.content = rng.pick([Buffer.of(0x00), Buffer.of(0x01), Buffer.of(0xff), Buffer.of(0xff, 0xff), Buffer.alloc(0)]);
      break;
    }
    case 'splice': {
      const t = target(nodes.filter((n) => n.parent));
      if (t) t.parent.children[t.index] = randomNode(rng, nodes, donors);
      break;
    }
    default: {
      const t = target(parents);
      if (t) t.node.children = [];
    }
  }
  return op;
}

function randomNode(rng, nodes, donors) {
  if (donors.length > 0 && rng.bool(0.5)) return cloneTree(rng.pick(allNodes(rng.pick(donors))).node);
  if (rng.bool(0.5)) return cloneTree(rng.pick(nodes).node);
  return { tag: rng.pick(TAGS), content: rng.bytes(rng.size(64)) };
}

/** SEQUENCEs nested `depth` deep around `inner`, built inside out. */
export function deepNesting(depth, inner = Buffer.alloc(0), tag = 0x30) {
  let out = inner;
  for (let i = 0; i < depth; i++) out = tlv(tag, out);
  return out;
}
