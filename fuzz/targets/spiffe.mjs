// @ts-check
// Target 3: SPIFFE ID parsing (parseSpiffeId, parseWorkloadId), differential against a regex.
//
// Invariants per case:
//   - only SpiffeIdError is thrown, with a documented code;
//   - parseSpiffeId accepts exactly the IDs the SPIFFE ID spec oracle below accepts (both directions);
//   - an accepted ID round-trips through formatSpiffeId and splits into the oracle's parts;
//   - parseWorkloadId accepts exactly the valid IDs shaped spiffe://<td>/ns/<ns>/sa/<sa>.

import { performance } from 'node:perf_hooks';
import { wrongError } from '../lib/engine.mjs';
import { mutateString, NASTY_CHARS } from '../lib/mutate.mjs';

const CODES = new Set([
  'ERR_SPIFFE_SCHEME',
  'ERR_SPIFFE_TRUST_DOMAIN',
  'ERR_SPIFFE_PATH',
  'ERR_SPIFFE_TOO_LONG',
  'ERR_SPIFFE_NOT_WORKLOAD',
]);

/**
 * The SPIFFE ID spec, written independently of src/spiffe/id.ts: "spiffe://", a trust domain of
 * lowercase [a-z0-9._-] labels (no empty label, so no leading/trailing or double dot), then path
 * segments of [A-Za-z0-9._-] that are neither "." nor "..", no trailing slash; query, fragment,
 * percent-encoding, port and userinfo all fall outside these alphabets. Lengths are checked apart.
 */
export const SPIFFE_ID_ORACLE = /^spiffe:\/\/([a-z0-9_-]+(?:\.[a-z0-9_-]+)*)((?:\/(?!\.\.?(?:\/|$))[A-Za-z0-9._-]+)*)$/;
const WORKLOAD_PATH = /^\/ns\/([^/]+)\/sa\/([^/]+)$/;

function oracle(id) {
  const m = SPIFFE_ID_ORACLE.exec(id);
  if (!m || m[1].length > 255 || Buffer.byteLength(id, 'utf8') > 2048) return undefined;
  return { trustDomain: m[1], path: m[2] };
}

const TD_CHARS = 'abcdefghijklmnopqrstuvwxyz0123456789-_';
const PATH_CHARS = 'ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_.';

function word(rng, alphabet, max, badChance) {
  let out = '';
  for (let n = rng.size(max); n > 0; n--) out += rng.bool(badChance) ? rng.pick(NASTY_CHARS) : alphabet[rng.int(alphabet.length)];
  return out;
}

function grammarId(rng) {
  const bad = rng.pick([0, 0, 0.02, 0.1]);
  const scheme = rng.weighted([
    [85, 'spiffe://'],
    [2, 'SPIFFE://'],
    [2, 'spiffe:/'],
    [2, 'spiffe:'],
    [2, 'https://'],
    [2, ''],
    [2, ' spiffe://'],
    [1, 'spiffe:///'],
    [2, 'spiffe://spiffe://'],
  ]);
  const labels = Array.from({ length: rng.range(1, 4) }, () => word(rng, TD_CHARS, 20, bad));
  if (rng.bool(0.05)) labels[rng.int(labels.length)] = '';
  let td = labels.join('.');
  if (rng.bool(0.04)) td = td.toUpperCase();
  if (rng.bool(0.04)) td += ':' + rng.pick(['8080', '', '0', 'x']);
  if (rng.bool(0.03)) td = 'user@' + td;
  if (rng.bool(0.03)) td = rng.pick(['.', '']) + td + rng.pick(['.', '']);
  const segments = Array.from(
    {
      length: rng.weighted([
        [20, 0],
        [50, 4],
        [20, 2],
        [10, rng.range(1, 40)],
      ]),
    },
    () => (rng.bool(0.05) ? rng.pick(['', '.', '..', '...', '%2e', '%2F', '.hidden', 'a..b']) : word(rng, PATH_CHARS, 24, bad)),
  );
  let id = scheme + td + segments.map((s) => '/' + s).join('');
  if (rng.bool(0.04)) id += '/';
  if (rng.bool(0.04)) id += rng.pick(['?x=1', '#frag', '?', '#', '%20']);
  return id;
}

function boundaryId(rng) {
  const pad = (n, c = 'a') => c.repeat(Math.max(0, n));
  return rng.pick([
    () => `spiffe://${pad(rng.pick([254, 255, 256]))}`,
    () => `spiffe://${pad(rng.pick([126, 127]))}.${pad(127)}/x`,
    () => {
      const prefix = 'spiffe://td/';
      return prefix + pad(rng.pick([2047, 2048, 2049]) - prefix.length);
    },
    () => {
      const prefix = 'spiffe://td/';
      return prefix + pad(2046 - prefix.length) + rng.pick(['é', '😀', 'ab', 'a']);
    },
    () => `spiffe://td/${'a/'.repeat(rng.pick([500, 1023, 1024]))}a`,
    () => `spiffe://${'a.'.repeat(rng.pick([100, 127, 128]))}a`,
    () => `spiffe://td${'/..'.repeat(rng.pick([1, 2, 1000]))}`,
    () => 'spiffe://',
    () => 'spiffe:///',
    () => 'spiffe://td//x',
    () => '',
    () => 'x'.repeat(rng.pick([10_000, 100_000])),
    () => `spiffe://td/${'\u00e9'.repeat(rng.pick([1000, 1025]))}`,
  ])();
}

