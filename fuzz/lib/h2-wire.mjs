// @ts-check
// HTTP/2 wire pieces written independently of src/grpc/h2/, for the clients that test it (the h2
// fuzz target, test/grpc-h2.test.ts): frame types, a frame writer and reader, a Huffman encoder.

export const PREFACE = Buffer.from('PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n', 'latin1');

/** RFC 9113 §6 frame types. */
export const FRAME_TYPES = {
  DATA: 0,
  HEADERS: 1,
  PRIORITY: 2,
  RST_STREAM: 3,
  SETTINGS: 4,
  PUSH_PROMISE: 5,
  PING: 6,
  GOAWAY: 7,
  WINDOW_UPDATE: 8,
  CONTINUATION: 9,
};

/**
 * One frame; `declaredLength` lets a test lie about the payload's length.
 * @param {number} type @param {number} flags @param {number} streamId @param {Buffer} payload
 * @param {number} [declaredLength]
 */
export function frame(type, flags, streamId, payload, declaredLength = payload.length) {
  const header = Buffer.alloc(9);
  header.writeUIntBE(declaredLength, 0, 3);
  header[3] = type;
  header[4] = flags;
  header.writeUInt32BE(streamId >>> 0, 5);
  return Buffer.concat([header, payload]);
}

/**
 * The complete frames at the start of `bytes`, and what is left after them.
 * @param {Buffer} bytes
 * @returns {{ frames: { type: number, flags: number, streamId: number, payload: Buffer }[], rest: Buffer }}
 */
export function readFrames(bytes) {
  const frames = [];
  let at = 0;
  while (bytes.length - at >= 9) {
    const length = bytes.readUIntBE(at, 3);
    if (bytes.length - at < 9 + length) break;
    frames.push({
      type: bytes[at + 3] ?? 0,
      flags: bytes[at + 4] ?? 0,
      streamId: bytes.readUInt32BE(at + 5) & 0x7fffffff,
      payload: bytes.subarray(at + 9, at + 9 + length),
    });
    at += 9 + length;
  }
  return { frames, rest: bytes.subarray(at) };
}

/**
 * `bytes` Huffman-coded (RFC 7541 §5.2: MSB first, padded with the EOS prefix), from a table of
 * [code, bit length] pairs per symbol (src/grpc/h2/hpack.ts's HUFFMAN_CODES, the RFC's Appendix B).
 * @param {readonly number[]} codes @param {Uint8Array} bytes
 */
export function huffmanEncode(codes, bytes) {
  /** @type {number[]} */
  const bits = [];
  for (const byte of bytes) {
    const code = codes[2 * byte] ?? 0;
    const length = codes[2 * byte + 1] ?? 0;
    for (let i = length - 1; i >= 0; i--) bits.push(Math.floor(code / 2 ** i) % 2);
  }
  while (bits.length % 8 !== 0) bits.push(1);
  const encoded = Buffer.alloc(bits.length / 8);
  bits.forEach((bit, i) => {
    encoded[i >> 3] = (encoded[i >> 3] ?? 0) | (bit << (7 - (i % 8)));
  });
  return encoded;
}
