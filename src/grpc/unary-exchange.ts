import { status } from '@grpc/grpc-js';
import type { H2Stream } from './h2/connection.js';
import { encodeHeaderBlock, type HeaderField } from './h2/hpack.js';
import { CallFailure, type CallMetadata, type UnaryCall, type UnaryMethod } from './unary.js';

/** gRPC over HTTP/2 for one unary call (https://github.com/grpc/grpc/blob/master/doc/PROTOCOL-HTTP2.md). */

export interface ExchangeLimits {
  /** Largest request message accepted; a longer declared length is refused before it is buffered. */
  readonly maxMessageBytes: number;
  /** Largest response message sent. */
  readonly maxResponseBytes: number;
  /** The whole request (headers to END_STREAM) must arrive within this, or the call is cancelled. */
  readonly requestReadTimeoutMs: number;
}

export interface ExchangeEvents {
  readonly onReadTimeout: () => void;
  /** A handler failed with something other than a CallFailure: a bug, to be logged (never sent). */
  readonly onInternalError: (error: unknown, path: string) => void;
}

const PREFIX_BYTES = 5;
const GRPC_CONTENT_TYPE = 'application/grpc+proto';
const TIMEOUT_UNITS_MS: Readonly<Record<string, number>> = { H: 3_600_000, M: 60_000, S: 1_000, m: 1, u: 1e-3, n: 1e-6 };
/** The header and trailer blocks of every successful answer, encoded once. */
const ANSWER_HEADERS = encodeHeaderBlock([
  [':status', '200'],
  ['content-type', GRPC_CONTENT_TYPE],
  ['grpc-accept-encoding', 'identity'],
]);
const OK_TRAILERS = encodeHeaderBlock([['grpc-status', '0']]);

/** Serves one stream: reads the request, runs the handler, answers with a message and status. */
export class UnaryExchange implements UnaryCall<unknown> {
  request: unknown;
  readonly metadata: CallMetadata;
  #cancelled = false;
  #answered = false;
  #chunks: Buffer[] = [];
  #received = 0;
  /** The request message's length from its prefix; -1 until the prefix has arrived. */
  #declared = -1;
  #readTimer: NodeJS.Timeout | undefined;
  /** performance.now() past which the client no longer waits (grpc-timeout); checked when asked, no timer. */
  #deadlineAt = Infinity;

