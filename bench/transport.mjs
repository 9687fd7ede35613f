#!/usr/bin/env node
// @ts-check
// What the gRPC transport alone costs the server per CreateCertificate call (`npm run bench:transport`).
//
// Three canned servers answer every call with the same fixed certificate chain: meshca's own
// unary gRPC stream handler (src/grpc/server.ts: limits, read deadline, grpc-timeout, the
// service's codecs) on its own HTTP/2 layer (src/grpc/h2/), @grpc/grpc-js's server (channelz off, 256 streams per
// connection; what meshca served with before), and a bare node:http2 stream handler that speaks
// the same wire (length-prefixed message, grpc-status trailers) and checks nothing. All use TLS with a
// throwaway P-256 certificate. The load is the benchmark's own lean HTTP/2 client
// (bench/lib/grpc-h2.mjs): 8 connections, 32 calls in flight, a 1 KB bearer token and a CSR-sized
// request. The server counts its CPU time (process.cpuUsage: every thread) over the measured calls,
// after a warm-up. With --pin (default when taskset exists) the server runs on CPU 0 and the load
// on the others. Rounds alternate the servers; the median per server is printed.

import { execFileSync, spawn } from 'node:child_process';
import { once } from 'node:events';
import { mkdtempSync, readFileSync, rmSync } from 'node:fs';
import { createSecureServer } from 'node:http2';
import { createServer as createTlsServer } from 'node:tls';
import { availableParallelism, tmpdir } from 'node:os';
import { join } from 'node:path';
import { fileURLToPath } from 'node:url';
import { parseArgs } from 'node:util';
import * as grpc from '@grpc/grpc-js';
import { H2Channel } from './lib/grpc-h2.mjs';
import { pinningPlan } from './lib/server.mjs';

const ROOT = fileURLToPath(new URL('..', import.meta.url));
const SELF = fileURLToPath(import.meta.url);
const METHOD = '/istio.v1.auth.IstioCertificateService/CreateCertificate';
const { values } = parseArgs({
  options: {
    rounds: { type: 'string', default: '3' },
    calls: { type: 'string', default: '20000' },
    warmup: { type: 'string', default: '3000' },
    'no-pin': { type: 'boolean', default: false },
    // Internal roles of the child processes.
    serve: { type: 'string' },
    load: { type: 'boolean', default: false },
    port: { type: 'string', default: '0' },
    dir: { type: 'string', default: '' },
  },
});

/** @param {string} path a module of dist/ (which must be built) */
async function dist(path) {
  try {
    return await import(join(ROOT, 'dist', path));
  } catch {
    process.stderr.write('bench/transport: dist/ is missing; run "npm run build" first\n');
    process.exit(1);
  }
}

/** @returns {Promise<any>} the service definition meshca serves */
async function service() {
  return (await dist('grpc/proto.js')).istioCertificateService().service;
}

/** The servers compared, in the order each round runs them. */
const KINDS = ['meshca', 'grpc-js', 'node:http2'];

/** A leaf, an intermediate and a root of PEM-like size: the response meshca sends. */
const CHAIN = ['A', 'B', 'C'].map((c, i) => `-----BEGIN CERTIFICATE-----\n${c.repeat(i === 0 ? 900 : 800)}\n-----END CERTIFICATE-----\n`);

