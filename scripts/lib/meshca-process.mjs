// @ts-check
// Starting `meshca serve` as a child process and waiting for it to serve: shared by the demo, the
// chaos harness and the tests.
import { spawn } from 'node:child_process';
import { fileURLToPath } from 'node:url';

export const CLI = fileURLToPath(new URL('../../dist/cli.js', import.meta.url));

/**
 * Spawns `node dist/cli.js <args>`; `ready` resolves with the listener ports once the server logs
 * "meshca is serving", and rejects if it exits first or takes over 30 s. Every output line goes to
 * `onLine`; stdout is drained for the whole run (a full pipe would stall the server).
 *
 * @param {string[]} args
 * @param {{ env?: NodeJS.ProcessEnv, onLine?: (line: string) => void, cli?: string }} [options] `cli`: another build's cli.js
 */
export function spawnMeshca(args, options = {}) {
  const onLine = options.onLine ?? (() => {});
  const child = spawn(process.execPath, [options.cli ?? CLI, ...args], {
    env: options.env ?? process.env,
    stdio: ['ignore', 'pipe', 'pipe'],
  });
  /** @type {Promise<number | string>} */
  const exited = new Promise((resolve) => child.on('exit', (code, signal) => resolve(code ?? signal ?? 'unknown')));
  /** @type {Promise<{ grpcPort: number, adminPort: number, monitoringPort: number }>} */
  const ready = new Promise((resolve, reject) => {
    let buffered = '';
    const timer = setTimeout(() => reject(new Error('meshca did not report "meshca is serving" within 30 s')), 30_000);
    child.stderr.on('data', (d) => onLine(d.toString().trimEnd()));
    child.stdout.on('data', (d) => {
      buffered += d.toString();
      const lines = buffered.split('\n');
      buffered = lines.pop() ?? '';
      for (const line of lines) {
        onLine(line);
        const entry = parseJson(line);
        if (entry?.msg !== 'meshca is serving') continue;
        clearTimeout(timer);
        resolve({ grpcPort: port(entry.grpc), adminPort: port(entry.admin), monitoringPort: port(entry.monitoring) });
      }
    });
    void exited.then((code) => {
      clearTimeout(timer);
      reject(new Error(`meshca exited (${code}) before it was serving`));
    });
  });
  return { child, exited, ready };
}

function parseJson(line) {
  try {
    return JSON.parse(line);
  } catch {
    return undefined;
  }
}

function port(address) {
  return Number(String(address).split(':').pop());
}
