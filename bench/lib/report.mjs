// @ts-check
// Result rendering: the summary line, the Markdown tables and the SVG chart (hand-written, no dependency).

/**
 * @typedef {object} ScenarioResult
 * @property {string} name
 * @property {string} description
 * @property {number} [concurrency]
 * @property {number} requests
 * @property {number} ok
 * @property {Record<string, number>} errors
 * @property {Record<string, string>} errorSamples
 * @property {number} wallSeconds
 * @property {number} throughput certificates/s
 * @property {{ p50: number, p90: number, p99: number, max: number, mean: number }} latencyMs
 * @property {number} serverCpuPercent
 * @property {number} loadgenCpuPercent
 * @property {number} [otherCpuPercent] everything else on the machine during the window
 * @property {number} serverPeakRssMb
 * @property {number} serverCpuMsPerCert server CPU (every thread) per successful certificate
 * @property {number} serverMainThreadCpuMsPerCert the server's main thread (event loop) only
 * @property {number} certsPerCore certificates per second of server CPU time
 * @property {{ tid: number, cpuMsPerCert: number }[]} [serverThreads] busiest server threads
 * @property {{ rowsPerCommit?: number, commitMs?: number, issuanceMs?: number }} server
 * @property {string[]} notes
 * @property {Record<string, unknown>} [details]
 */

/** @param {unknown} pinned the run's settings.pinned @param {number} cpus */
const pinning = (pinned, cpus) =>
  pinned && typeof pinned === 'object'
    ? `Pinned with taskset: the server (all threads) on CPU ${/** @type {any} */ (pinned).serverCpus}, the load generators and the orchestrator on CPU ${/** @type {any} */ (pinned).loadCpus}.`
    : pinned
      ? '--pin was requested but taskset was unavailable: server and load generators shared the cores.'
      : `Server and load generators share the machine's ${cpus} cores.`;

const fmt = (/** @type {number} */ v, digits = 1) => (Number.isFinite(v) ? v.toFixed(digits) : '–');
const int = (/** @type {number} */ v) => (Number.isFinite(v) ? Math.round(v).toLocaleString('en-US') : '–');
const errorText = (/** @type {Record<string, number>} */ errors) => {
  const entries = Object.entries(errors).filter(([, n]) => n > 0);
  return entries.length === 0 ? '0' : entries.map(([code, n]) => `${n} ${code}`).join(', ');
};

/** @param {ScenarioResult} r */
export function summaryLine(r) {
  return (
    `${r.name.padEnd(16)} ${int(r.throughput).padStart(6)} cert/s  ` +
    `p50 ${fmt(r.latencyMs.p50).padStart(6)}  p90 ${fmt(r.latencyMs.p90).padStart(6)}  p99 ${fmt(r.latencyMs.p99).padStart(7)}  max ${fmt(r.latencyMs.max).padStart(7)} ms  ` +
    `errors ${errorText(r.errors)}  server CPU ${fmt(r.serverCpuPercent, 0)}% = ${fmt(r.serverCpuMsPerCert, 3)} ms/cert (main ${fmt(r.serverMainThreadCpuMsPerCert, 3)}), ${int(r.certsPerCore)} cert/s per core  loadgen ${fmt(r.loadgenCpuPercent, 0)}%  other ${fmt(r.otherCpuPercent ?? NaN, 0)}%  peak RSS ${fmt(r.serverPeakRssMb, 0)} MB` +
    (r.notes.length ? `\n${' '.repeat(17)}${r.notes.join('; ')}` : '')
  );
}

/**
 * @param {{ date: string, quick: boolean, machine: Record<string, unknown>, settings: Record<string, unknown>, scenarios: ScenarioResult[] }} run
 */
export function markdownTable(run) {
  const lines = [
    '| Scenario | cert/s | p50 ms | p90 ms | p99 ms | max ms | errors | server CPU | CPU ms/cert (main thread) | cert/s per core | loadgen CPU | other CPU | server peak RSS |',
    '|---|--:|--:|--:|--:|--:|---|--:|--:|--:|--:|--:|--:|',
  ];
  for (const r of run.scenarios) {
    lines.push(
      `| ${r.name} | ${int(r.throughput)} | ${fmt(r.latencyMs.p50)} | ${fmt(r.latencyMs.p90)} | ${fmt(r.latencyMs.p99)} | ${fmt(r.latencyMs.max)} | ${errorText(r.errors)} | ${fmt(r.serverCpuPercent, 0)} % | ${fmt(r.serverCpuMsPerCert, 3)} (${fmt(r.serverMainThreadCpuMsPerCert, 3)}) | ${int(r.certsPerCore)} | ${fmt(r.loadgenCpuPercent, 0)} % | ${fmt(r.otherCpuPercent ?? NaN, 0)} % | ${fmt(r.serverPeakRssMb, 0)} MB |`,
    );
  }
  return lines.join('\n');
}

