// @ts-check
// Summarises V8 .cpuprofile files (written by the server under `node --cpu-prof`, i.e. `--profile`;
// one file per thread): where a thread spent its time, by package/file and by function (self time).

import { readFileSync } from 'node:fs';

/**
 * @typedef {{ id: number, callFrame: { functionName: string, url: string, lineNumber: number }, hitCount?: number, children?: number[] }} ProfileNode
 */

/**
 * Self time of the main thread, grouped by where the code lives.
 * @param {string} path a .cpuprofile file
 * @param {number} [top] how many functions to list
 * @param {string} [thread] which thread the profile is of
 * @returns {string} a plain-text report
 */
export function summarizeProfile(path, top = 25, thread = 'main thread') {
  /** @type {{ nodes: ProfileNode[], samples: number[], timeDeltas: number[], startTime: number, endTime: number }} */
  const profile = JSON.parse(readFileSync(path, 'utf8'));
  /** @type {Map<number, ProfileNode>} */
  const nodes = new Map(profile.nodes.map((n) => [n.id, n]));
  /** @type {Map<number, number>} µs per node */
  const self = new Map();
  profile.samples.forEach((id, i) => self.set(id, (self.get(id) ?? 0) + (profile.timeDeltas[i] ?? 0)));
  const total = [...self.values()].reduce((a, b) => a + b, 0);

  /** @type {Map<string, number>} */
  const byArea = new Map();
  /** @type {Map<string, number>} */
  const byFunction = new Map();
  for (const [id, us] of self) {
    const frame = /** @type {ProfileNode} */ (nodes.get(id)).callFrame;
    const area = areaOf(frame.url, frame.functionName);
    byArea.set(area, (byArea.get(area) ?? 0) + us);
    const where = frame.url ? `${shortUrl(frame.url)}:${frame.lineNumber + 1}` : '';
    const key = `${frame.functionName || '(anonymous)'} ${where}`.trim();
    byFunction.set(key, (byFunction.get(key) ?? 0) + us);
  }
  const pct = (/** @type {number} */ us) => `${((100 * us) / total).toFixed(1).padStart(5)} %`;
  const busy = total - (byArea.get('(idle)') ?? 0);
  const lines = [
    `${thread}: ${(total / 1e6).toFixed(1)} s sampled, ${(busy / 1e6).toFixed(1)} s busy (${((100 * busy) / total).toFixed(0)} %)`,
    '',
    'self time by area:',
    ...[...byArea].sort((a, b) => b[1] - a[1]).slice(0, Math.min(20, top + 3)).map(([k, us]) => `  ${pct(us)}  ${k}`),
    '',
    `top ${top} functions by self time:`,
    ...[...byFunction].sort((a, b) => b[1] - a[1]).slice(0, top).map(([k, us]) => `  ${pct(us)}  ${k}`),
  ];
  return lines.join('\n') + '\n';
}

/** @param {string} url @param {string} fn */
function areaOf(url, fn) {
  if (!url) return fn.startsWith('(') ? fn : '(native / builtins)';
  const pkg = /node_modules\/((?:@[^/]+\/)?[^/]+)/.exec(url);
  if (pkg) return pkg[1];
  if (url.startsWith('node:')) return `node: ${url.slice(5).split('/').slice(0, 2).join('/')}`;
  const own = /\/dist\/(.+)$/.exec(url);
  if (own) return `meshca ${own[1]}`;
  return shortUrl(url);
}

/** @param {string} url */
function shortUrl(url) {
  return url.replace(/^file:\/\/.*?\/(node_modules|dist)\//, '$1/');
}
