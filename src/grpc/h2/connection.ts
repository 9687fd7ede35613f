import type { Duplex } from 'node:stream';
import { HpackDecoder, HpackError, headerListBytes, type HeaderField } from './hpack.js';

/**
 * The server side of one HTTP/2 connection (RFC 9113), for request/response exchanges: every
 * stream is opened by the client, carries one request and gets one answer. It frames, flow-controls
 * and bounds; what a stream means is up to `onStream`. Replies produced in one turn of the event
 * loop leave in one socket write.
 */

/** RFC 9113 §7. */
export const H2Code = {
  NO_ERROR: 0x0,
  PROTOCOL_ERROR: 0x1,
  INTERNAL_ERROR: 0x2,
  FLOW_CONTROL_ERROR: 0x3,
  STREAM_CLOSED: 0x5,
  FRAME_SIZE_ERROR: 0x6,
  REFUSED_STREAM: 0x7,
  CANCEL: 0x8,
  COMPRESSION_ERROR: 0x9,
  ENHANCE_YOUR_CALM: 0xb,
} as const;
export type H2Code = (typeof H2Code)[keyof typeof H2Code];

const FrameType = {
  DATA: 0x0,
  HEADERS: 0x1,
  PRIORITY: 0x2,
  RST_STREAM: 0x3,
  SETTINGS: 0x4,
  PUSH_PROMISE: 0x5,
  PING: 0x6,
  GOAWAY: 0x7,
  WINDOW_UPDATE: 0x8,
  CONTINUATION: 0x9,
} as const;

const END_STREAM = 0x1;
const ACK = 0x1;
const END_HEADERS = 0x4;
const PADDED = 0x8;
const PRIORITY = 0x20;

const Setting = {
  HEADER_TABLE_SIZE: 0x1,
  ENABLE_PUSH: 0x2,
  MAX_CONCURRENT_STREAMS: 0x3,
  INITIAL_WINDOW_SIZE: 0x4,
  MAX_FRAME_SIZE: 0x5,
  MAX_HEADER_LIST_SIZE: 0x6,
} as const;

const PREFACE = Buffer.from('PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n', 'latin1');
const FRAME_HEADER_BYTES = 9;
/** The frame size we accept: the protocol's default, never raised. */
const MAX_FRAME_BYTES = 16_384;
const DEFAULT_WINDOW = 65_535;
const MAX_WINDOW = 2 ** 31 - 1;

export interface H2Limits {
  /** SETTINGS_MAX_CONCURRENT_STREAMS; streams beyond it are refused (REFUSED_STREAM). */
  readonly maxConcurrentStreams: number;
  /** SETTINGS_MAX_HEADER_LIST_SIZE (RFC 7541 §4.1 size); a larger request is reset with ENHANCE_YOUR_CALM. */
  readonly maxHeaderListBytes: number;
  /** Header fields per request; more are reset with ENHANCE_YOUR_CALM. */
  readonly maxHeaderPairs: number;
  /** Request body bytes one stream may send (its flow-control window). */
  readonly maxStreamBodyBytes: number;
  /**
   * Request body bytes of unfinished requests per connection (its flow-control window): at least
   * maxStreamBodyBytes. A stream's bytes return to the window when its body is complete.
   */
  readonly connectionWindowBytes: number;
  /** The client preface must arrive within this. */
  readonly prefaceTimeoutMs: number;
}

/** Output a peer leaves unread beyond this closes its connection. */
const MAX_UNREAD_OUTPUT_BYTES = 4 * 1024 * 1024;
/** Streams a client may reset per second before its connection is closed (CVE-2023-44487). */
const MAX_RESETS_PER_SECOND = 1_000;
/** How long a client may keep a connection open after we ended our side. */
const CLOSE_GRACE_MS = 2_000;
/** Frames that carry nothing (empty DATA, empty CONTINUATION) a connection may send in all. */
const MAX_EMPTY_FRAMES = 1_000;

