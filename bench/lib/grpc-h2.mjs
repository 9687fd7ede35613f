// @ts-check
// A lean gRPC unary client on node:http2 for the load generators. The benchmark measures the
// server; grpc-js's client costs the load CPU two to three times as much per call, and with
// `--pin` the load generators (one core) then ran out of CPU before meshca did. The wire is the
// same: one HTTP/2 stream per call with `content-type: application/grpc`, `te: trailers`, the
// metadata as headers, `grpc-timeout`, one length-prefixed protobuf message each way, the status
// in `grpc-status` / `grpc-message` trailers (or a trailers-only response).

import { connect, constants } from 'node:http2';

const { HTTP2_HEADER_PATH, HTTP2_HEADER_METHOD, HTTP2_HEADER_STATUS, HTTP2_HEADER_CONTENT_TYPE, NGHTTP2_CANCEL } = constants;
/** Sent like every gRPC client sends its own (grpc-go: "grpc-go/1.x"), so the server parses as many headers. */
const USER_AGENT = 'meshca-bench-h2/1';
/** grpc.status.DEADLINE_EXCEEDED, UNAVAILABLE, INTERNAL */
const DEADLINE_EXCEEDED = 4;
const UNAVAILABLE = 14;
const INTERNAL = 13;

/** A call that did not end in status 0, shaped like grpc-js's ServiceError for the Recorder. */
class CallError extends Error {
  /** @param {number} code @param {string} details */
  constructor(code, details) {
    super(details);
    this.code = code;
    this.details = details;
  }
}

export class H2Channel {
  /** @param {import('node:http2').ClientHttp2Session} session */
  constructor(session) {
    this.session = session;
  }

  /**
   * One TLS HTTP/2 connection to `address` (host:port), trusting `rootsPem`, checked as "localhost".
   * @param {string} address @param {string} rootsPem @param {number} timeoutMs
   */
  static open(address, rootsPem, timeoutMs = 15_000) {
    return new Promise((resolve, reject) => {
      const session = connect(`https://${address}`, { ca: rootsPem, servername: 'localhost' });
      const timer = setTimeout(() => {
        session.destroy();
        reject(new Error(`no HTTP/2 connection to ${address} within ${timeoutMs} ms`));
      }, timeoutMs);
      session.once('connect', () => {
        clearTimeout(timer);
        resolve(new H2Channel(session));
      });
      session.once('error', (error) => {
        clearTimeout(timer);
        reject(error);
      });
    });
  }

  /**
   * A unary call: resolves with the response message bytes, rejects with a CallError.
   * @param {string} path /package.Service/Method
   * @param {Buffer} message the serialized request
   * @param {Record<string, string>} metadata
   * @param {number} deadlineMs
   * @returns {Promise<Buffer>}
   */
  unary(path, message, metadata, deadlineMs) {
    return new Promise((resolve, reject) => {
      if (this.session.closed || this.session.destroyed) return reject(new CallError(UNAVAILABLE, 'the connection is closed'));
      const stream = this.session.request({
        [HTTP2_HEADER_METHOD]: 'POST',
        [HTTP2_HEADER_PATH]: path,
        [HTTP2_HEADER_CONTENT_TYPE]: 'application/grpc',
        te: 'trailers',
        'user-agent': USER_AGENT,
        'grpc-timeout': `${Math.max(1, Math.ceil(deadlineMs))}m`,
        ...metadata,
      });
      const timer = setTimeout(() => {
        stream.close(NGHTTP2_CANCEL);
        settle(new CallError(DEADLINE_EXCEEDED, 'deadline exceeded (client)'));
      }, deadlineMs);
      /** @type {Buffer[]} */
      const chunks = [];
      /** @type {Record<string, any> | undefined} */
      let status;
      let done = false;
      const settle = (/** @type {CallError | Buffer} */ outcome) => {
        if (done) return;
        done = true;
        clearTimeout(timer);
        if (outcome instanceof Buffer) resolve(outcome);
        else reject(outcome);
      };
      stream.on('response', (headers) => {
        if (Number(headers[HTTP2_HEADER_STATUS]) !== 200) settle(new CallError(UNAVAILABLE, `HTTP status ${headers[HTTP2_HEADER_STATUS]}`));
        if (headers['grpc-status'] !== undefined) status = headers; // trailers-only
      });
      stream.on('trailers', (trailers) => {
        status = trailers;
      });
      stream.on('data', (chunk) => chunks.push(chunk));
      stream.on('error', (error) => settle(new CallError(UNAVAILABLE, error.message)));
      stream.on('close', () => {
        const code = Number(status?.['grpc-status'] ?? INTERNAL);
        if (code !== 0) return settle(new CallError(code, decodeURIComponent(String(status?.['grpc-message'] ?? 'no grpc-status'))));
        const body = Buffer.concat(chunks);
        const length = body.length >= 5 ? body.readUInt32BE(1) : -1;
        if (body[0] !== 0 || length !== body.length - 5) return settle(new CallError(INTERNAL, 'malformed response message'));
        settle(body.subarray(5));
      });
      const frame = Buffer.allocUnsafe(5 + message.length);
      frame[0] = 0;
      frame.writeUInt32BE(message.length, 1);
      message.copy(frame, 5);
      stream.end(frame);
    });
  }

  close() {
    this.session.close();
  }
}
