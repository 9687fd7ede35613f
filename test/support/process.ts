import type { ChildProcess } from 'node:child_process';
import { CLI as CLI_PATH, spawnMeshca } from '../../scripts/lib/meshca-process.mjs';
import { testServerArgs } from './server.js';

export const CLI: string = CLI_PATH;

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
export async function spawnServer(dataDir: string, extra: readonly string[] = [], env: NodeJS.ProcessEnv = {}): Promise<ServerProcess> {
  const args = ['serve', ...testServerArgs(dataDir, extra).map((a) => (a === 'silent' ? 'info' : a))];
  const logs: string[] = [];
  const server = spawnMeshca(args, { env: { ...process.env, ...env }, onLine: (line) => logs.push(line) });
  try {
    return { child: server.child, exited: server.exited, logs, ...(await server.ready) };
  } catch (error) {
    throw new Error(`${(error as Error).message}:\n${logs.join('\n')}`);
  }
}
