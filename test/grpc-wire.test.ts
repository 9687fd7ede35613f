import { connect as http2Connect, type ClientHttp2Session, type IncomingHttpHeaders } from 'node:http2';
import { join } from 'node:path';
import { status } from '@grpc/grpc-js';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { openDevTokenIssuer } from '../src/authn/index.js';
import { percentEncoded } from '../src/grpc/unary-exchange.js';
import { countCertificates, csrFor, removeDir, startTestServer, tempDir, type TestServer } from './support/server.js';

/** meshca's own unary gRPC server (src/grpc/server.ts) at the wire: what it answers to malformed calls. */

const CREATE = '/istio.v1.auth.IstioCertificateService/CreateCertificate';

interface Answer {
  readonly httpStatus: number;
  readonly grpcStatus?: number;
  readonly grpcMessage?: string;
  readonly acceptEncoding?: string;
  /** The RST_STREAM code the stream closed with (0 = NO_ERROR). */
  readonly rstCode: number;
}

function frame(message: Buffer, flag = 0, declared = message.length): Buffer {
  const prefix = Buffer.alloc(5);
  prefix[0] = flag;
  prefix.writeUInt32BE(declared, 1);
  return Buffer.concat([prefix, message]);
}

/** One raw HTTP/2 call: headers, then `body` chunks; `end` closes the request side. */
function call(session: ClientHttp2Session, headers: Record<string, string>, body: Buffer[], end: boolean): Promise<Answer> {
  const stream = session.request(
    { ':method': 'POST', ':path': CREATE, 'content-type': 'application/grpc', te: 'trailers', ...headers },
    { endStream: false },
  );
  for (const chunk of body) stream.write(chunk);
  if (end) stream.end();
  return new Promise((resolve) => {
    let response: IncomingHttpHeaders = {};
    let trailers: IncomingHttpHeaders = {};
    stream.on('response', (h) => (response = h));
    stream.on('trailers', (t) => (trailers = t));
    stream.on('error', () => undefined);
    stream.resume();
    stream.on('close', () => {
      const grpc = response['grpc-status'] !== undefined ? response : trailers;
      resolve({
        httpStatus: Number(response[':status']),
        grpcStatus: grpc['grpc-status'] === undefined ? undefined : Number(grpc['grpc-status']),
        grpcMessage: grpc['grpc-message'] as string | undefined,
        acceptEncoding: response['grpc-accept-encoding'] as string | undefined,
        rstCode: stream.rstCode ?? -1,
      });
    });
  });
}

let dir: string;
let t: TestServer;
let session: ClientHttp2Session;

beforeAll(async () => {
  dir = tempDir();
  t = await startTestServer(join(dir, 'data'), ['--dev', '--keepalive-time', '300ms']);
  session = http2Connect(`https://127.0.0.1:${t.server.grpcAddress.port}`, { ca: t.server.ca.current().rootsPem, servername: 'localhost' });
  session.on('error', () => undefined);
});

afterAll(async () => {
  session.close();
  await t.close();
  removeDir(dir);
});

describe('the gRPC port at the wire', () => {
  const garbage = Buffer.from([0xff, 0xff, 0xff, 0xff, 0xff, 0xff]);
  const request = Buffer.from('0a03637372', 'hex'); // IstioCertificateRequest { csr: "csr" }
  it.each([
    { name: 'a request that is not gRPC', headers: { 'content-type': 'text/plain' }, body: [], end: true, http: 415, grpc: undefined },
    {
      name: 'an unknown method',
      headers: { ':path': '/istio.v1.auth.IstioCertificateService/Nope' },
      body: [],
      end: true,
      grpc: status.UNIMPLEMENTED,
    },
    { name: 'a compressed call', headers: { 'grpc-encoding': 'gzip' }, body: [frame(request, 1)], end: true, grpc: status.UNIMPLEMENTED },
    { name: 'a compressed message without grpc-encoding', headers: {}, body: [frame(request, 1)], end: true, grpc: status.INTERNAL },
    {
      name: 'a declared length over the limit (body never sent)',
      headers: {},
      body: [frame(Buffer.alloc(0), 0, 10 << 20)],
      end: false,
      grpc: status.RESOURCE_EXHAUSTED,
    },
    { name: 'two messages in a unary call', headers: {}, body: [frame(request), frame(request)], end: true, grpc: status.INTERNAL },
    {
      name: 'a message cut short',
      headers: {},
      body: [frame(request.subarray(0, 2), 0, request.length)],
      end: true,
      grpc: status.INTERNAL,
    },
    { name: 'no message at all', headers: {}, body: [], end: true, grpc: status.INTERNAL },
    {
      name: 'a malformed grpc-timeout',
      headers: { 'grpc-timeout': '10 seconds' },
      body: [frame(request)],
      end: true,
      grpc: status.INTERNAL,
    },
    { name: 'a message that is not protobuf', headers: {}, body: [frame(garbage)], end: true, grpc: status.INTERNAL },
    {
      name: 'a well-formed call without a token',
      headers: { 'grpc-timeout': '5S' },
      body: [frame(request)],
      end: true,
      grpc: status.UNAUTHENTICATED,
    },
  ])('answers $name with a status, records nothing, and keeps serving', async ({ headers, body, end, grpc, ...expected }) => {
    const before = await countCertificates(t.server);
    const answer = await call(session, headers, body, end);
    expect(answer.httpStatus).toBe('http' in expected ? expected.http : 200);
    expect(answer.grpcStatus).toBe(grpc);
    if (grpc !== undefined) expect(answer.grpcMessage).toBeTruthy();
    if (headers['grpc-encoding']) expect(answer.acceptEncoding).toBe('identity');
    expect([0, -1]).toContain(answer.rstCode); // a complete answer, never a protocol error
    expect(await countCertificates(t.server)).toBe(before);
  });

  it('still serves a real client after all of that', async () => {
    const issuer = await openDevTokenIssuer(join(dir, 'data'));
    const token = await issuer.sign({ namespace: 'wire', serviceAccount: 'after', ttlSeconds: 600 });
    const chain = await t.client().createCertificate({ csrPem: await csrFor('spiffe://cluster.local/ns/wire/sa/after'), token });
    expect(chain.length).toBeGreaterThanOrEqual(2);
  });

  it('--keepalive-time pings the client', async () => {
    const pinged = await new Promise<boolean>((resolve) => {
      session.once('ping', () => resolve(true));
      setTimeout(() => resolve(false), 3000).unref();
    });
    expect(pinged).toBe(true);
  });
});

describe('grpc-message encoding', () => {
  it.each([
    ['plain words', 'plain words'],
    ['100% sure', '100%25 sure'],
    ['line\nbreak', 'line%0Abreak'],
    ['café', 'caf%C3%A9'],
  ])('%j is sent as %j and decodes back', (text, wire) => {
    expect(percentEncoded(text)).toBe(wire);
    expect(decodeURIComponent(percentEncoded(text))).toBe(text);
  });
});
