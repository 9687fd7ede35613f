import { spawn, type ChildProcess } from 'node:child_process';
import { join } from 'node:path';
import { testServerArgs } from './server.js';

export const CLI = join(import.meta.dirname, '..', '..', 'dist', 'cli.js');

export interface ServerProcess {
  readonly child: ChildProcess;
  readonly grpcPort: number;
  readonly monitoringPort: number;
  readonly adminPort: number;
  readonly logs: string[];
  /** Resolves with the exit code (or signal name) once the process ends. */
  readonly exited: Promise<number | string>;
}

/** Starts `meshca serve` as a separate process and waits for its "serving" log line. */
export function spawnServer(dataDir: string, extra: readonly string[] = [], env: NodeJS.ProcessEnv = {}): Promise<ServerProcess> {
  const args = testServerArgs(dataDir, extra).map((a) => (a === 'silent' ? 'info' : a));
  const child = spawn(process.execPath, [CLI, 'serve', ...args], { env: { ...process.env, ...env }, stdio: ['ignore', 'pipe', 'pipe'] });
  const logs: string[] = [];
  const exited = new Promise<number | string>((resolve) => child.on('exit', (code, signal) => resolve(code ?? signal ?? 'unknown')));
  return new Promise((resolve, reject) => {
    let buffered = '';
    const timer = setTimeout(() => reject(new Error(`meshca did not start:\n${logs.join('\n')}`)), 30_000);
    child.stderr!.on('data', (d: Buffer) => logs.push(d.toString()));
    child.stdout!.on('data', (d: Buffer) => {
      buffered += d.toString();
      const lines = buffered.split('\n');
      buffered = lines.pop()!;
      for (const line of lines) {
        logs.push(line);
        const entry = parse(line);
        if (entry?.msg === 'meshca is serving') {
          clearTimeout(timer);
          resolve({ child, logs, exited, grpcPort: port(entry.grpc), monitoringPort: port(entry.monitoring), adminPort: port(entry.admin) });
        }
      }
    });
    void exited.then((code) => {
      clearTimeout(timer);
      reject(new Error(`meshca exited (${code}) before serving:\n${logs.join('\n')}`));
    });
  });
}

function parse(line: string): Record<string, unknown> | undefined {
  try {
    return JSON.parse(line) as Record<string, unknown>;
  } catch {
    return undefined;
  }
}

function port(address: unknown): number {
  return Number(String(address).split(':').pop());
}