/** Serves until `calls` measured calls are done, then prints the CPU µs per call and exits. */
async function serve(kind, port, dir, warmup, calls) {
  const definition = await service();
  const key = readFileSync(join(dir, 'key.pem'));
  const cert = readFileSync(join(dir, 'cert.pem'));
  let seen = 0;
  /** @type {NodeJS.CpuUsage | undefined} */
  let started;
  const counted = () => {
    seen++;
    if (seen === warmup) started = process.cpuUsage();
    if (seen !== warmup + calls || !started) return;
    const used = process.cpuUsage(started);
    process.stdout.write(`${JSON.stringify({ kind, usPerCall: (used.user + used.system) / calls })}\n`);
    setTimeout(() => process.exit(0), 100);
  };
  if (kind === 'meshca') {
    const { unaryStreamHandler, h2Limits } = await dist('grpc/server.js');
    const { unaryMethods } = await dist('grpc/unary.js');
    const { H2Connection } = await dist('grpc/h2/connection.js');
    const CreateCertificate = async (/** @type {any} */ call) => {
      void call.metadata.get('authorization');
      counted();
      return { cert_chain: CHAIN };
    };
    const limits = { maxMessageBytes: 64 * 1024, maxResponseBytes: 1024 * 1024, requestReadTimeoutMs: 10_000 };
    const events = { onReadTimeout: () => undefined, onInternalError: (/** @type {unknown} */ e) => console.error(e) };
    const onStream = unaryStreamHandler(unaryMethods(definition, { CreateCertificate }), limits, events);
    const h2 = h2Limits({ ...limits, maxConcurrentStreams: 256 });
    const server = createTlsServer({ key, cert, ALPNProtocols: ['h2'] }, (socket) => new H2Connection(socket, h2, onStream));
    server.listen(Number(port), '127.0.0.1');
    await once(server, 'listening');
  } else if (kind === 'grpc-js') {
    const server = new grpc.Server({ 'grpc.max_concurrent_streams': 256, 'grpc.enable_channelz': 0 });
    server.addService(definition, {
      CreateCertificate: (/** @type {any} */ call, /** @type {any} */ callback) => {
        void call.metadata.get('authorization');
        counted();
        callback(null, { cert_chain: CHAIN });
      },
    });
    const credentials = grpc.ServerCredentials.createSsl(null, [{ private_key: key, cert_chain: cert }]);
    await new Promise((resolve, reject) => server.bindAsync(`127.0.0.1:${port}`, credentials, (e) => (e ? reject(e) : resolve(0))));
  } else {
    const message = definition.CreateCertificate.responseSerialize({ cert_chain: CHAIN });
    const frame = Buffer.alloc(5 + message.length);
    frame.writeUInt32BE(message.length, 1);
    message.copy(frame, 5);
    const server = createSecureServer({ key, cert, settings: { maxConcurrentStreams: 256 } });
    server.on('stream', (stream, headers) => {
      void headers.authorization;
      /** @type {Buffer[]} */
      const chunks = [];
      stream.on('data', (/** @type {Buffer} */ chunk) => chunks.push(chunk));
      stream.on('end', () => {
        definition.CreateCertificate.requestDeserialize(Buffer.concat(chunks).subarray(5));
        counted();
        stream.respond({ ':status': 200, 'content-type': 'application/grpc' }, { waitForTrailers: true });
        stream.on('wantTrailers', () => stream.sendTrailers({ 'grpc-status': '0' }));
        stream.end(frame);
      });
    });
    server.listen(Number(port), '127.0.0.1');
    await once(server, 'listening');
  }
  process.stdout.write('ready\n');
}

/** 32 closed-loop callers over 8 connections until `total` calls are done. */
async function load(port, dir, total) {
  const definition = await service();
  const ca = readFileSync(join(dir, 'cert.pem'), 'utf8');
  const channels = await Promise.all(Array.from({ length: 8 }, () => H2Channel.open(`127.0.0.1:${port}`, ca)));
  const token = `eyJhbGciOiJSUzI1NiJ9.${'x'.repeat(700)}.${'s'.repeat(342)}`;
  const request = definition.CreateCertificate.requestSerialize({
    csr: `-----BEGIN CERTIFICATE REQUEST-----\n${'M'.repeat(360)}\n-----END CERTIFICATE REQUEST-----\n`,
    validity_duration: 3600,
  });
  let sent = 0;
  const caller = async (/** @type {number} */ i) => {
    while (sent++ < total)
      await channels[i % 8].unary(METHOD, request, { authorization: `Bearer ${token}`, clusterid: 'Kubernetes' }, 10_000);
  };
  await Promise.all(Array.from({ length: 32 }, (_, i) => caller(i)));
  for (const channel of channels) channel.close();
}

