import { execFile, type ChildProcess } from 'node:child_process';
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

/** Starts `meshca serve` (of `cli`, default this build) as a separate process and waits for its "serving" log line. */
export async function spawnServer(
  dataDir: string,
  extra: readonly string[] = [],
  env: NodeJS.ProcessEnv = {},
  cli = CLI,
): Promise<ServerProcess> {
  const args = ['serve', ...testServerArgs(dataDir, extra).map((a) => (a === 'silent' ? 'info' : a))];
  const logs: string[] = [];
  const server = spawnMeshca(args, { env: { ...process.env, ...env }, onLine: (line) => logs.push(line), cli });
  try {
    return { child: server.child, exited: server.exited, logs, ...(await server.ready) };
  } catch (error) {
    throw new Error(`${(error as Error).message}:\n${logs.join('\n')}`);
  }
}

export interface CliResult {
  readonly code: number;
  readonly stdout: string;
  readonly stderr: string;
  readonly output: string;
}

/** Runs the built CLI; MESHCA_KEK is never inherited from the test environment. `node` adds Node options (e.g. --import). */
export function runMeshca(args: readonly string[], env: Record<string, string> = {}, node: readonly string[] = []): Promise<CliResult> {
  const childEnv: NodeJS.ProcessEnv = { ...process.env, ...env };
  if (!('MESHCA_KEK' in env)) delete childEnv.MESHCA_KEK;
  return new Promise((resolve) =>
    execFile(process.execPath, [...node, CLI, ...args], { env: childEnv, timeout: 30_000 }, (error, stdout, stderr) =>
      resolve({ code: error ? Number((error as { code?: number }).code ?? 1) : 0, stdout, stderr, output: stdout + stderr }),
    ),
  );
}