  constructor(
    private readonly stream: H2Stream,
    private readonly method: UnaryMethod,
    private readonly limits: ExchangeLimits,
    private readonly events: ExchangeEvents,
  ) {
    this.metadata = new HeaderMetadata(stream.headers);
    stream.onClose = () => this.#closed();
    const timeout = stream.headers['grpc-timeout'];
    if (timeout !== undefined && !this.#startDeadline(timeout)) return;
    this.#readTimer = setTimeout(() => this.#readTimedOut(), limits.requestReadTimeoutMs);
    stream.onData = (chunk) => this.#receive(chunk);
    stream.onEnd = () => this.#ended();
  }

  /**
   * A client that gives up resets its stream ('close'); one past its deadline may not have yet.
   * Either way no answer will be read, so queued work for it can be skipped.
   */
  get cancelled(): boolean {
    if (!this.#cancelled && performance.now() >= this.#deadlineAt) this.#cancelled = true;
    return this.#cancelled;
  }

  #startDeadline(header: string): boolean {
    const match = /^(\d{1,8})([HMSmun])$/.exec(header);
    if (!match) {
      this.#fail(status.INTERNAL, `invalid grpc-timeout value "${header}"`);
      return false;
    }
    this.#deadlineAt = performance.now() + Number(match[1]) * TIMEOUT_UNITS_MS[match[2]!]!;
    return true;
  }

  #receive(chunk: Buffer): void {
    if (this.#answered) return;
    this.#received += chunk.length;
    this.#chunks.push(chunk);
    if (this.#declared < 0) {
      if (this.#received < PREFIX_BYTES) return;
      const head = this.#chunks.length === 1 ? chunk : Buffer.concat(this.#chunks);
      if (head[0] !== 0) return this.#fail(status.INTERNAL, 'compressed messages are not supported (grpc-encoding identity only)');
      this.#declared = head.readUInt32BE(1);
      if (this.#declared > this.limits.maxMessageBytes) {
        return this.#fail(
          status.RESOURCE_EXHAUSTED,
          `received message larger than max (${this.#declared} vs ${this.limits.maxMessageBytes})`,
        );
      }
    }
    if (this.#received > PREFIX_BYTES + this.#declared) this.#fail(status.INTERNAL, 'a unary call carries exactly one request message');
  }

  #ended(): void {
    if (this.#answered) return;
    clearTimeout(this.#readTimer);
    const body = this.#chunks.length === 1 ? this.#chunks[0]! : Buffer.concat(this.#chunks);
    this.#chunks = [];
    if (this.#declared < 0 || body.length !== PREFIX_BYTES + this.#declared) {
      return this.#fail(status.INTERNAL, 'the request ended without exactly one complete message');
    }
    try {
      this.request = this.method.decode(body.subarray(PREFIX_BYTES));
    } catch (error) {
      return this.#fail(status.INTERNAL, `the request message could not be decoded: ${(error as Error).message}`);
    }
    let answer: Promise<unknown>;
    try {
      answer = this.method.handler(this);
    } catch (error) {
      answer = Promise.reject(error);
    }
    answer.then(
      (response) => this.#succeed(response),
      (error: unknown) => {
        if (error instanceof CallFailure) return this.#fail(error.code, error.details);
        this.events.onInternalError(error, this.method.path);
        this.#fail(status.INTERNAL, 'internal error; see the meshca server log');
      },
    );
  }

  #readTimedOut(): void {
    this.#readTimer = undefined;
    if (this.#answered) return;
    this.events.onReadTimeout();
    this.#fail(status.DEADLINE_EXCEEDED, 'the request message did not arrive within --request-read-timeout');
  }

  #closed(): void {
    if (!this.#answered) this.#cancelled = true;
    this.#answered = true;
    clearTimeout(this.#readTimer);
  }

  #succeed(response: unknown): void {
    if (this.#answered) return;
    let message: Buffer;
    try {
      message = this.method.encode(response);
    } catch (error) {
      this.events.onInternalError(error, this.method.path);
      return this.#fail(status.INTERNAL, 'internal error; see the meshca server log');
    }
    if (message.length > this.limits.maxResponseBytes) {
      return this.#fail(status.RESOURCE_EXHAUSTED, `response larger than max (${message.length} vs ${this.limits.maxResponseBytes})`);
    }
    this.#answered = true;
    const frame = Buffer.allocUnsafe(PREFIX_BYTES + message.length);
    frame[0] = 0;
    frame.writeUInt32BE(message.length, 1);
    message.copy(frame, PREFIX_BYTES);
    this.stream.respond(ANSWER_HEADERS, frame, OK_TRAILERS);
  }

  /** A trailers-only answer; a peer still sending is then reset with NO_ERROR so the stream is freed. */
  #fail(code: status, details: string): void {
    if (this.#answered) return;
    this.#answered = true;
    this.#chunks = [];
    clearTimeout(this.#readTimer);
    refuse(this.stream, code, details);
  }
}

/**
 * A trailers-only response with a status (also for calls refused before an exchange exists). A
 * client still sending is then reset with NO_ERROR (RFC 9113 §8.1), which the stream does itself.
 */
export function refuse(stream: H2Stream, code: status, details: string, extra: readonly HeaderField[] = []): void {
  stream.respondOnly(
    encodeHeaderBlock([
      [':status', '200'],
      ['content-type', GRPC_CONTENT_TYPE],
      ['grpc-status', String(code)],
      ['grpc-message', percentEncoded(details)],
      ...extra,
    ]),
  );
}

/** grpc-message is percent-encoded UTF-8: every byte outside printable ASCII, and '%'. */
export function percentEncoded(text: string): string {
  if (/^[\x20-\x24\x26-\x7e]*$/.test(text)) return text;
  let out = '';
  for (const byte of Buffer.from(text, 'utf8')) {
    out +=
      byte >= 0x20 && byte <= 0x7e && byte !== 0x25 ? String.fromCharCode(byte) : `%${byte.toString(16).toUpperCase().padStart(2, '0')}`;
  }
  return out;
}

class HeaderMetadata implements CallMetadata {
  constructor(private readonly headers: Readonly<Record<string, string>>) {}

  get(name: string): string | undefined {
    return this.headers[name];
  }
}