/** @typedef {{ cpuMsPerCert: number, mainThreadCpuMsPerCert: number, throughput: number, p99Ms: number }} PairSide */

/** @param {{ date: string, quick: boolean, machine: Record<string, any>, settings: Record<string, any>, scenarios: ScenarioResult[], cfssl?: Record<string, any>, cfsslPair?: Record<string, any>, ab?: { a: string, b: string, medianRatio: number, windows: { a: PairSide, b: PairSide, ratio: number }[] }, stages?: { server: string, scenario: string, certificates: number, cpuMsPerCert: number, mainThreadCpuMsPerCert: number, rows: { stage: string, thread: string, usPerCert: number }[] }[] }} run */
export function markdownReport(run) {
  const m = run.machine;
  const s = run.settings;
  const internals = run.scenarios.filter((r) => r.server.rowsPerCommit !== undefined || r.server.issuanceMs !== undefined);
  const out = [
    `# meshca benchmark, ${run.date}${run.quick ? ' (quick)' : ''}`,
    '',
    ...(s.profiled
      ? ['**Profiled run** (`--profile`): the server ran under `node --cpu-prof`, so these numbers include profiler overhead.', '']
      : []),
    `${m.cpus} × ${m.cpuModel}, ${m.memoryGb} GB RAM, Node ${m.node}, Linux ${m.kernel}; commit ${m.commit}${m.dirty ? ' (with uncommitted changes)' : ''}; ${m.busyBeforeStartPercent} % of a core busy just before the start (load average ${m.loadAverageAtStart?.join(' ')}); 4 KiB write + fdatasync on the data disk: p50 ${m.fsync4k?.p50Ms} ms, p99 ${m.fsync4k?.p99Ms} ms.`,
    `Server: \`meshca serve\` with TLS gRPC, JWKS (RS256) token validation, SQLite in ${s.dataFs}, default durability, CA key ${s.caKeyType}, log level ${s.serverLogLevel}.`,
    `Load: ${s.loadgens} load-generator processes × ${s.channels} TLS connections each; ${s.workloads} workloads; ${s.durationS} s per steady scenario. ${pinning(s.pinned, m.cpus)}`,
    '',
    ...(run.scenarios.length ? [markdownTable(run), ''] : []),
    ...run.scenarios.flatMap((r) => (r.notes.length ? [`- **${r.name}**: ${r.notes.join('; ')}.`] : [])),
  ];
  if (internals.length) {
    out.push(
      '',
      'Server-side (from its /metrics, averaged over each scenario):',
      '',
      '| Scenario | rows per commit | commit ms | issuance ms (server) |',
      '|---|--:|--:|--:|',
    );
    for (const r of internals)
      out.push(
        `| ${r.name} | ${fmt(r.server.rowsPerCommit ?? NaN)} | ${fmt(r.server.commitMs ?? NaN, 2)} | ${fmt(r.server.issuanceMs ?? NaN, 2)} |`,
      );
  }
  if (run.cfssl?.skipped) out.push('', `cfssl comparison: ${run.cfssl.skipped}.`);
  if (run.cfsslPair?.skipped) out.push('', `cfssl-pair-c32: ${run.cfsslPair.skipped}.`);
  else if (run.cfsslPair)
    out.push(
      '',
      `meshca and cfssl at the same time (cfssl-pair-c32): A = meshca, B = ${run.cfsslPair.b}, serving c32 on the same CPUs, each from its own load generators, measured in the same windows. **meshca serves ${fmt(run.cfsslPair.medianRatio, 2)}× cfssl's certificates per second of server CPU** (B/A, median of ${run.cfsslPair.windows.length} windows); ${run.cfsslPair.cfsslRecorded} of cfssl's ${run.cfsslPair.cfsslServed} measured certificates were found in its certdb. Latency and throughput are of two servers sharing the CPUs, not comparable with solo runs.`,
      ...pairTable(run.cfsslPair.windows),
    );
  if (run.ab)
    out.push(
      '',
      `Paired A/B (ab-c32): A = \`${run.ab.a}\`, B = \`${run.ab.b}\`, serving c32 at the same time on the same CPUs, each from its own load generators. **B costs ${fmt(run.ab.medianRatio, 3)}× A's server CPU per certificate** (median of ${run.ab.windows.length} windows). Latency and throughput are of two servers sharing the CPUs, not comparable with solo runs.`,
      ...pairTable(run.ab.windows),
    );
  for (const st of run.stages ?? []) {
    out.push(
      '',
      `Per-stage breakdown of ${st.scenario} from the ${st.server} server's CPU profile (profiled busy time in the measured window, with profiler overhead; ${st.certificates} certificates). Measured CPU per certificate in that window: ${fmt(1000 * st.mainThreadCpuMsPerCert, 0)} µs main thread, ${fmt(1000 * st.cpuMsPerCert, 0)} µs all threads. Worker busy time includes the writer thread's fsync waits; libuv's pool and V8's helper threads have no JS profile.`,
      '',
      '| Stage | thread | µs per certificate |',
      '|---|---|--:|',
    );
    for (const row of st.rows.filter((x) => x.usPerCert >= 0.5)) out.push(`| ${row.stage} | ${row.thread} | ${fmt(row.usPerCert)} |`);
  }
  const samples = run.scenarios.flatMap((r) => Object.entries(r.errorSamples).map(([code, msg]) => `- ${r.name}: ${code}: ${msg}`));
  if (samples.length) out.push('', 'First error message per code:', '', ...samples);
  return out.join('\n') + '\n';
}

