// @ts-check
// Target 6: meshca's HTTP/2 server layer (src/grpc/h2/), in process: whole client byte streams into
// an H2Connection, and header blocks into the HPACK decoder.
//
// Invariants per case:
//   - nothing escapes: no exception out of the connection's data handler, no internal error reported;
//   - the HPACK decoder throws only HpackError, and decodes what a well-formed block encodes;
//   - everything the server writes is well-formed HTTP/2: its SETTINGS first, frames no longer than
//     16,384 octets, RST_STREAM and GOAWAY with defined codes, DATA only on streams it answers, and
//     at most one GOAWAY, after which the connection ends;
//   - an unmutated client stream is served in full: every request answered, no error code sent.

import { Duplex } from 'node:stream';
import { performance } from 'node:perf_hooks';
import { FRAME_TYPES, frame, huffmanEncode, PREFACE, readFrames } from '../lib/h2-wire.mjs';
import { mutateBytes } from '../lib/mutate.mjs';

const T = FRAME_TYPES;
const END_STREAM = 0x1;
const END_HEADERS = 0x4;
const PADDED = 0x8;
const PRIORITY = 0x20;
const CODE_NAMES = [
  'NO_ERROR',
  'PROTOCOL_ERROR',
  'INTERNAL_ERROR',
  'FLOW_CONTROL_ERROR',
  'SETTINGS_TIMEOUT',
  'STREAM_CLOSED',
  'FRAME_SIZE_ERROR',
  'REFUSED_STREAM',
  'CANCEL',
  'COMPRESSION_ERROR',
  'CONNECT_ERROR',
  'ENHANCE_YOUR_CALM',
];
const LIMITS = {
  maxConcurrentStreams: 8,
  maxHeaderListBytes: 4096,
  maxHeaderPairs: 32,
  maxStreamBodyBytes: 65_541,
  connectionWindowBytes: 65_541,
  prefaceTimeoutMs: 10_000,
};

/** A Huffman-coded string literal (RFC 7541 §5.2), from the decoder's own table. */
function huffmanString(codes, text) {
  const bytes = huffmanEncode(codes, Buffer.from(text, 'latin1'));
  return Buffer.concat([integer(0x80, 7, bytes.length), bytes]);
}

function integer(flags, prefixBits, value) {
  const max = (1 << prefixBits) - 1;
  if (value < max) return Buffer.from([flags | value]);
  const out = [flags | max];
  let rest = value - max;
  while (rest >= 0x80) {
    out.push((rest & 0x7f) | 0x80);
    rest = Math.floor(rest / 128);
  }
  out.push(rest);
  return Buffer.from(out);
}

/** A request header block mixing the encodings a client uses: indexed, incrementally indexed, Huffman. */
function requestBlock(rng, codes, encodeHeaderBlock, fields) {
  if (rng.bool(0.3)) return encodeHeaderBlock(fields);
  const parts = [];
  for (const [name, value] of fields) {
    if (name === ':method' && value === 'POST') parts.push(Buffer.from([0x83]));
    else if (name === ':scheme' && value === 'https') parts.push(Buffer.from([0x87]));
    else {
      // Literal with incremental indexing, new name; Huffman for the value half the time.
      const valueBytes = rng.bool()
        ? huffmanString(codes, value)
        : Buffer.concat([integer(0, 7, value.length), Buffer.from(value, 'latin1')]);
      parts.push(Buffer.from([rng.bool(0.5) ? 0x40 : 0x00]), integer(0, 7, name.length), Buffer.from(name, 'latin1'), valueBytes);
    }
  }
  return Buffer.concat(parts);
}

