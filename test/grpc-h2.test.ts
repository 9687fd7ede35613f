import { once } from 'node:events';
import { connect as http2Connect, constants, type ClientHttp2Session, type IncomingHttpHeaders } from 'node:http2';
import { connect as tcpConnect, createServer, type AddressInfo, type Server, type Socket } from 'node:net';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { H2Code, H2Connection, type H2Limits, type H2Stream } from '../src/grpc/h2/connection.js';
import { encodeHeaderBlock, HpackDecoder, HpackError, HUFFMAN_CODES, type HeaderField } from '../src/grpc/h2/hpack.js';
import { FRAME_TYPES, frame, huffmanEncode, PREFACE, readFrames } from '../fuzz/lib/h2-wire.mjs';

/**
 * meshca's HTTP/2 server layer (src/grpc/h2/): HPACK against RFC 7541's own examples, and the
 * connection at the wire, from a raw frame writer (for what no real client sends) and from
 * node:http2's client (an independent implementation: padding, flow control, CONTINUATION, PING,
 * GOAWAY).
 */

const hex = (text: string) => Buffer.from(text.replace(/\s+/g, ''), 'hex');

describe('HPACK decoding (RFC 7541 Appendix C)', () => {
  const request1: HeaderField[] = [
    [':method', 'GET'],
    [':scheme', 'http'],
    [':path', '/'],
    [':authority', 'www.example.com'],
  ];
  const request2: HeaderField[] = [...request1, ['cache-control', 'no-cache']];
  const request3: HeaderField[] = [
    [':method', 'GET'],
    [':scheme', 'https'],
    [':path', '/index.html'],
    [':authority', 'www.example.com'],
    ['custom-key', 'custom-value'],
  ];
  const response = (status: string, date: string): HeaderField[] => [
    [':status', status],
    ['cache-control', 'private'],
    ['date', `Mon, 21 Oct 2013 20:13:${date} GMT`],
    ['location', 'https://www.example.com'],
  ];
  it.each([
    {
      example: 'C.3 requests without Huffman',
      tableSize: 4096,
      blocks: [
        ['8286 8441 0f77 7777 2e65 7861 6d70 6c65 2e63 6f6d', request1],
        ['8286 84be 5808 6e6f 2d63 6163 6865', request2],
        ['8287 85bf 400a 6375 7374 6f6d 2d6b 6579 0c63 7573 746f 6d2d 7661 6c75 65', request3],
      ],
    },
    {
      example: 'C.4 requests with Huffman',
      tableSize: 4096,
      blocks: [
        ['8286 8441 8cf1 e3c2 e5f2 3a6b a0ab 90f4 ff', request1],
        ['8286 84be 5886 a8eb 1064 9cbf', request2],
        ['8287 85bf 4088 25a8 49e9 5ba9 7d7f 8925 a849 e95b b8e8 b4bf', request3],
      ],
    },
    {
      example: 'C.6 responses with Huffman, a 256-octet table that evicts',
      tableSize: 256,
      blocks: [
        [
          '4882 6402 5885 aec3 771a 4b61 96d0 7abe 9410 54d4 44a8 2005 9504 0b81 66e0 82a6 2d1b ff6e 919d 29ad 1718 63c7 8f0b 97c8 e9ae 82ae 43d3',
          response('302', '21'),
        ],
        ['4883 640e ff c1 c0 bf', response('307', '21')],
        [
          '88c1 6196 d07a be94 1054 d444 a820 0595 040b 8166 e084 a62d 1bff c05a 839b d9ab 77ad 94e7 821d d7f2 e6c7 b335 dfdf cd5b 3960 d5af 2708 7f36 72c1 ab27 0fb5 291f 9587 3160 65c0 03ed 4ee5 b106 3d50 07',
          [
            ...response('200', '22'),
            ['content-encoding', 'gzip'],
            ['set-cookie', 'foo=ASDJKHQKBZXOQWEOPIUAXQWEOIU; max-age=3600; version=1'],
          ],
        ],
      ],
    },
  ] as const)('$example', ({ tableSize, blocks }) => {
    const decoder = new HpackDecoder(tableSize);
    for (const [block, fields] of blocks) expect(decoder.decode(hex(block))).toEqual(fields);
  });

  it.each([
    ['index 0', '80'],
    ['an index past both tables', 'ff00'],
    ['a truncated integer', '82ff'],
    ['a string longer than the block', '4104616263'],
    ['Huffman padding that is not all ones', '418100'],
    ['Huffman padding of 8 bits or more', '4182ffff'],
    ['Huffman EOS inside a string', '4184ffffffff'],
    ['a table size update above SETTINGS_HEADER_TABLE_SIZE', '3fe21f'],
    ['a table size update after a field', '82 20'],
    ['an integer above 2^31', '7fffffffff0f'],
  ])('refuses %s', (_what, block) => {
    expect(() => new HpackDecoder().decode(hex(block))).toThrow(HpackError);
  });

  /** Huffman-encodes `bytes` (MSB first, padded with the EOS prefix) as the value of a literal field "x". */
  function huffmanField(bytes: Buffer): Buffer {
    const encoded = huffmanEncode(HUFFMAN_CODES, bytes);
    if (encoded.length >= 127) throw new Error('test values stay under 127 encoded octets');
    return Buffer.concat([Buffer.from([0x00, 0x01, 0x78, 0x80 | encoded.length]), encoded]);
  }

  it.each([
    ['every octet value, in order', Buffer.from(Array.from({ length: 256 }, (_, i) => i))],
    ['every octet value, reversed', Buffer.from(Array.from({ length: 256 }, (_, i) => 255 - i))],
    ['a bearer token', Buffer.from('Bearer eyJhbGciOiJSUzI1NiJ9.eyJpc3MiOiJrdWJlcm5ldGVzIn0.c2ln-_')],
    ['one short symbol', Buffer.from('0')],
    ['nothing', Buffer.alloc(0)],
  ])('decodes Huffman: %s', (_what, value) => {
    // Values are split so each encodes to < 127 octets (a one-octet length).
    for (let at = 0; at < Math.max(1, value.length); at += 40) {
      const part = value.subarray(at, at + 40);
      const [[name, decoded]] = new HpackDecoder().decode(huffmanField(part)) as [HeaderField];
      expect(name).toBe('x');
      expect(Buffer.from(decoded, 'latin1').equals(part)).toBe(true);
    }
  });

  it('encodes what it decodes, for any Latin-1 value', () => {
    const fields: HeaderField[] = [
      [':status', '200'],
      [':status', '415'],
      ['content-type', 'application/grpc+proto'],
      ['grpc-message', 'x'.repeat(300)],
      ['x-latin1', 'caf\u00e9'],
    ];
    expect(new HpackDecoder().decode(encodeHeaderBlock(fields))).toEqual(fields);
  });
});