function workloadish(rng) {
  const ns = rng.pick(['default', 'istio-system', 'a', 'app', 'A', '', 'ns.x', 'ns/x']);
  const sa = rng.pick(['default', 'api', 'bookinfo-productpage', 'sa.name', '', 'x'.repeat(253)]);
  const shape = rng.pick([
    `/ns/${ns}/sa/${sa}`,
    `/ns/${ns}/sa/${sa}/extra`,
    `/ns/${ns}`,
    `/sa/${sa}/ns/${ns}`,
    `/NS/${ns}/sa/${sa}`,
    `/ns/${ns}/sa/${sa}/`,
    `/ns//sa/${sa}`,
  ]);
  return `spiffe://${rng.pick(['cluster.local', 'example.org', 'td'])}${shape}`;
}

export function spiffeTarget(mods, options = {}) {
  const { parseSpiffeId, formatSpiffeId, parseWorkloadId, SpiffeIdError } = mods;

  function generate(rng) {
    const kind = rng.weighted([
      [55, 'grammar'],
      [15, 'mutated'],
      [8, 'random'],
      [10, 'boundary'],
      [12, 'workload'],
    ]);
    let id;
    if (kind === 'grammar') id = grammarId(rng);
    else if (kind === 'mutated') {
      id = grammarId(rng);
      for (let n = rng.range(1, 3); n > 0; n--) id = mutateString(rng, id)[0];
    } else if (kind === 'random')
      id = rng.bool() ? rng.bytes(rng.size(200)).toString('latin1') : 'spiffe://' + rng.bytes(rng.size(64)).toString('latin1');
    else if (kind === 'boundary') id = boundaryId(rng);
    else id = workloadish(rng);
    return { id, kind };
  }

  function execute({ id }) {
    const violations = [];
    const started = performance.now();
    const expected = oracle(id);
    let parsed;
    let error;
    try {
      parsed = parseSpiffeId(id);
    } catch (e) {
      error = e;
    }
    let workload;
    let workloadError;
    try {
      workload = parseWorkloadId(id);
    } catch (e) {
      workloadError = e;
    }
    const ms = performance.now() - started;
    for (const [fn, e] of [
      ['parseSpiffeId', error],
      ['parseWorkloadId', workloadError],
    ]) {
      if (e === undefined) continue;
      if (!(e instanceof SpiffeIdError)) violations.push(wrongError(fn, e, 'SpiffeIdError'));
      else if (!CODES.has(e.code)) violations.push(`${fn}: undocumented code ${e.code}`);
    }
    if (expected && error) violations.push(`rejected a valid SPIFFE ID (${error.code ?? error.name}: ${error.message})`);
    if (!expected && parsed) violations.push('accepted an ID that SPIFFE ID spec forbids');
    if (expected && parsed) {
      if (formatSpiffeId(parsed) !== id) violations.push(`formatSpiffeId does not round-trip: ${JSON.stringify(formatSpiffeId(parsed))}`);
      if (parsed.trustDomain !== expected.trustDomain || parsed.path !== expected.path)
        violations.push(`split into ${JSON.stringify(parsed)}, expected ${JSON.stringify(expected)}`);
    }
    const shape = expected && WORKLOAD_PATH.exec(expected.path);
    if (shape && !workload) violations.push(`parseWorkloadId rejected a workload ID: ${workloadError?.message}`);
    if (!shape && workload) violations.push(`parseWorkloadId accepted a non-workload ID as ${JSON.stringify(workload)}`);
    if (
      shape &&
      workload &&
      (workload.trustDomain !== expected.trustDomain || workload.namespace !== shape[1] || workload.serviceAccount !== shape[2])
    ) {
      violations.push(`parseWorkloadId split it into ${JSON.stringify(workload)}`);
    }
    return { outcome: parsed ? (workload ? 'workload ID' : 'valid ID') : `${error?.code ?? error?.name}`, violations, ms };
  }

  return {
    name: 'spiffe',
    timeBoundMs: options.timeBoundMs ?? 50,
    hangMs: options.hangMs ?? 5000,
    retime: true,
    generate,
    execute,
    describe: (input) => ({
      base64: Buffer.from(input.id, 'utf8').toString('base64'),
      note: `SPIFFE ID string (utf8), ${input.kind}: ${JSON.stringify(input.id.length > 120 ? input.id.slice(0, 120) + '…' : input.id)}`,
    }),
  };
}