/**
 * Throughput (bars) and p99 latency (line) against concurrency for the steady-cN scenarios.
 * @param {{ date: string, quick: boolean, scenarios: ScenarioResult[] }} run
 * @param {{ throughputGoal?: number, p99GoalMs?: number }} [goals]
 */
export function svgChart(run, goals = {}) {
  const points = run.scenarios
    .filter((r) => /^steady-c\d+$/.test(r.name))
    .map((r) => ({ c: Number(r.name.slice(8)), tput: r.throughput, p99: r.latencyMs.p99 }))
    .sort((a, b) => a.c - b.c);
  const W = 800;
  const H = 320;
  const panel = { w: 300, h: 200, top: 60 };
  const left = { x: 70 };
  const right = { x: 70 + 300 + 90 };
  const r1 = (/** @type {number} */ v) => Math.round(v * 10) / 10;
  const esc = (/** @type {string} */ t) => t.replace(/&/g, '&amp;').replace(/</g, '&lt;');
  /** @type {string[]} */
  const el = [];
  el.push(
    `<svg xmlns="http://www.w3.org/2000/svg" width="${W}" height="${H}" viewBox="0 0 ${W} ${H}" font-family="system-ui, -apple-system, sans-serif" font-size="12">`,
  );
  el.push(`<rect width="${W}" height="${H}" fill="#fff"/>`);
  el.push(
    `<text x="${W / 2}" y="24" text-anchor="middle" font-size="15" font-weight="600">meshca CreateCertificate, ECDSA P-256, ${esc(run.date)}${run.quick ? ' (quick)' : ''}</text>`,
  );
  if (points.length === 0) {
    el.push(`<text x="${W / 2}" y="${H / 2}" text-anchor="middle">no steady-cN scenarios in this run</text></svg>`);
    return el.join('\n') + '\n';
  }
  const xs = (/** @type {number} */ i, /** @type {number} */ x0) => r1(x0 + ((i + 0.5) * panel.w) / points.length);
  const y = (/** @type {number} */ v, /** @type {number} */ max) => r1(panel.top + panel.h - (v / max) * panel.h);

  /** @param {number} x0 @param {number} max @param {string} title @param {string} color */
  const axes = (x0, max, title, color) => {
    el.push(
      `<text x="${x0 + panel.w / 2}" y="${panel.top - 14}" text-anchor="middle" font-weight="600" fill="${color}">${esc(title)}</text>`,
    );
    for (let k = 0; k <= 4; k++) {
      const v = (max * k) / 4;
      const yy = y(v, max);
      el.push(`<line x1="${x0}" y1="${yy}" x2="${x0 + panel.w}" y2="${yy}" stroke="#e5e5e5"/>`);
      el.push(
        `<text x="${x0 - 6}" y="${yy + 4}" text-anchor="end" fill="#555">${v >= 1000 ? `${(v / 1000).toLocaleString('en-US')}k` : v.toLocaleString('en-US')}</text>`,
      );
    }
    el.push(`<line x1="${x0}" y1="${panel.top + panel.h}" x2="${x0 + panel.w}" y2="${panel.top + panel.h}" stroke="#333"/>`);
    points.forEach((p, i) => el.push(`<text x="${xs(i, x0)}" y="${panel.top + panel.h + 18}" text-anchor="middle">${p.c}</text>`));
    el.push(
      `<text x="${x0 + panel.w / 2}" y="${panel.top + panel.h + 38}" text-anchor="middle" fill="#555">concurrency (in-flight requests)</text>`,
    );
  };
  /** @param {number} x0 @param {number} max @param {number} goal @param {string} label */
  const goalLine = (x0, max, goal, label) => {
    if (!(goal > 0) || goal > max) return;
    const yy = y(goal, max);
    el.push(`<line x1="${x0}" y1="${yy}" x2="${x0 + panel.w}" y2="${yy}" stroke="#c0392b" stroke-dasharray="5 4"/>`);
    el.push(`<text x="${x0 + panel.w - 4}" y="${yy - 5}" text-anchor="end" fill="#c0392b" font-size="11">${esc(label)}</text>`);
  };

  const tMax = niceCeil(Math.max(...points.map((p) => p.tput), goals.throughputGoal ?? 0) * 1.1);
  axes(left.x, tMax, 'certificates / s', '#1f6feb');
  const bw = (panel.w / points.length) * 0.55;
  points.forEach((p, i) => {
    const top = y(p.tput, tMax);
    el.push(
      `<rect x="${r1(xs(i, left.x) - bw / 2)}" y="${top}" width="${r1(bw)}" height="${r1(panel.top + panel.h - top)}" fill="#1f6feb" opacity="0.85"/>`,
    );
    el.push(
      `<text x="${xs(i, left.x)}" y="${top - 5}" text-anchor="middle" font-size="11">${Math.round(p.tput).toLocaleString('en-US')}</text>`,
    );
  });
  goalLine(left.x, tMax, goals.throughputGoal ?? 0, `goal ${goals.throughputGoal?.toLocaleString('en-US')}/s at c32`);

  const lMax = niceCeil(Math.max(...points.map((p) => p.p99), goals.p99GoalMs ?? 0) * 1.15);
  axes(right.x, lMax, 'p99 latency (ms)', '#d35400');
  goalLine(right.x, lMax, goals.p99GoalMs ?? 0, `goal p99 ≤ ${goals.p99GoalMs} ms at c32`);
  const path = points.map((p, i) => `${i === 0 ? 'M' : 'L'}${xs(i, right.x)},${y(p.p99, lMax)}`).join(' ');
  el.push(`<path d="${path}" fill="none" stroke="#d35400" stroke-width="2.5"/>`);
  points.forEach((p, i) => {
    el.push(`<circle cx="${xs(i, right.x)}" cy="${y(p.p99, lMax)}" r="4" fill="#d35400"/>`);
    el.push(
      `<text x="${xs(i, right.x)}" y="${y(p.p99, lMax) - 9}" text-anchor="middle" font-size="11">${p.p99 < 10 ? p.p99.toFixed(1) : Math.round(p.p99)}</text>`,
    );
  });
  el.push('</svg>');
  return el.join('\n') + '\n';
}