// ---------------------------------------------------------------------------------------------
// The connection at the wire

const LIMITS: H2Limits = {
  maxConcurrentStreams: 4,
  maxHeaderListBytes: 2048,
  maxHeaderPairs: 16,
  maxStreamBodyBytes: 4096,
  connectionWindowBytes: 65_535,
  prefaceTimeoutMs: 2_000,
};

/**
 * Answers each stream when the client has ended it (or `x-delay` ms later): status 200, a body of
 * `x-size` bytes (or the request body echoed), a trailer `x-received` with how many body bytes arrived.
 */
function echo(stream: H2Stream): void {
  if (stream.headers[':path'] === '/throw') throw new Error('a bug in a stream handler');
  const chunks: Buffer[] = [];
  stream.onData = (chunk) => chunks.push(Buffer.from(chunk));
  stream.onEnd = () => {
    const received = Buffer.concat(chunks);
    const size = stream.headers['x-size'];
    const body = size === undefined ? received : Buffer.alloc(Number(size), 'r');
    const answer = () =>
      stream.respond(encodeHeaderBlock([[':status', '200']]), body, encodeHeaderBlock([['x-received', String(received.length)]]));
    const delay = stream.headers['x-delay'];
    if (delay === undefined) answer();
    else setTimeout(answer, Number(delay));
  };
}

interface Harness {
  readonly server: Server;
  readonly port: number;
  readonly connections: H2Connection[];
  readonly internalErrors: unknown[];
}

async function harness(limits: H2Limits): Promise<Harness> {
  const connections: H2Connection[] = [];
  const internalErrors: unknown[] = [];
  const server = createServer((socket) => {
    const connection = new H2Connection(socket, limits, echo);
    connection.onInternalError = (error) => internalErrors.push(error);
    connections.push(connection);
  });
  server.listen(0, '127.0.0.1');
  await once(server, 'listening');
  return { server, port: (server.address() as AddressInfo).port, connections, internalErrors };
}

