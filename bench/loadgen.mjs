// @ts-check
// A load-generator process (forked by bench/run.mjs; never the server's or the orchestrator's event
// loop). It speaks Istio's CreateCertificate over TLS, with the request and metadata of
// dist/client/ca-client.js, on a few connections of its own (through bench/lib/grpc-h2.mjs, or
// grpc-js's client with --client grpc-js), and reports every request's latency back over IPC.
//
// Protocol (parent → child): init, prepare, go, close. Child → parent: ready, prepared, result, fatal.
// Work items: item j uses token j of `tokenFile` and the CSR of identity j % identities from
// `csrFile`; this process takes the items with j % parts === part.

import { createHash } from 'node:crypto';
import { readFileSync, statSync } from 'node:fs';
import { Agent, request as httpRequest } from 'node:http';
import grpc from '@grpc/grpc-js';
import { istioCertificateService } from '../dist/grpc/proto.js';
import { H2Channel } from './lib/grpc-h2.mjs';

const CODE_NAMES = new Map(Object.entries(grpc.status).map(([name, code]) => [code, name]));

/** @type {{ part: number, parts: number }} */
const me = { part: Number(process.env.LOADGEN_PART ?? 0), parts: Number(process.env.LOADGEN_PARTS ?? 1) };
/** @type {any[]} grpc-js stubs (--client grpc-js) */
let stubs = [];
/** @type {H2Channel[]} */
let channels = [];
const CREATE_CERTIFICATE = '/istio.v1.auth.IstioCertificateService/CreateCertificate';
/** @type {Map<string, { mtimeMs: number, items: string[] }>} */
const files = new Map();
/** @type {{ id: string, run: (go: { startAt: number }) => Promise<object> } | undefined} */
let prepared;

const send = (/** @type {object} */ message) => process.send?.(message);
const now = () => performance.timeOrigin + performance.now(); // epoch ms, sub-ms precision, comparable across processes

process.on('disconnect', () => process.exit(0)); // the orchestrator is gone: so are we
process.on('message', (/** @type {any} */ message) => {
  handle(message).catch((error) => send({ type: 'fatal', error: error?.stack ?? String(error) }));
});

/** @param {any} message */
async function handle(message) {
  switch (message.type) {
    case 'init':
      await connect(message.grpcAddress, message.rootsPem, message.channels, message.client ?? 'h2');
      send({ type: 'ready' });
      break;
    case 'prepare':
      prepared = { id: message.id, run: message.kind === 'burst' ? burst(message) : closedLoop(message) };
      send({ type: 'prepared', id: message.id });
      break;
    case 'go': {
      const run = prepared && prepared.id === message.id ? prepared.run : undefined;
      if (!run) throw new Error(`go for ${message.id} but prepared ${prepared?.id}`);
      const result = await run(message);
      prepared = undefined;
      send({ type: 'result', id: message.id, ...result });
      break;
    }
    case 'close':
      closeAll();
      process.disconnect();
      break;
    default:
      throw new Error(`unknown message ${message.type}`);
  }
}

function closeAll() {
  for (const stub of stubs) stub.close();
  for (const channel of channels) channel.close();
  stubs = [];
  channels = [];
}

/**
 * Opens `count` TLS connections and waits until all are connected: H2Channels, or grpc-js
 * channels (each its own HTTP/2 connection: grpc-js would otherwise share one subchannel between
 * channels with equal options).
 * @param {string} address @param {string} rootsPem @param {number} count @param {'h2' | 'grpc-js'} client
 */
async function connect(address, rootsPem, count, client) {
  closeAll();
  if (client === 'h2') {
    channels = await Promise.all(Array.from({ length: count }, () => H2Channel.open(address, rootsPem)));
    return;
  }
  const Ctor = istioCertificateService();
  const credentials = grpc.credentials.createSsl(Buffer.from(rootsPem));
  const options = {
    'grpc.ssl_target_name_override': 'localhost',
    'grpc.default_authority': 'localhost',
    'grpc.use_local_subchannel_pool': 1,
  };
  stubs = Array.from({ length: count }, () => new Ctor(address, credentials, options));
  await Promise.all(
    stubs.map(
      (stub) =>
        new Promise((resolve, reject) =>
          stub.waitForReady(Date.now() + 15_000, (/** @type {Error | undefined} */ e) => (e ? reject(e) : resolve(undefined))),
        ),
    ),
  );
}

/**
 * @typedef {object} Work
 * @property {string} csrFile
 * @property {string} tokenFile (unused by cfssl runs)
 * @property {number} identities
 * @property {number} count items available (tokens 0..count-1)
 */