/** Request pseudo-headers (§8.3.1); the others must not appear in a request. */
const REQUEST_PSEUDO = new Set([':method', ':scheme', ':path', ':authority']);
/** A regular field name (RFC 9110 §5.1 token, lower case as §8.2.1 requires). */
const FIELD_NAME = /^[!#$%&'*+\-.^_`|~0-9a-z]+$/;
/** Connection-specific fields, malformed in HTTP/2 (§8.2.2). */
const CONNECTION_SPECIFIC = new Set(['connection', 'keep-alive', 'proxy-connection', 'transfer-encoding', 'upgrade']);

/** One request stream. The handler of `onStream` sets the callbacks before it returns. */
export interface H2Stream {
  readonly id: number;
  /** Request headers by name; repeated fields are joined with ", " (RFC 9110 §5.3). */
  readonly headers: Readonly<Record<string, string>>;
  /** Called with each piece of the request body. */
  onData: ((chunk: Buffer) => void) | undefined;
  /** Called once when the client has sent its whole request. */
  onEnd: (() => void) | undefined;
  /** Called once when the stream is gone: answered and done, reset by either side, or the connection lost. */
  onClose: (() => void) | undefined;
  readonly remoteEnded: boolean;
  /** True once an answer (or a reset) has been queued: nothing more may be sent. */
  readonly answered: boolean;
  readonly closed: boolean;
  /**
   * The whole answer: a header block, the body, and a trailer block that ends the stream (blocks
   * from encodeHeaderBlock). The body waits for flow-control window if it must.
   */
  respond(headerBlock: Buffer, body: Buffer, trailerBlock: Buffer): void;
  /** A header block that ends the stream (e.g. a trailers-only gRPC answer). */
  respondOnly(headerBlock: Buffer): void;
  /** RST_STREAM: abandons the stream. */
  reset(code: H2Code): void;
}

/** What a stream asks of its connection. */
interface StreamOwner {
  send(stream: ServerStream, headerBlock: Buffer, body: Buffer | undefined, trailerBlock: Buffer | undefined): void;
  reset(stream: ServerStream, code: H2Code): void;
}

/** A stream with the protocol state only its connection reads and writes. */
class ServerStream implements H2Stream {
  onData: ((chunk: Buffer) => void) | undefined;
  onEnd: (() => void) | undefined;
  onClose: (() => void) | undefined;
  remoteEnded = false;
  answered = false;
  closed = false;
  /** Flow-controlled bytes received, returned to the connection window when the body is done. */
  received = 0;
  /** Response bytes waiting for flow-control window, then the trailers that end the stream. */
  pendingData: Buffer | undefined;
  pendingTrailers: Buffer | undefined;

  constructor(
    readonly id: number,
    readonly headers: Readonly<Record<string, string>>,
    private readonly owner: StreamOwner,
    public sendWindow: number,
    public receiveWindow: number,
  ) {}

  respond(headerBlock: Buffer, body: Buffer, trailerBlock: Buffer): void {
    if (this.answered || this.closed) return;
    this.answered = true;
    this.owner.send(this, headerBlock, body, trailerBlock);
  }

  respondOnly(headerBlock: Buffer): void {
    if (this.answered || this.closed) return;
    this.answered = true;
    this.owner.send(this, headerBlock, undefined, undefined);
  }

  reset(code: H2Code): void {
    if (this.closed) return;
    this.answered = true;
    this.owner.reset(this, code);
  }

  /** False if it was closed already. */
  markClosed(): boolean {
    if (this.closed) return false;
    this.closed = true;
    this.answered = true;
    return true;
  }
}

interface HeaderBlockInProgress {
  readonly streamId: number;
  readonly endStream: boolean;
  readonly fragments: Buffer[];
  bytes: number;
  frames: number;
}

interface PendingPing {
  readonly payload: Buffer;
  readonly callback: (error?: Error) => void;
}

/** A connection-level failure we sent GOAWAY for. */
class ConnectionError extends Error {
  constructor(
    readonly h2Code: H2Code,
    message: string,
  ) {
    super(message);
  }
}

export class H2Connection {
  /** Called whenever the number of open streams changes. */
  onActivity: ((openStreams: number) => void) | undefined;
  /** A stream handler threw: a bug. The connection is closed with INTERNAL_ERROR instead of the process. */
  onInternalError: ((error: unknown) => void) | undefined;
  readonly #streams = new Map<number, ServerStream>();
  readonly #decoder = new HpackDecoder();
  readonly #closeListeners: (() => void)[] = [];
  #rest: Buffer | undefined;
  #prefaceSeen = false;
  #settingsSeen = false;
  #headerBlock: HeaderBlockInProgress | undefined;
  #lastStreamId = 0;
  /** The peer's SETTINGS that shape what we send. */
  #peerInitialWindow = DEFAULT_WINDOW;
  #peerMaxFrame = MAX_FRAME_BYTES;
  #sendWindow = DEFAULT_WINDOW;
  /** Received DATA bytes not yet returned to the client with WINDOW_UPDATE. */
  #unacknowledged = 0;
  #receiveWindow: number;
  /** Streams with response bytes waiting for window, in the order they were answered. */
  readonly #blocked = new Set<ServerStream>();
  #out: Buffer[] = [];
  #flushScheduled = false;
  #goawaySent = false;
  #peerLeaving = false;
  #closed = false;
  #pings: PendingPing[] = [];
  #pingCounter = 0;
  #resetsWindowStart = 0;
  #resetsInWindow = 0;
  #emptyFrames = 0;
  #prefaceTimer: NodeJS.Timeout | undefined;

  /** @param onStream called for each new request stream, after its headers have been checked */
  constructor(
    private readonly socket: Duplex,
    private readonly limits: H2Limits,
    private readonly onStream: (stream: H2Stream) => void,
  ) {
    this.#receiveWindow = limits.connectionWindowBytes;
    socket.on('data', (chunk: Buffer) => this.#read(chunk));
    socket.on('error', () => undefined); // 'close' follows and cleans up
    socket.on('close', () => this.#socketClosed());
    socket.on('drain', () => socket.resume());
    this.#prefaceTimer = setTimeout(() => this.destroy(), limits.prefaceTimeoutMs);
    this.#prefaceTimer.unref();
    this.#sendSettings();
  }

  get closed(): boolean {
    return this.#closed;
  }

  get openStreams(): number {
    return this.#streams.size;
  }

  /** Registers a callback for when the socket has closed. */
  onClose(listener: () => void): void {
    if (this.#closed) listener();
    else this.#closeListeners.push(listener);
  }

  /** Sends PING; the callback gets the answer, or an error if the connection closes first. */
  ping(callback: (error?: Error) => void): void {
    if (this.#closed) return callback(new Error('the connection is closed'));
    const payload = Buffer.alloc(8);
    payload.writeUInt32BE(++this.#pingCounter, 4);
    this.#pings.push({ payload, callback });
    this.#queue(frame(FrameType.PING, 0, 0, payload));
  }

  /**
   * GOAWAY: no new streams; those open finish, then the connection ends (gracefully: NO_ERROR).
   * The callback runs when the socket has closed.
   */
  goaway(code: H2Code = H2Code.NO_ERROR, callback?: () => void): void {
    if (callback) this.onClose(callback);
    if (this.#closed) return;
    if (!this.#goawaySent) {
      this.#goawaySent = true;
      const payload = Buffer.alloc(8);
      payload.writeUInt32BE(this.#lastStreamId, 0);
      payload.writeUInt32BE(code, 4);
      this.#queue(frame(FrameType.GOAWAY, 0, 0, payload));
    }
    this.#endIfIdle();
  }

  destroy(): void {
    this.socket.destroy();
  }

  readonly #owner: StreamOwner = {
    send: (stream, headerBlock, body, trailerBlock) => this.#sendResponse(stream, headerBlock, body, trailerBlock),
    reset: (stream, code) => this.#resetStream(stream, code),
  };

  #sendResponse(stream: ServerStream, headerBlock: Buffer, body: Buffer | undefined, trailerBlock: Buffer | undefined): void {
    if (headerBlock.length > this.#peerMaxFrame || (trailerBlock && trailerBlock.length > this.#peerMaxFrame)) {
      // Our blocks are a few hundred bytes; a longer one is a bug, not something to split.
      return this.#resetStream(stream, H2Code.INTERNAL_ERROR);
    }
    if (!body || !trailerBlock) {
      this.#queue(frame(FrameType.HEADERS, END_HEADERS | END_STREAM, stream.id, headerBlock));
      return this.#localEnded(stream);
    }
    this.#queue(frame(FrameType.HEADERS, END_HEADERS, stream.id, headerBlock));
    stream.pendingData = body;
    stream.pendingTrailers = trailerBlock;
    this.#sendPending(stream);
  }

  #resetStream(stream: ServerStream, code: H2Code): void {
    const payload = Buffer.allocUnsafe(4);
    payload.writeUInt32BE(code, 0);
    this.#queue(frame(FrameType.RST_STREAM, 0, stream.id, payload));
    this.#closeStream(stream);
  }

  // ---------------------------------------------------------------------------------------------
  // Reading

  #read(chunk: Buffer): void {
    const buffer = this.#rest ? Buffer.concat([this.#rest, chunk]) : chunk;
    this.#rest = undefined;
    let pos = 0;
    try {
      if (!this.#prefaceSeen) {
        if (buffer.length < PREFACE.length) {
          if (!PREFACE.subarray(0, buffer.length).equals(buffer))
            throw new ConnectionError(H2Code.PROTOCOL_ERROR, 'not an HTTP/2 client preface');
          this.#rest = buffer;
          return;
        }
        if (!PREFACE.equals(buffer.subarray(0, PREFACE.length)))
          throw new ConnectionError(H2Code.PROTOCOL_ERROR, 'not an HTTP/2 client preface');
        this.#prefaceSeen = true;
        clearTimeout(this.#prefaceTimer);
        pos = PREFACE.length;
      }
      while (buffer.length - pos >= FRAME_HEADER_BYTES && !this.#closed) {
        const length = (buffer[pos]! << 16) | (buffer[pos + 1]! << 8) | buffer[pos + 2]!;
        if (length > MAX_FRAME_BYTES) throw new ConnectionError(H2Code.FRAME_SIZE_ERROR, 'frame larger than SETTINGS_MAX_FRAME_SIZE');
        if (buffer.length - pos < FRAME_HEADER_BYTES + length) break;
        const type = buffer[pos + 3]!;
        const flags = buffer[pos + 4]!;
        const streamId = buffer.readUInt32BE(pos + 5) & 0x7fffffff;
        const payload = buffer.subarray(pos + FRAME_HEADER_BYTES, pos + FRAME_HEADER_BYTES + length);
        pos += FRAME_HEADER_BYTES + length;
        this.#frame(type, flags, streamId, payload);
      }
    } catch (error) {
      if (error instanceof ConnectionError) return this.#fail(error.h2Code, error.message);
      this.#fail(H2Code.INTERNAL_ERROR, 'internal error');
      return this.onInternalError?.(error);
    }
    if (pos < buffer.length && !this.#closed) this.#rest = buffer.subarray(pos);
    this.#returnWindow();
  }

  #frame(type: number, flags: number, streamId: number, payload: Buffer): void {
    if (!this.#settingsSeen && type !== FrameType.SETTINGS) {
      throw new ConnectionError(H2Code.PROTOCOL_ERROR, 'the client preface must start with SETTINGS');
    }
    if (this.#headerBlock && type !== FrameType.CONTINUATION) {
      throw new ConnectionError(H2Code.PROTOCOL_ERROR, 'a header block was interrupted by another frame');
    }
    switch (type) {
      case FrameType.DATA:
        return this.#data(flags, streamId, payload);
      case FrameType.HEADERS:
        return this.#headers(flags, streamId, payload);
      case FrameType.PRIORITY:
        if (streamId === 0) throw new ConnectionError(H2Code.PROTOCOL_ERROR, 'PRIORITY on stream 0');
        if (payload.length !== 5) this.#resetById(streamId, H2Code.FRAME_SIZE_ERROR);
        return;
      case FrameType.RST_STREAM:
        return this.#rstStream(streamId, payload);
      case FrameType.SETTINGS:
        return this.#settings(flags, streamId, payload);
      case FrameType.PUSH_PROMISE:
        throw new ConnectionError(H2Code.PROTOCOL_ERROR, 'a client must not send PUSH_PROMISE');
      case FrameType.PING:
        return this.#ping(flags, streamId, payload);
      case FrameType.GOAWAY:
        if (streamId !== 0) throw new ConnectionError(H2Code.PROTOCOL_ERROR, 'GOAWAY on a stream');
        if (payload.length < 8) throw new ConnectionError(H2Code.FRAME_SIZE_ERROR, 'GOAWAY shorter than 8 octets');
        this.#peerLeaving = true;
        return this.#endIfIdle();
      case FrameType.WINDOW_UPDATE:
        return this.#windowUpdate(streamId, payload);
      case FrameType.CONTINUATION:
        return this.#continuation(flags, streamId, payload);
      default:
        return; // §5.5: unknown frame types are ignored
    }
  }

  #data(flags: number, streamId: number, payload: Buffer): void {
    if (streamId === 0) throw new ConnectionError(H2Code.PROTOCOL_ERROR, 'DATA on stream 0');
    if (streamId > this.#lastStreamId) throw new ConnectionError(H2Code.PROTOCOL_ERROR, 'DATA on an idle stream');
    this.#receiveWindow -= payload.length;
    if (this.#receiveWindow < 0) throw new ConnectionError(H2Code.FLOW_CONTROL_ERROR, 'DATA beyond the connection window');
    const body = unpadded(flags, payload);
    const endStream = (flags & END_STREAM) !== 0;
    if (payload.length === 0 && !endStream) this.#countEmptyFrame();
    const stream = this.#streams.get(streamId);
    if (!stream || stream.remoteEnded) {
      // A stream we closed (reset, or answered early) may still have DATA in flight: §5.1.
      this.#acknowledge(payload.length);
      if (stream) this.#resetStream(stream, H2Code.STREAM_CLOSED);
      return;
    }
    stream.received += payload.length;
    stream.receiveWindow -= payload.length;
    if (stream.receiveWindow < 0) return this.#resetStream(stream, H2Code.FLOW_CONTROL_ERROR);
    if (body.length > 0) stream.onData?.(body);
    if (endStream && !stream.closed) this.#remoteEnd(stream);
  }

  #headers(flags: number, streamId: number, payload: Buffer): void {
    if (streamId === 0 || streamId % 2 === 0) throw new ConnectionError(H2Code.PROTOCOL_ERROR, 'HEADERS on stream 0 or a server stream id');
    let fragment = unpadded(flags, payload);
    if (flags & PRIORITY) {
      if (fragment.length < 5) throw new ConnectionError(H2Code.FRAME_SIZE_ERROR, 'HEADERS too short for its priority');
      fragment = fragment.subarray(5);
    }
    const block: HeaderBlockInProgress = {
      streamId,
      endStream: (flags & END_STREAM) !== 0,
      fragments: [fragment],
      bytes: fragment.length,
      frames: 1,
    };
    if (flags & END_HEADERS) return this.#headerBlockDone(block);
    this.#headerBlock = block;
  }

  #continuation(flags: number, streamId: number, payload: Buffer): void {
    const block = this.#headerBlock;
    if (!block || block.streamId !== streamId)
      throw new ConnectionError(H2Code.PROTOCOL_ERROR, 'CONTINUATION without a header block in progress');
    block.fragments.push(payload);
    block.bytes += payload.length;
    if (payload.length === 0) this.#countEmptyFrame();
    // The compressed block is bounded too: HPACK must decode all of it to stay in step.
    if (block.bytes > 2 * this.limits.maxHeaderListBytes) {
      throw new ConnectionError(H2Code.ENHANCE_YOUR_CALM, 'header block larger than twice SETTINGS_MAX_HEADER_LIST_SIZE');
    }
    if (flags & END_HEADERS) {
      this.#headerBlock = undefined;
      this.#headerBlockDone(block);
    }
  }

  #headerBlockDone(block: HeaderBlockInProgress): void {
    let fields: HeaderField[];
    try {
      fields = this.#decoder.decode(block.fragments.length === 1 ? block.fragments[0]! : Buffer.concat(block.fragments));
    } catch (error) {
      if (error instanceof HpackError) throw new ConnectionError(H2Code.COMPRESSION_ERROR, error.message);
      throw error;
    }
    const { streamId } = block;
    const existing = this.#streams.get(streamId);
    if (existing) return this.#trailers(existing, block.endStream);
    if (streamId <= this.#lastStreamId) return; // a stream already closed; its headers were decoded to keep HPACK in step
    this.#lastStreamId = streamId;
    if (this.#goawaySent || this.#streams.size >= this.limits.maxConcurrentStreams) {
      return this.#resetById(streamId, H2Code.REFUSED_STREAM);
    }
    if (fields.length > this.limits.maxHeaderPairs || headerListBytes(fields) > this.limits.maxHeaderListBytes) {
      return this.#resetById(streamId, H2Code.ENHANCE_YOUR_CALM);
    }
    const headers = requestHeaders(fields);
    if (!headers) return this.#resetById(streamId, H2Code.PROTOCOL_ERROR);
    const stream = new ServerStream(streamId, headers, this.#owner, this.#peerInitialWindow, this.limits.maxStreamBodyBytes);
    this.#streams.set(streamId, stream);
    this.onActivity?.(this.#streams.size);
    this.onStream(stream);
    if (block.endStream && !stream.closed) this.#remoteEnd(stream);
  }

  /** A second header block on an open stream: trailers, which must end it (§8.1). */
  #trailers(stream: ServerStream, endStream: boolean): void {
    if (stream.remoteEnded) return this.#resetStream(stream, H2Code.STREAM_CLOSED);
    if (!endStream) return this.#resetStream(stream, H2Code.PROTOCOL_ERROR);
    this.#remoteEnd(stream);
  }

  #remoteEnd(stream: ServerStream): void {
    stream.remoteEnded = true;
    this.#acknowledge(stream.received);
    stream.received = 0;
    if (stream.answered && !stream.pendingTrailers) return this.#closeStream(stream);
    stream.onEnd?.();
  }

  #rstStream(streamId: number, payload: Buffer): void {
    if (streamId === 0) throw new ConnectionError(H2Code.PROTOCOL_ERROR, 'RST_STREAM on stream 0');
    if (payload.length !== 4) throw new ConnectionError(H2Code.FRAME_SIZE_ERROR, 'RST_STREAM must be 4 octets');
    if (streamId > this.#lastStreamId) throw new ConnectionError(H2Code.PROTOCOL_ERROR, 'RST_STREAM on an idle stream');
    const stream = this.#streams.get(streamId);
    if (!stream) return;
    if (!stream.answered) this.#countReset();
    this.#closeStream(stream);
  }

  #settings(flags: number, streamId: number, payload: Buffer): void {
    if (streamId !== 0) throw new ConnectionError(H2Code.PROTOCOL_ERROR, 'SETTINGS on a stream');
    if (flags & ACK) {
      if (payload.length !== 0) throw new ConnectionError(H2Code.FRAME_SIZE_ERROR, 'SETTINGS ACK with a payload');
      return;
    }
    if (payload.length % 6 !== 0) throw new ConnectionError(H2Code.FRAME_SIZE_ERROR, 'SETTINGS length not a multiple of 6');
    this.#settingsSeen = true;
    for (let i = 0; i < payload.length; i += 6) {
      const id = payload.readUInt16BE(i);
      const value = payload.readUInt32BE(i + 2);
      if (id === Setting.ENABLE_PUSH && value > 1) throw new ConnectionError(H2Code.PROTOCOL_ERROR, 'SETTINGS_ENABLE_PUSH must be 0 or 1');
      if (id === Setting.INITIAL_WINDOW_SIZE) this.#peerWindowChanged(value);
      if (id === Setting.MAX_FRAME_SIZE) {
        if (value < MAX_FRAME_BYTES || value > 0xffffff)
          throw new ConnectionError(H2Code.PROTOCOL_ERROR, 'SETTINGS_MAX_FRAME_SIZE out of range');
        this.#peerMaxFrame = value;
      }
      // HEADER_TABLE_SIZE needs nothing: our responses never use the dynamic table.
    }
    this.#queue(frame(FrameType.SETTINGS, ACK, 0, Buffer.alloc(0)));
  }

  #peerWindowChanged(value: number): void {
    if (value > MAX_WINDOW) throw new ConnectionError(H2Code.FLOW_CONTROL_ERROR, 'SETTINGS_INITIAL_WINDOW_SIZE above 2^31-1');
    const delta = value - this.#peerInitialWindow;
    this.#peerInitialWindow = value;
    for (const stream of this.#streams.values()) {
      stream.sendWindow += delta;
      if (stream.sendWindow > MAX_WINDOW) throw new ConnectionError(H2Code.FLOW_CONTROL_ERROR, 'a stream window above 2^31-1');
    }
    if (delta > 0) this.#sendBlocked();
  }

  #ping(flags: number, streamId: number, payload: Buffer): void {
    if (streamId !== 0) throw new ConnectionError(H2Code.PROTOCOL_ERROR, 'PING on a stream');
    if (payload.length !== 8) throw new ConnectionError(H2Code.FRAME_SIZE_ERROR, 'PING must be 8 octets');
    if (!(flags & ACK)) return this.#queue(frame(FrameType.PING, ACK, 0, payload));
    const index = this.#pings.findIndex((p) => p.payload.equals(payload));
    if (index < 0) return;
    const [ping] = this.#pings.splice(index, 1);
    ping?.callback();
  }

  #windowUpdate(streamId: number, payload: Buffer): void {
    if (payload.length !== 4) throw new ConnectionError(H2Code.FRAME_SIZE_ERROR, 'WINDOW_UPDATE must be 4 octets');
    const increment = payload.readUInt32BE(0) & 0x7fffffff;
    if (streamId === 0) {
      if (increment === 0) throw new ConnectionError(H2Code.PROTOCOL_ERROR, 'WINDOW_UPDATE of 0');
      this.#sendWindow += increment;
      if (this.#sendWindow > MAX_WINDOW) throw new ConnectionError(H2Code.FLOW_CONTROL_ERROR, 'connection window above 2^31-1');
      return this.#sendBlocked();
    }
    if (streamId > this.#lastStreamId) throw new ConnectionError(H2Code.PROTOCOL_ERROR, 'WINDOW_UPDATE on an idle stream');
    const stream = this.#streams.get(streamId);
    if (!stream) return;
    if (increment === 0) return this.#resetStream(stream, H2Code.PROTOCOL_ERROR);
    stream.sendWindow += increment;
    if (stream.sendWindow > MAX_WINDOW) return this.#resetStream(stream, H2Code.FLOW_CONTROL_ERROR);
    if (this.#blocked.has(stream)) this.#sendPending(stream);
  }

  #countReset(): void {
    const now = performance.now();
    if (now - this.#resetsWindowStart > 1_000) {
      this.#resetsWindowStart = now;
      this.#resetsInWindow = 0;
    }
    if (++this.#resetsInWindow > MAX_RESETS_PER_SECOND) {
      throw new ConnectionError(H2Code.ENHANCE_YOUR_CALM, 'too many streams reset by the client');
    }
  }

  #countEmptyFrame(): void {
    if (++this.#emptyFrames > MAX_EMPTY_FRAMES) throw new ConnectionError(H2Code.ENHANCE_YOUR_CALM, 'too many empty frames');
  }

  /** Returns received bytes to the client's connection window (sent once per read: #returnWindow). */
  #acknowledge(bytes: number): void {
    this.#unacknowledged += bytes;
  }

  #returnWindow(): void {
    if (this.#unacknowledged === 0 || this.#closed) return;
    this.#receiveWindow += this.#unacknowledged;
    this.#queue(windowUpdate(0, this.#unacknowledged));
    this.#unacknowledged = 0;
  }

  #resetById(streamId: number, code: H2Code): void {
    const payload = Buffer.allocUnsafe(4);
    payload.writeUInt32BE(code, 0);
    this.#queue(frame(FrameType.RST_STREAM, 0, streamId, payload));
  }

  // ---------------------------------------------------------------------------------------------
  // Writing

  #sendSettings(): void {
    const settings: [number, number][] = [
      [Setting.ENABLE_PUSH, 0],
      [Setting.MAX_CONCURRENT_STREAMS, this.limits.maxConcurrentStreams],
      [Setting.INITIAL_WINDOW_SIZE, this.limits.maxStreamBodyBytes],
      [Setting.MAX_HEADER_LIST_SIZE, this.limits.maxHeaderListBytes],
    ];
    const payload = Buffer.allocUnsafe(settings.length * 6);
    settings.forEach(([id, value], i) => {
      payload.writeUInt16BE(id, i * 6);
      payload.writeUInt32BE(value, i * 6 + 2);
    });
    this.#queue(frame(FrameType.SETTINGS, 0, 0, payload));
    const extra = this.limits.connectionWindowBytes - DEFAULT_WINDOW;
    if (extra > 0) this.#queue(windowUpdate(0, extra));
    else this.#receiveWindow = DEFAULT_WINDOW;
  }

  /** Sends as much of a stream's pending body as the windows allow, then its trailers. */
  #sendPending(stream: ServerStream): void {
    let data = stream.pendingData;
    while (data && data.length > 0) {
      const size = Math.min(data.length, stream.sendWindow, this.#sendWindow, this.#peerMaxFrame);
      if (size <= 0) {
        stream.pendingData = data;
        this.#blocked.add(stream);
        return;
      }
      this.#queue(frame(FrameType.DATA, 0, stream.id, size === data.length ? data : data.subarray(0, size)));
      stream.sendWindow -= size;
      this.#sendWindow -= size;
      data = data.subarray(size);
    }
    stream.pendingData = undefined;
    this.#blocked.delete(stream);
    const trailers = stream.pendingTrailers;
    if (!trailers) return;
    stream.pendingTrailers = undefined;
    this.#queue(frame(FrameType.HEADERS, END_HEADERS | END_STREAM, stream.id, trailers));
    this.#localEnded(stream);
  }

  #sendBlocked(): void {
    for (const stream of this.#blocked) {
      if (this.#sendWindow <= 0) return;
      this.#sendPending(stream);
    }
  }

  /** Our side is done: the stream closes, after a NO_ERROR reset if the client is still sending (§8.1). */
  #localEnded(stream: ServerStream): void {
    if (!stream.remoteEnded) return this.#resetStream(stream, H2Code.NO_ERROR);
    this.#closeStream(stream);
  }

  #closeStream(stream: ServerStream): void {
    if (!stream.markClosed()) return;
    this.#streams.delete(stream.id);
    this.#blocked.delete(stream);
    this.#acknowledge(stream.received);
    stream.received = 0;
    stream.onClose?.();
    this.onActivity?.(this.#streams.size);
    this.#endIfIdle();
  }

  #endIfIdle(): void {
    if ((this.#goawaySent || this.#peerLeaving) && this.#streams.size === 0 && !this.#closed) {
      this.#flush();
      this.#end();
    }
  }

  /** A connection error: GOAWAY with the code, then the socket closes. */
  #fail(code: H2Code, message: string): void {
    if (this.#closed) return;
    const debug = Buffer.from(message, 'utf8');
    const payload = Buffer.allocUnsafe(8 + debug.length);
    payload.writeUInt32BE(this.#lastStreamId, 0);
    payload.writeUInt32BE(code, 4);
    debug.copy(payload, 8);
    this.#goawaySent = true;
    this.#queue(frame(FrameType.GOAWAY, 0, 0, payload));
    this.#flush();
    this.#end();
    this.#closeAll();
  }

  /** Ends our side; a client that does not close its side soon after is cut off. */
  #end(): void {
    if (this.socket.writableEnded) return;
    this.socket.end();
    setTimeout(() => this.socket.destroy(), CLOSE_GRACE_MS).unref();
  }

  #queue(bytes: Buffer): void {
    this.#out.push(bytes);
    if (this.#flushScheduled) return;
    this.#flushScheduled = true;
    // After the current callback and its promise jobs: answers finished together leave together.
    process.nextTick(() => this.#flush());
  }

  #flush(): void {
    this.#flushScheduled = false;
    if (this.#out.length === 0 || this.socket.destroyed || this.socket.writableEnded) {
      this.#out = [];
      return;
    }
    const bytes = this.#out.length === 1 ? this.#out[0]! : Buffer.concat(this.#out);
    this.#out = [];
    if (!this.socket.write(bytes)) {
      // The client is not reading: read nothing more from it until it does (its PINGs and
      // SETTINGS would otherwise queue answers without bound), and give up past a limit.
      if (this.socket.writableLength > MAX_UNREAD_OUTPUT_BYTES) return this.destroy();
      this.socket.pause();
    }
  }

  #socketClosed(): void {
    this.#closed = true;
    clearTimeout(this.#prefaceTimer);
    this.#closeAll();
    for (const ping of this.#pings.splice(0)) ping.callback(new Error('the connection closed before the PING was answered'));
    for (const listener of this.#closeListeners.splice(0)) listener();
  }

  #closeAll(): void {
    for (const stream of [...this.#streams.values()]) {
      if (!stream.markClosed()) continue;
      this.#streams.delete(stream.id);
      stream.onClose?.();
    }
    this.#blocked.clear();
    this.onActivity?.(0);
  }
}

/** The payload of a DATA or HEADERS frame without its padding (§6.1). */
function unpadded(flags: number, payload: Buffer): Buffer {
  if (!(flags & PADDED)) return payload;
  if (payload.length < 1) throw new ConnectionError(H2Code.FRAME_SIZE_ERROR, 'padded frame without a pad length');
  const padding = payload[0]!;
  if (padding >= payload.length) throw new ConnectionError(H2Code.PROTOCOL_ERROR, 'padding as long as the frame');
  return payload.subarray(1, payload.length - padding);
}

function frame(type: number, flags: number, streamId: number, payload: Buffer): Buffer {
  const out = Buffer.allocUnsafe(FRAME_HEADER_BYTES + payload.length);
  out[0] = payload.length >>> 16;
  out[1] = (payload.length >>> 8) & 0xff;
  out[2] = payload.length & 0xff;
  out[3] = type;
  out[4] = flags;
  out.writeUInt32BE(streamId, 5);
  payload.copy(out, FRAME_HEADER_BYTES);
  return out;
}

function windowUpdate(streamId: number, increment: number): Buffer {
  const payload = Buffer.allocUnsafe(4);
  payload.writeUInt32BE(increment, 0);
  return frame(FrameType.WINDOW_UPDATE, 0, streamId, payload);
}

/**
 * A request's fields as a record, or undefined when malformed (§8.2, §8.3): names that are not
 * lower-case tokens, unknown, repeated or late pseudo-headers, connection-specific fields, `te` other than
 * "trailers", a missing :method, :scheme or :path, or a value with CR, LF or NUL.
 */
function requestHeaders(fields: readonly HeaderField[]): Record<string, string> | undefined {
  const headers: Record<string, string> = Object.create(null);
  let regularSeen = false;
  for (const [name, value] of fields) {
    if (/[\0\r\n]/.test(value)) return undefined;
    if (name.charCodeAt(0) === 0x3a /* : */) {
      if (regularSeen || !REQUEST_PSEUDO.has(name) || name in headers) return undefined;
      headers[name] = value;
      continue;
    }
    regularSeen = true;
    if (!FIELD_NAME.test(name)) return undefined;
    if (CONNECTION_SPECIFIC.has(name) || (name === 'te' && value !== 'trailers')) return undefined;
    const previous = headers[name];
    headers[name] = previous === undefined ? value : `${previous}, ${value}`;
  }
  if (!headers[':method'] || !headers[':scheme'] || !headers[':path']) return undefined;
  return headers;
}