/** A well-formed client connection: preface, SETTINGS, then requests and control frames. */
function clientStream(rng, mods) {
  const { encodeHeaderBlock, HUFFMAN_CODES } = mods;
  const frames = [PREFACE];
  const settings = [];
  if (rng.bool()) settings.push([0x2, 0]);
  if (rng.bool()) settings.push([0x4, rng.pick([0, 1, 100, 65_535, 1 << 20])]);
  if (rng.bool(0.3)) settings.push([0x5, rng.pick([16_384, 32_768, 16_777_215])]);
  if (rng.bool(0.3)) settings.push([0x1, rng.pick([0, 4096, 65_536])]);
  const payload = Buffer.alloc(settings.length * 6);
  settings.forEach(([id, value], i) => {
    payload.writeUInt16BE(id, i * 6);
    payload.writeUInt32BE(value, i * 6 + 2);
  });
  frames.push(frame(T.SETTINGS, 0, 0, payload));
  const requests = rng.range(1, 6);
  let streamId = 1;
  const ended = [];
  for (let r = 0; r < requests; r++, streamId += 2) {
    const token = 'eyJhbGciOiJSUzI1NiJ9.' + rng.bytes(rng.size(300)).toString('base64url') + '.sig';
    const fields = [
      [':method', 'POST'],
      [':scheme', 'https'],
      [':path', rng.pick(['/istio.v1.auth.IstioCertificateService/CreateCertificate', '/x', '/'])],
      [':authority', 'meshca:15012'],
      ['content-type', 'application/grpc'],
      ['te', 'trailers'],
      ['authorization', `Bearer ${token}`],
      ['grpc-timeout', `${rng.range(1, 99999)}m`],
    ];
    const block = requestBlock(rng, HUFFMAN_CODES, encodeHeaderBlock, fields);
    const body = rng.bytes(rng.size(3000));
    const bodyInHeaders = body.length === 0 && rng.bool();
    let flags = END_HEADERS | (bodyInHeaders ? END_STREAM : 0);
    let prefix = Buffer.alloc(0);
    if (rng.bool(0.2)) {
      flags |= PRIORITY;
      prefix = Buffer.from([0, 0, 0, 0, 16]);
    }
    if (rng.bool(0.3)) {
      // Split into HEADERS + CONTINUATION frames.
      const cut = rng.int(block.length + 1);
      frames.push(frame(T.HEADERS, flags & ~END_HEADERS, streamId, Buffer.concat([prefix, block.subarray(0, cut)])));
      frames.push(frame(T.CONTINUATION, END_HEADERS, streamId, block.subarray(cut)));
    } else if (rng.bool(0.2)) {
      const pad = rng.size(40);
      frames.push(frame(T.HEADERS, flags | PADDED, streamId, Buffer.concat([Buffer.from([pad]), prefix, block, Buffer.alloc(pad)])));
    } else frames.push(frame(T.HEADERS, flags, streamId, Buffer.concat([prefix, block])));
    if (!bodyInHeaders) {
      for (let at = 0; at < body.length || at === 0; at += 16_384) {
        const piece = body.subarray(at, at + 16_384);
        const last = at + 16_384 >= body.length;
        frames.push(frame(T.DATA, last ? END_STREAM : 0, streamId, piece));
        if (body.length === 0) break;
      }
    }
    ended.push(streamId);
    if (rng.bool(0.2)) frames.push(frame(T.PING, 0, 0, rng.bytes(8)));
    if (rng.bool(0.2)) frames.push(frame(T.WINDOW_UPDATE, 0, 0, Buffer.from([0, 0, 0x10, 0])));
    if (rng.bool(0.1)) frames.push(frame(0xfa, 0, 0, rng.bytes(rng.size(20)))); // unknown type: ignored
  }
  return { frames, requests: ended };
}