/** @param {Work} work @returns {{ csr: string, token: string }[]} this process's share of the items */
function loadItems(work) {
  const csrs = readItems(work.csrFile);
  const tokens = readItems(work.tokenFile);
  if (tokens.length < work.count || csrs.length < Math.min(work.identities, work.count))
    throw new Error(`material files hold too few items for ${JSON.stringify(work)}`);
  const items = [];
  for (let j = me.part; j < work.count; j += me.parts) items.push({ csr: csrs[j % work.identities], token: tokens[j] });
  return items;
}

/** @param {string} path */
function readItems(path) {
  const { mtimeMs } = statSync(path);
  const cached = files.get(path);
  if (cached?.mtimeMs === mtimeMs) return cached.items;
  const items = JSON.parse(readFileSync(path, 'utf8')).items;
  files.set(path, { mtimeMs, items });
  return items;
}

/**
 * One CreateCertificate call on connection `k`, shaped like CaClient.createCertificate.
 * @param {number} k @param {{ csr: string, token: string }} item @param {number} deadlineMs
 * @returns {Promise<string[]>}
 */
function call(k, item, deadlineMs) {
  const request = { csr: item.csr, validity_duration: 0, metadata: null };
  if (channels.length > 0) {
    const { requestSerialize, responseDeserialize } = istioCertificateService().service.CreateCertificate;
    const metadata = { authorization: `Bearer ${item.token}`, clusterid: 'Kubernetes' };
    return channels[k % channels.length]
      .unary(CREATE_CERTIFICATE, requestSerialize(request), metadata, deadlineMs)
      .then((bytes) => /** @type {{ cert_chain?: string[] }} */ (responseDeserialize(bytes)).cert_chain ?? []);
  }
  const metadata = new grpc.Metadata();
  metadata.set('authorization', `Bearer ${item.token}`);
  metadata.set('clusterid', 'Kubernetes');
  return new Promise((resolve, reject) =>
    stubs[k % stubs.length].CreateCertificate(
      request,
      metadata,
      { deadline: Date.now() + deadlineMs },
      (/** @type {any} */ error, /** @type {any} */ response) => (error ? reject(error) : resolve(response?.cert_chain ?? [])),
    ),
  );
}

/**
 * cfssl's JSON sign API over keep-alive HTTP/1.1, one connection per caller; the answer is turned
 * into a chain-like array (certificate, CA) so the Recorder checks it like a gRPC response.
 * @param {string} url @param {number} concurrency
 */
function cfsslSender(url, concurrency) {
  const agent = new Agent({ keepAlive: true, maxSockets: Math.max(1, concurrency) });
  return (/** @type {number} */ _w, /** @type {{ csr: string }} */ item, /** @type {number} */ deadlineMs) =>
    new Promise((resolve, reject) => {
      const body = JSON.stringify({ certificate_request: item.csr });
      const req = httpRequest(
        url,
        {
          method: 'POST',
          agent,
          timeout: deadlineMs,
          headers: { 'content-type': 'application/json', 'content-length': Buffer.byteLength(body) },
        },
        (res) => {
          const chunks = /** @type {Buffer[]} */ ([]);
          res.on('data', (c) => chunks.push(c));
          res.on('end', () => {
            let json;
            try {
              json = JSON.parse(Buffer.concat(chunks).toString('utf8'));
            } catch {
              return reject({ code: `HTTP_${res.statusCode}`, message: 'not JSON' });
            }
            if (json.success && typeof json.result?.certificate === 'string') resolve([json.result.certificate, 'ca']);
            else reject({ code: `HTTP_${res.statusCode}`, message: JSON.stringify(json.errors ?? json).slice(0, 300) });
          });
        },
      );
      req.on('timeout', () => req.destroy(Object.assign(new Error('deadline exceeded'), { code: 'DEADLINE_EXCEEDED' })));
      req.on('error', reject);
      req.end(body);
    });
}

/** Latencies and errors of one run. */
class Recorder {
  constructor() {
    /** @type {number[]} */
    this.latencies = [];
    /** @type {Record<string, number>} */
    this.errors = {};
    /** @type {Record<string, string>} first message per error code */
    this.errorSamples = {};
    /** @type {Map<string, string>} chain[1] PEM → intermediate fingerprint */
    this.fingerprints = new Map();
    /** @type {Record<string, number>} responses per issuing intermediate (sha256 fingerprint) */
    this.intermediates = {};
    /** @type {Record<string, number>} responses per number of roots in the last chain element */
    this.rootsInBundle = {};
    this.firstStart = Infinity;
    this.lastStart = -Infinity;
    this.lastEnd = -Infinity;
  }

