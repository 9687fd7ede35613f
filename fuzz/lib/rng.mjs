// @ts-check
// A small seeded PRNG (sfc32, seeded through splitmix32) so every fuzz case is reproducible from
// (seed, target, case index) alone. Not for cryptography.

/** 32-bit FNV-1a of a string; stable across runs and platforms. */
export function hashString(text) {
  let h = 0x811c9dc5;
  for (let i = 0; i < text.length; i++) {
    h ^= text.charCodeAt(i);
    h = Math.imul(h, 0x01000193) >>> 0;
  }
  return h >>> 0;
}

function splitmix32(state) {
  return () => {
    state = (state + 0x9e3779b9) >>> 0;
    let z = state;
    z = Math.imul(z ^ (z >>> 16), 0x85ebca6b) >>> 0;
    z = Math.imul(z ^ (z >>> 13), 0xc2b2ae35) >>> 0;
    return (z ^ (z >>> 16)) >>> 0;
  };
}

/** The seed of one case: independent streams per target and per index. */
export function caseSeed(seed, target, index) {
  return (hashString(`${target}:${seed >>> 0}`) ^ Math.imul(index + 1, 0x9e3779b1)) >>> 0;
}

export class Rng {
  /** @param {number} seed */
  constructor(seed) {
    const next = splitmix32(seed >>> 0);
    this.a = next();
    this.b = next();
    this.c = next();
    this.d = next();
    for (let i = 0; i < 12; i++) this.u32();
  }

  /** Uniform 32-bit unsigned integer. */
  u32() {
    const t = (((this.a + this.b) >>> 0) + this.d) >>> 0;
    this.d = (this.d + 1) >>> 0;
    this.a = this.b ^ (this.b >>> 9);
    this.b = (this.c + (this.c << 3)) >>> 0;
    this.c = ((this.c << 21) | (this.c >>> 11)) >>> 0;
    this.c = (this.c + t) >>> 0;
    return t;
  }

  /** [0, 1) */
  float() {
    return this.u32() / 4294967296;
  }

  /** Integer in [0, n). */
  int(n) {
    if (n <= 0) return 0;
    return Math.floor(this.float() * n);
  }

  /** Integer in [lo, hi], both inclusive. */
  range(lo, hi) {
    return lo + this.int(hi - lo + 1);
  }

  bool(p = 0.5) {
    return this.float() < p;
  }

  /** @template T @param {readonly T[]} items @returns {T} */
  pick(items) {
    return items[this.int(items.length)];
  }

  /**
   * One value by weight: [[weight, value], ...].
   * @template T @param {ReadonlyArray<readonly [number, T]>} table @returns {T}
   */
  weighted(table) {
    let total = 0;
    for (const [w] of table) total += w;
    let x = this.float() * total;
    for (const [w, v] of table) {
      x -= w;
      if (x < 0) return v;
    }
    return table[table.length - 1][1];
  }

  /** Small sizes are far more likely than large ones (log-uniform in [0, max]). */
  size(max) {
    const bits = Math.log2(max + 1);
    return Math.min(max, Math.floor(2 ** (this.float() * bits)) - 1 + this.int(2));
  }

  bytes(n) {
    const out = Buffer.allocUnsafe(n);
    for (let i = 0; i < n; i += 4) {
      const v = this.u32();
      for (let j = 0; j < 4 && i + j < n; j++) out[i + j] = (v >>> (8 * j)) & 0xff;
    }
    return out;
  }
}