/** A mutation at the frame level (a header field) or the byte level (anywhere). */
function mutate(rng, frames) {
  const out = frames.map((f) => Buffer.from(f));
  const at = rng.range(1, out.length - 1);
  const f = out[at];
  const how = rng.weighted([
    [20, 'bytes'],
    [10, 'length'],
    [10, 'type'],
    [10, 'flags'],
    [10, 'stream'],
    [10, 'payload'],
    [8, 'drop'],
    [8, 'repeat'],
    [6, 'preface'],
    [8, 'inject'],
  ]);
  if (how === 'bytes') return [mutateBytes(rng, Buffer.concat(out))[0], how];
  if (how === 'length' && f.length >= 9) f.writeUIntBE(rng.pick([0, 1, 4, 5, 8, 16_384, 16_385, 0xffffff, rng.int(1 << 24)]), 0, 3);
  if (how === 'type' && f.length >= 9) f[3] = rng.pick([0, 1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 255]);
  if (how === 'flags' && f.length >= 9) f[4] = rng.int(256);
  if (how === 'stream' && f.length >= 9) f.writeUInt32BE(rng.pick([0, 1, 2, 3, 0x7fffffff, 0x80000001, rng.u32()]) >>> 0, 5);
  if (how === 'payload' && f.length > 9)
    out[at] = Buffer.concat([f.subarray(0, 9), mutateBytes(rng, f.subarray(9))[0].subarray(0, f.length - 9)]);
  if (how === 'drop') out.splice(at, 1);
  if (how === 'repeat') out.splice(at, 0, ...Array.from({ length: rng.range(1, 50) }, () => f));
  if (how === 'preface') out[0] = mutateBytes(rng, PREFACE)[0];
  if (how === 'inject') {
    const type = rng.pick(Object.values(T));
    out.splice(at, 0, frame(type, rng.int(256), rng.pick([0, 1, 2, 3, 5, 99]), rng.bytes(rng.pick([0, 4, 5, 8, 6, 12, rng.size(64)]))));
  }
  return [Buffer.concat(out), how];
}

/** Frames the server wrote, or a message saying how the output is malformed. */
function parseOutput(bytes) {
  const { frames, rest } = readFrames(bytes);
  if (rest.length > 0) return rest.length < 9 ? `${rest.length} trailing octets that are not a frame` : 'a truncated frame';
  const long = frames.find((f) => f.payload.length > 16_384);
  return long ? `a ${long.payload.length}-octet frame` : frames;
}