/** The smallest 1/2/2.5/5 × 10^k at or above v. @param {number} v */
function niceCeil(v) {
  if (!(v > 0)) return 1;
  const base = 10 ** Math.floor(Math.log10(v));
  for (const m of [1, 2, 2.5, 5, 10]) if (m * base >= v) return m * base;
  return 10 * base;
}

/** One row per paired window: both sides' CPU per certificate (main thread), throughput and B/A. @param {{ a: PairSide, b: PairSide, ratio: number }[]} windows */
function pairTable(windows) {
  return [
    '',
    '| window | A ms/cert (main) | A cert/s | A p99 ms | B ms/cert (main) | B cert/s | B p99 ms | B/A |',
    '|--:|--:|--:|--:|--:|--:|--:|--:|',
    ...windows.map(
      (w, i) =>
        `| ${i + 1} | ${fmt(w.a.cpuMsPerCert, 3)} (${fmt(w.a.mainThreadCpuMsPerCert, 3)}) | ${int(w.a.throughput)} | ${fmt(w.a.p99Ms, 1)} | ${fmt(w.b.cpuMsPerCert, 3)} (${fmt(w.b.mainThreadCpuMsPerCert, 3)}) | ${int(w.b.throughput)} | ${fmt(w.b.p99Ms, 1)} | ${fmt(w.ratio, 3)} |`,
    ),
  ];
}