interface Frame {
  readonly type: number;
  readonly flags: number;
  readonly streamId: number;
  readonly payload: Buffer;
}

const T = FRAME_TYPES;

/** A client that writes raw frames and records what comes back. */
class RawPeer {
  readonly frames: Frame[] = [];
  readonly closed: Promise<void>;
  #rest = Buffer.alloc(0);
  #waiters: (() => void)[] = [];

  private constructor(readonly socket: Socket) {
    socket.on('data', (chunk: Buffer) => this.#read(chunk));
    socket.on('error', () => undefined);
    this.closed = new Promise((resolve) => socket.on('close', () => resolve()));
  }

  static async open(port: number, preface: Buffer | string = PREFACE): Promise<RawPeer> {
    const socket = tcpConnect(port, '127.0.0.1');
    await once(socket, 'connect');
    const peer = new RawPeer(socket);
    socket.write(preface);
    if (preface === PREFACE) peer.send(T.SETTINGS, 0, 0, Buffer.alloc(0));
    return peer;
  }

  send(type: number, flags: number, streamId: number, payload: Buffer, declaredLength = payload.length): void {
    this.socket.write(frame(type, flags, streamId, payload, declaredLength));
  }

  headers(streamId: number, fields: HeaderField[], flags = 0x4 /* END_HEADERS */): void {
    this.send(T.HEADERS, flags, streamId, encodeHeaderBlock(fields));
  }

  /** The first frame (from the start of the connection) that matches; waits for it. */
  async next(match: (frame: Frame) => boolean, timeoutMs = 3_000): Promise<Frame> {
    const deadline = Date.now() + timeoutMs;
    for (;;) {
      const found = this.frames.find(match);
      if (found) return found;
      if (Date.now() > deadline) throw new Error(`no matching frame among ${JSON.stringify(this.frames.map((f) => [f.type, f.streamId]))}`);
      await new Promise<void>((resolve) => {
        this.#waiters.push(resolve);
        setTimeout(resolve, 50);
      });
    }
  }

  async goaway(): Promise<number> {
    const frame = await this.next((f) => f.type === T.GOAWAY);
    return frame.payload.readUInt32BE(4);
  }

  async rst(streamId: number): Promise<number> {
    const frame = await this.next((f) => f.type === T.RST_STREAM && f.streamId === streamId);
    return frame.payload.readUInt32BE(0);
  }

  #read(chunk: Buffer): void {
    const { frames, rest } = readFrames(Buffer.concat([this.#rest, chunk]));
    this.frames.push(...frames);
    this.#rest = rest;
    for (const wake of this.#waiters.splice(0)) wake();
  }
}

const request = (path = '/echo', extra: HeaderField[] = []): HeaderField[] => [
  [':method', 'POST'],
  [':scheme', 'http'],
  [':path', path],
  ...extra,
];
const u32 = (n: number) => {
  const b = Buffer.alloc(4);
  b.writeUInt32BE(n >>> 0, 0);
  return b;
};
const END_STREAM = 0x1;
const END_HEADERS = 0x4;

describe('H2Connection: connection errors end in GOAWAY with the right code', () => {
  let h: Harness;
  beforeAll(async () => {
    h = await harness({ ...LIMITS, maxStreamBodyBytes: 40_000, connectionWindowBytes: 65_535 });
  });
  afterAll(() => h.server.close());

  it.each<{ what: string; code: number; act?: (peer: RawPeer) => void; preface?: string }>([
    { what: 'a client that is not HTTP/2', code: H2Code.PROTOCOL_ERROR, preface: 'GET / HTTP/1.1\r\nHost: x\r\n\r\n' },
    { what: 'a frame over 16,384 octets', code: H2Code.FRAME_SIZE_ERROR, act: (p) => p.send(T.PING, 0, 0, Buffer.alloc(8), 16_385) },
    { what: 'HEADERS on an even stream id', code: H2Code.PROTOCOL_ERROR, act: (p) => p.headers(2, request()) },
    {
      what: 'PUSH_PROMISE from a client',
      code: H2Code.PROTOCOL_ERROR,
      act: (p) => p.send(T.PUSH_PROMISE, END_HEADERS, 1, Buffer.alloc(4)),
    },
    {
      what: 'a header block interrupted by another frame',
      code: H2Code.PROTOCOL_ERROR,
      act: (p) => {
        p.headers(1, request(), 0);
        p.send(T.PING, 0, 0, Buffer.alloc(8));
      },
    },
    {
      what: 'CONTINUATION beyond twice the header-list bound',
      code: H2Code.ENHANCE_YOUR_CALM,
      act: (p) => {
        p.headers(1, request(), 0);
        for (let i = 0; i < 3; i++) p.send(T.CONTINUATION, 0, 1, Buffer.alloc(2_000));
      },
    },
    { what: 'a corrupt HPACK block', code: H2Code.COMPRESSION_ERROR, act: (p) => p.send(T.HEADERS, END_HEADERS, 1, hex('ff00')) },
    {
      what: 'a connection window over 2^31-1',
      code: H2Code.FLOW_CONTROL_ERROR,
      act: (p) => p.send(T.WINDOW_UPDATE, 0, 0, u32(2 ** 31 - 1)),
    },
    {
      what: 'SETTINGS of a length not a multiple of 6',
      code: H2Code.FRAME_SIZE_ERROR,
      act: (p) => p.send(T.SETTINGS, 0, 0, Buffer.alloc(5)),
    },
    {
      what: 'DATA beyond the connection window',
      code: H2Code.FLOW_CONTROL_ERROR,
      act: (p) => {
        // Two unfinished bodies of 35,000 bytes fit their stream windows but not the 65,535-byte connection window.
        for (const id of [1, 3]) {
          p.headers(id, request());
          for (let i = 0; i < 5; i++) p.send(T.DATA, 0, id, Buffer.alloc(7_000));
        }
      },
    },
    {
      what: 'more than 1,000 streams reset in a second',
      code: H2Code.ENHANCE_YOUR_CALM,
      act: (p) => {
        for (let id = 1; id <= 2_003; id += 2) {
          p.headers(id, request());
          p.send(T.RST_STREAM, 0, id, u32(H2Code.CANCEL));
        }
      },
    },
    {
      what: 'a flood of empty DATA frames',
      code: H2Code.ENHANCE_YOUR_CALM,
      act: (p) => {
        p.headers(1, request());
        for (let i = 0; i < 1_001; i++) p.send(T.DATA, 0, 1, Buffer.alloc(0));
      },
    },
  ])('$what', async ({ code, act, preface }) => {
    const peer = await RawPeer.open(h.port, preface);
    act?.(peer);
    expect(await peer.goaway()).toBe(code);
    await peer.closed;
  });

  it('a stream handler that throws closes that connection with INTERNAL_ERROR and reports it', async () => {
    const peer = await RawPeer.open(h.port);
    peer.headers(1, request('/throw'));
    expect(await peer.goaway()).toBe(H2Code.INTERNAL_ERROR);
    expect(String(h.internalErrors.at(-1))).toContain('a bug in a stream handler');
    const next = await RawPeer.open(h.port);
    next.headers(1, request('/echo', [['x-size', '3']]), END_HEADERS | END_STREAM);
    expect((await next.next((f) => f.type === T.DATA)).payload.length).toBe(3);
    next.socket.destroy();
  });

  it('answers PING with the same payload', async () => {
    const peer = await RawPeer.open(h.port);
    peer.send(T.PING, 0, 0, Buffer.from('meshca!!'));
    const ack = await peer.next((f) => f.type === T.PING && f.flags === 0x1);
    expect(ack.payload.toString()).toBe('meshca!!');
    peer.socket.destroy();
  });
});

describe('H2Connection: stream errors reset one stream and the connection keeps serving', () => {
  let h: Harness;
  beforeAll(async () => {
    h = await harness(LIMITS);
  });
  afterAll(() => h.server.close());

  it.each<{ what: string; code: number; act: (peer: RawPeer) => void }>([
    { what: 'an upper-case header name', code: H2Code.PROTOCOL_ERROR, act: (p) => p.headers(1, request('/echo', [['X-Big', '1']])) },
    { what: 'a header name with a space', code: H2Code.PROTOCOL_ERROR, act: (p) => p.headers(1, request('/echo', [['x big', '1']])) },
    {
      what: 'a header value with a line break',
      code: H2Code.PROTOCOL_ERROR,
      act: (p) => p.headers(1, request('/echo', [['x-a', 'a\r\nb: c']])),
    },
    {
      what: 'a missing :path',
      code: H2Code.PROTOCOL_ERROR,
      act: (p) =>
        p.headers(1, [
          [':method', 'POST'],
          [':scheme', 'http'],
        ]),
    },
    {
      what: 'a connection-specific header',
      code: H2Code.PROTOCOL_ERROR,
      act: (p) => p.headers(1, request('/echo', [['connection', 'close']])),
    },
    {
      what: 'a pseudo-header after a regular one',
      code: H2Code.PROTOCOL_ERROR,
      act: (p) => p.headers(1, [...request('/echo', [['x-a', '1']]), [':authority', 'x']]),
    },
    {
      what: 'a header list over SETTINGS_MAX_HEADER_LIST_SIZE',
      code: H2Code.ENHANCE_YOUR_CALM,
      act: (p) => p.headers(1, request('/echo', [['x-pad', 'p'.repeat(2_100)]])),
    },
    {
      what: 'more header fields than allowed',
      code: H2Code.ENHANCE_YOUR_CALM,
      act: (p) =>
        p.headers(
          1,
          request(
            '/echo',
            Array.from({ length: 14 }, (_, i): HeaderField => [`x-${i}`, '1']),
          ),
        ),
    },
    {
      what: 'DATA beyond the stream window',
      code: H2Code.FLOW_CONTROL_ERROR,
      act: (p) => {
        p.headers(1, request());
        p.send(T.DATA, 0, 1, Buffer.alloc(4_097));
      },
    },
    {
      what: 'DATA after the client ended the stream',
      code: H2Code.STREAM_CLOSED,
      act: (p) => {
        p.headers(1, request('/echo', [['x-delay', '200']]), END_HEADERS);
        p.send(T.DATA, END_STREAM, 1, Buffer.alloc(1));
        p.send(T.DATA, 0, 1, Buffer.alloc(1));
      },
    },
    {
      what: 'a WINDOW_UPDATE of 0 on a stream',
      code: H2Code.PROTOCOL_ERROR,
      act: (p) => {
        p.headers(1, request());
        p.send(T.WINDOW_UPDATE, 0, 1, u32(0));
      },
    },
    { what: 'PRIORITY of the wrong length', code: H2Code.FRAME_SIZE_ERROR, act: (p) => p.send(T.PRIORITY, 0, 1, Buffer.alloc(4)) },
  ])('$what', async ({ code, act }) => {
    const peer = await RawPeer.open(h.port);
    act(peer);
    expect(await peer.rst(1)).toBe(code);
    // The same connection still answers a well-formed request.
    peer.headers(3, request('/echo', [['x-size', '10']]), END_HEADERS | END_STREAM);
    const data = await peer.next((f) => f.type === T.DATA && f.streamId === 3);
    expect(data.payload.length).toBe(10);
    expect(peer.frames.some((f) => f.type === T.GOAWAY)).toBe(false);
    peer.socket.destroy();
  });

  it('refuses streams beyond SETTINGS_MAX_CONCURRENT_STREAMS with REFUSED_STREAM', async () => {
    const peer = await RawPeer.open(h.port);
    const settings = await peer.next((f) => f.type === T.SETTINGS && f.flags === 0);
    expect(settings.payload.readUInt16BE(6)).toBe(3); // MAX_CONCURRENT_STREAMS
    expect(settings.payload.readUInt32BE(8)).toBe(LIMITS.maxConcurrentStreams);
    for (let id = 1; id <= 9; id += 2) peer.headers(id, request());
    expect(await peer.rst(9)).toBe(H2Code.REFUSED_STREAM);
    expect(peer.frames.filter((f) => f.type === T.RST_STREAM)).toHaveLength(1);
    peer.socket.destroy();
  });

  it('answers a client that has not ended its stream, then resets it with NO_ERROR', async () => {
    const peer = await RawPeer.open(h.port);
    const onStream = h.connections.at(-1);
    expect(onStream).toBeDefined();
    peer.headers(1, request());
    peer.send(T.DATA, 0, 1, Buffer.alloc(8));
    // Ending with trailers (a second header block with END_STREAM) is an end like any other.
    peer.headers(1, [['x-trailer', '1']], END_HEADERS | END_STREAM);
    const data = await peer.next((f) => f.type === T.DATA && f.streamId === 1);
    expect(data.payload.length).toBe(8);
    peer.socket.destroy();
  });
});

describe('H2Connection with node:http2 as the client', () => {
  let h: Harness;
  beforeAll(async () => {
    h = await harness({
      ...LIMITS,
      maxConcurrentStreams: 64,
      maxHeaderListBytes: 64 * 1024,
      maxHeaderPairs: 64,
      maxStreamBodyBytes: 1 << 20,
    });
  });
  afterAll(() => h.server.close());

  async function session(options: Parameters<typeof http2Connect>[1] = {}): Promise<ClientHttp2Session> {
    const client = http2Connect(`http://127.0.0.1:${h.port}`, options);
    client.on('error', () => undefined);
    await once(client, 'remoteSettings');
    return client;
  }

  function exchange(
    client: ClientHttp2Session,
    headers: Record<string, string>,
    body: Buffer,
  ): Promise<{ body: Buffer; trailers: IncomingHttpHeaders; status: number }> {
    const stream = client.request({ ':method': 'POST', ':path': '/echo', ...headers });
    stream.end(body);
    const chunks: Buffer[] = [];
    let status = 0;
    let trailers: IncomingHttpHeaders = {};
    stream.on('response', (h) => (status = Number(h[':status'])));
    stream.on('trailers', (t) => (trailers = t));
    stream.on('data', (c: Buffer) => chunks.push(c));
    return new Promise((resolve, reject) => {
      stream.on('error', reject);
      stream.on('end', () => resolve({ body: Buffer.concat(chunks), trailers, status }));
    });
  }

  it.each([
    { what: 'padded frames', options: { paddingStrategy: constants.PADDING_STRATEGY_MAX }, size: 3_000, calls: 4 },
    // Request bodies return to the server's 65,535-byte connection window as each completes.
    { what: 'requests totalling six times the connection window', options: {}, size: 10, calls: 100, sent: 4_000 },
    {
      what: 'a 200-byte stream window (many DATA frames, each after a WINDOW_UPDATE)',
      options: { settings: { initialWindowSize: 200 } },
      size: 20_000,
      calls: 3,
    },
    { what: 'answers larger than the connection window, 16 at once', options: {}, size: 40_000, calls: 16 },
  ])('$what: every answer arrives whole', async ({ options, size, calls, sent = 1_000 }) => {
    const client = await session(options);
    const body = Buffer.alloc(sent, 'q');
    const answers = await Promise.all(Array.from({ length: calls }, () => exchange(client, { 'x-size': String(size) }, body)));
    for (const answer of answers) {
      expect(answer.status).toBe(200);
      expect(answer.body.equals(Buffer.alloc(size, 'r'))).toBe(true);
      expect(answer.trailers['x-received']).toBe(String(sent));
    }
    client.close();
  });

  it('takes a header block split into CONTINUATION frames', async () => {
    const client = await session();
    const answer = await exchange(client, { 'x-size': '5', 'x-long': 'l'.repeat(40_000) }, Buffer.alloc(0));
    expect(answer.body.length).toBe(5);
    client.close();
  });

  it('pings the client and hears the answer; answers the client’s ping', async () => {
    const client = await session();
    const pinged = once(client, 'ping');
    const connection = h.connections.at(-1)!;
    const answered = new Promise<Error | undefined>((resolve) => connection.ping(resolve));
    await pinged;
    expect(await answered).toBeUndefined();
    const rtt = await new Promise<number>((resolve, reject) => client.ping((err, ms) => (err ? reject(err) : resolve(ms))));
    expect(rtt).toBeGreaterThanOrEqual(0);
    client.close();
  });

  it('GOAWAY lets the open call finish, refuses new ones, then closes', async () => {
    const client = await session();
    const stream = client.request({ ':method': 'POST', ':path': '/echo', 'x-size': '7' });
    stream.on('error', () => undefined);
    await new Promise((resolve) => setTimeout(resolve, 50));
    const connection = h.connections.at(-1)!;
    const closed = new Promise<void>((resolve) => connection.goaway(H2Code.NO_ERROR, resolve));
    const goaway = once(client, 'goaway');
    await goaway;
    const chunks: Buffer[] = [];
    stream.on('data', (c: Buffer) => chunks.push(c));
    stream.end(Buffer.alloc(3));
    await once(stream, 'end');
    expect(Buffer.concat(chunks).length).toBe(7);
    await closed;
    expect(connection.closed).toBe(true);
  });

  it('closes a connection whose preface never arrives', async () => {
    const quiet = tcpConnect(h.port, '127.0.0.1');
    quiet.on('error', () => undefined);
    quiet.resume(); // reads the server's SETTINGS, so 'close' is not held back by unread data
    const started = Date.now();
    await once(quiet, 'close');
    expect(Date.now() - started).toBeGreaterThanOrEqual(LIMITS.prefaceTimeoutMs - 100);
  });
});