export function h2Target(mods, options = {}) {
  const { H2Connection, HpackDecoder, HpackError, encodeHeaderBlock } = mods;

  function generate(rng) {
    const kind = rng.weighted([
      [20, 'valid'],
      [60, 'mutated'],
      [20, 'hpack'],
    ]);
    if (kind === 'hpack') {
      const fields = [
        ['content-type', 'application/grpc'],
        ['authorization', 'Bearer ' + rng.bytes(rng.size(200)).toString('base64url')],
      ];
      const good = requestBlock(rng, mods.HUFFMAN_CODES, encodeHeaderBlock, fields);
      const mutated = rng.bool(0.8);
      return { kind, bytes: mutated ? mutateBytes(rng, good)[0] : good, fields: mutated ? undefined : fields, chunks: [] };
    }
    const { frames, requests } = clientStream(rng, mods);
    const [bytes, how] = kind === 'valid' ? [Buffer.concat(frames), 'none'] : mutate(rng, frames);
    // Where the socket splits the stream: the parser must not care.
    const chunks = Array.from({ length: rng.range(0, 4) }, () => rng.int(bytes.length + 1)).sort((a, b) => a - b);
    return { kind, how, bytes, chunks, requests: kind === 'valid' ? requests : undefined };
  }

  async function execute(input) {
    if (input.kind === 'hpack') return hpackCase(input);
    const violations = [];
    const written = [];
    const socket = new Duplex({
      read() {},
      write(chunk, _encoding, callback) {
        written.push(Buffer.from(chunk));
        callback();
      },
    });
    const answered = new Set();
    const internal = [];
    const started = performance.now();
    const connection = new H2Connection(socket, LIMITS, (stream) => {
      const chunks = [];
      stream.onData = (c) => chunks.push(c);
      stream.onEnd = () => {
        answered.add(stream.id);
        stream.respond(
          encodeHeaderBlock([[':status', '200']]),
          Buffer.concat([Buffer.alloc(5), ...chunks]).subarray(0, 2000),
          encodeHeaderBlock([['grpc-status', '0']]),
        );
      };
    });
    connection.onInternalError = (error) => internal.push(error);
    const cuts = [0, ...input.chunks, input.bytes.length];
    for (let i = 0; i + 1 < cuts.length; i++) {
      const piece = input.bytes.subarray(cuts[i], cuts[i + 1]);
      if (piece.length === 0) continue;
      try {
        socket.emit('data', piece);
      } catch (error) {
        violations.push({ message: `threw out of the data handler: ${error?.message ?? error}`, stack: error?.stack });
        break;
      }
    }
    await new Promise((resolve) => setImmediate(resolve));
    await new Promise((resolve) => setImmediate(resolve));
    const ms = performance.now() - started;
    for (const error of internal) violations.push({ message: `internal error: ${error?.message ?? error}`, stack: error?.stack });
    const ended = socket.writableEnded || socket.destroyed;
    connection.destroy();
    const frames = parseOutput(Buffer.concat(written));
    if (typeof frames === 'string') return { outcome: 'malformed output', violations: [...violations, `the server wrote ${frames}`], ms };
    if (frames[0]?.type !== T.SETTINGS || frames[0].flags !== 0) violations.push('the server did not start with its SETTINGS');
    const goaways = frames.filter((f) => f.type === T.GOAWAY);
    const resets = frames.filter((f) => f.type === T.RST_STREAM);
    if (goaways.length > 1) violations.push(`${goaways.length} GOAWAY frames`);
    for (const f of [...goaways, ...resets]) {
      const code = f.payload.readUInt32BE(f.type === T.GOAWAY ? 4 : 0);
      if (!(code in CODE_NAMES)) violations.push(`an undefined error code ${code}`);
    }
    if (goaways.length > 0 && !ended) violations.push('GOAWAY was sent but the connection did not end');
    for (const f of frames) {
      if (f.type === T.DATA && !answered.has(f.streamId)) violations.push(`DATA on stream ${f.streamId}, which was never answered`);
    }
    const goawayCode = goaways[0]?.payload.readUInt32BE(4);
    if (input.requests) {
      for (const id of input.requests) if (!answered.has(id)) violations.push(`a well-formed request on stream ${id} was not answered`);
      if (goaways.length > 0 || resets.some((f) => f.payload.readUInt32BE(0) !== 0))
        violations.push('an error code for a well-formed stream');
    }
    const outcome =
      goawayCode !== undefined
        ? `GOAWAY ${CODE_NAMES[goawayCode] ?? goawayCode}`
        : resets.length > 0
          ? 'RST_STREAM'
          : input.requests
            ? 'served'
            : 'served (mutated)';
    return { outcome, violations, ms };
  }

  function hpackCase({ bytes, fields }) {
    const violations = [];
    const started = performance.now();
    let decoded;
    let error;
    try {
      decoded = new HpackDecoder().decode(bytes);
    } catch (e) {
      error = e;
    }
    const ms = performance.now() - started;
    if (error && !(error instanceof HpackError))
      violations.push({ message: `threw ${error?.name}: ${error?.message}`, stack: error?.stack });
    if (fields && JSON.stringify(decoded) !== JSON.stringify(fields))
      violations.push(`decoded ${JSON.stringify(decoded)?.slice(0, 200)} from a well-formed block`);
    return { outcome: error ? 'hpack ERR_HPACK' : 'hpack decoded', violations, ms };
  }

  return {
    name: 'h2',
    timeBoundMs: options.timeBoundMs ?? 50,
    hangMs: options.hangMs ?? 5000,
    retime: true,
    generate,
    execute,
    describe: (input) => ({
      base64: input.bytes.toString('base64'),
      note: `${input.kind}${input.how ? ` (${input.how})` : ''}, ${input.bytes.length} octets${input.chunks.length ? `, split at ${input.chunks.join(',')}` : ''}`,
    }),
  };
}