  /** @param {number} started @param {string[]} chain @param {boolean} inspect */
  ok(started, chain, inspect) {
    const ended = now();
    this.lastEnd = Math.max(this.lastEnd, ended);
    if (chain.length < 2 || !chain[0].startsWith('-----BEGIN CERTIFICATE-----')) {
      this.fail({ code: 'BAD_RESPONSE', message: `cert_chain has ${chain.length} elements` });
      return;
    }
    this.latencies.push(ended - started);
    if (inspect) {
      let fp = this.fingerprints.get(chain[1]);
      if (!fp) {
        fp = createHash('sha256')
          .update(Buffer.from(chain[1].replace(/-----[^-]+-----|\s/g, ''), 'base64'))
          .digest('hex');
        this.fingerprints.set(chain[1], fp);
      }
      this.intermediates[fp] = (this.intermediates[fp] ?? 0) + 1;
      const roots = chain[chain.length - 1].split('-----BEGIN CERTIFICATE-----').length - 1;
      this.rootsInBundle[roots] = (this.rootsInBundle[roots] ?? 0) + 1;
    }
  }

  /** @param {any} error */
  fail(error) {
    this.lastEnd = Math.max(this.lastEnd, now());
    const code =
      typeof error?.code === 'number'
        ? (CODE_NAMES.get(error.code) ?? String(error.code))
        : typeof error?.code === 'string'
          ? error.code
          : 'CLIENT_ERROR';
    this.errors[code] = (this.errors[code] ?? 0) + 1;
    this.errorSamples[code] ??= String(error?.details ?? error?.message ?? error).slice(0, 300);
  }

  /** @param {number} started */
  started(started) {
    this.firstStart = Math.min(this.firstStart, started);
    this.lastStart = Math.max(this.lastStart, started);
  }

  result() {
    const latencies = Float64Array.from(this.latencies);
    return {
      latencies,
      errors: this.errors,
      errorSamples: this.errorSamples,
      intermediates: this.intermediates,
      rootsInBundle: this.rootsInBundle,
      firstStart: this.firstStart,
      lastStart: this.lastStart,
      lastEnd: this.lastEnd,
    };
  }
}

/**
 * Closed loop: `concurrency` callers, each sending its next request as soon as the previous one is
 * answered, until `durationMs` has passed (warm: items cycle) or the items run out (cold: each once).
 * With `cfsslUrl`, the same loop posts each item's CSR to cfssl's /api/v1/cfssl/sign instead.
 * @param {{ concurrency: number, durationMs: number, deadlineMs: number, cycle: boolean, work: Work, cfsslUrl?: string }} spec
 */
function closedLoop(spec) {
  const items = loadItems(spec.work);
  const send = spec.cfsslUrl ? cfsslSender(spec.cfsslUrl, spec.concurrency) : call;
  return async () => {
    const rec = new Recorder();
    if (spec.concurrency === 0 || items.length === 0) return rec.result();
    const start = now();
    const end = start + spec.durationMs;
    let next = Math.floor(Math.random() * items.length); // the other process starts elsewhere in the set too
    let used = 0;
    let exhausted = false;
    const caller = async (/** @type {number} */ w) => {
      while (now() < end) {
        if (!spec.cycle && used >= items.length) {
          exhausted = true;
          return;
        }
        const item = items[next];
        next = (next + 1) % items.length;
        used++;
        const t0 = now();
        rec.started(t0);
        try {
          rec.ok(t0, await send(w, item, spec.deadlineMs), false);
        } catch (error) {
          rec.fail(error);
        }
      }
    };
    await Promise.all(Array.from({ length: spec.concurrency }, (_, w) => caller(w)));
    return { ...rec.result(), start, exhausted };
  };
}

/**
 * Open loop: item j of `total` starts at `start + j / total × windowMs`, whatever the server's
 * latency; every response is inspected (issuing intermediate, number of roots).
 * All processes share the window's start, `startAt` of the go message (epoch ms).
 * @param {{ windowMs: number, deadlineMs: number, work: Work }} spec
 */
function burst(spec) {
  const items = loadItems(spec.work);
  const total = spec.work.count;
  return async (/** @type {{ startAt: number }} */ go) => {
    const rec = new Recorder();
    const start = go.startAt;
    const pending = [];
    let k = 0;
    while (k < items.length) {
      const j = me.part + k * me.parts; // global index of this process's k-th item
      const due = start + (j / total) * spec.windowMs;
      const wait = due - now();
      if (wait > 1) {
        await new Promise((r) => setTimeout(r, Math.min(wait, 5)));
        continue;
      }
      const item = items[k];
      const connection = k;
      k++;
      const t0 = now();
      rec.started(t0);
      pending.push(
        call(connection, item, spec.deadlineMs).then(
          (chain) => rec.ok(t0, chain, true),
          (error) => rec.fail(error),
        ),
      );
    }
    await Promise.all(pending);
    return { ...rec.result(), start };
  };
}