/** Runs `node bench/transport.mjs ...args`, under taskset when `cpus` is given. */
function child(args, cpus) {
  const [command, argv] = cpus ? ['taskset', ['-c', cpus, process.execPath, SELF, ...args]] : [process.execPath, [SELF, ...args]];
  return spawn(command, argv, { cwd: ROOT, stdio: ['ignore', 'pipe', 'inherit'] });
}

/** One round: start the server, wait for "ready", drive it, read its figure. */
async function round(kind, dir, plan, warmup, calls) {
  const port = String(47000 + Math.floor(Math.random() * 2000));
  const server = child(['--serve', kind, '--port', port, '--dir', dir, '--warmup', String(warmup), '--calls', String(calls)], plan?.server);
  let output = '';
  server.stdout.on('data', (chunk) => (output += chunk));
  while (!output.includes('ready')) {
    if (server.exitCode !== null) throw new Error(`the ${kind} server exited`);
    await new Promise((resolve) => setTimeout(resolve, 50));
  }
  const loader = child(['--load', '--port', port, '--dir', dir, '--calls', String(warmup + calls + 500)], plan?.load);
  loader.stdout.resume();
  // A call the client refuses (a bad status or frame) ends the load early: stop the round, do not wait.
  loader.on('exit', (code) => code && server.kill());
  await once(server, 'exit');
  loader.kill();
  const line = output.split('\n').find((l) => l.startsWith('{'));
  if (!line) throw new Error(`the ${kind} server reported nothing (did the load generator fail? its error is above)`);
  return JSON.parse(line).usPerCall;
}

async function main() {
  const rounds = Number(values.rounds);
  const [warmup, calls] = [Number(values.warmup), Number(values.calls)];
  const plan = values['no-pin'] ? undefined : pinningPlan(availableParallelism());
  const pinned = plan && 'server' in plan ? plan : undefined;
  if (plan && !pinned && 'unavailable' in plan) process.stderr.write(`bench/transport: not pinned: ${plan.unavailable}\n`);
  const dir = mkdtempSync(join(tmpdir(), 'meshca-transport-'));
  try {
    const selfSigned = 'req -x509 -newkey ec -pkeyopt ec_paramgen_curve:P-256 -nodes -days 1 -subj /CN=localhost';
    const files = ['-addext', 'subjectAltName=DNS:localhost', '-keyout', join(dir, 'key.pem'), '-out', join(dir, 'cert.pem')];
    execFileSync('openssl', [...selfSigned.split(' '), ...files], { stdio: 'ignore' });
    /** @type {Record<string, number[]>} */
    const results = Object.fromEntries(KINDS.map((kind) => [kind, /** @type {number[]} */ ([])]));
    for (let r = 1; r <= rounds; r++) {
      for (const kind of KINDS) {
        const us = await round(kind, dir, pinned, warmup, calls);
        results[kind].push(us);
        process.stdout.write(`round ${r}: ${kind.padEnd(14)} ${us.toFixed(1)} µs of server CPU per call\n`);
      }
    }
    const median = (/** @type {number[]} */ xs) => [...xs].sort((a, b) => a - b)[Math.floor(xs.length / 2)] ?? NaN;
    process.stdout.write(
      `\nmedian of ${rounds} rounds, ${calls} calls each${pinned ? ` (server on CPU ${pinned.server}, load on ${pinned.load})` : ''}:\n`,
    );
    for (const [kind, xs] of Object.entries(results)) process.stdout.write(`  ${kind.padEnd(14)} ${median(xs).toFixed(1)} µs per call\n`);
  } finally {
    rmSync(dir, { recursive: true, force: true });
  }
}

if (values.serve) await serve(values.serve, values.port, values.dir, Number(values.warmup), Number(values.calls));
else if (values.load) await load(values.port, values.dir, Number(values.calls));
else await main();
