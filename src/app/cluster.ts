/**
 * serve --workers N: N processes serving the same listeners, each a full replica of the store.
 *
 * node:cluster, not SO_REUSEPORT: Node 20 cannot set SO_REUSEPORT on a listener (net's reusePort
 * arrived in Node 22.12), and @grpc/grpc-js exposes no socket option for it. Under cluster the
 * primary owns the listening sockets and hands accepted connections to workers round-robin; gRPC
 * connections are long-lived HTTP/2, so that hand-off costs per connection, not per request.
 */
import cluster, { type Worker } from 'node:cluster';
import type { Logger } from 'pino';

/** Which worker this is (0..N-1), stable across restarts of that worker. */
export const WORKER_INDEX_ENV = 'MESHCA_WORKER_INDEX';

const RESPAWN_DELAY_MS = 1_000;

export function isWorkerProcess(): boolean {
  return cluster.isWorker;
}

/** This process's worker index: 0 outside a cluster. */
export function workerIndex(env: NodeJS.ProcessEnv = process.env): number {
  return cluster.isWorker ? Number(env[WORKER_INDEX_ENV] ?? 0) : 0;
}

/**
 * The primary: forks the workers (which re-run `meshca serve` with the same flags), restarts one
 * that dies, forwards SIGHUP, and on SIGTERM/SIGINT stops them all and exits once they have drained.
 */
export function superviseWorkers(count: number, logger: Logger): void {
  const byIndex = new Map<number, Worker>();
  let stopping = false;
  const fork = (index: number) => {
    const worker = cluster.fork({ [WORKER_INDEX_ENV]: String(index) });
    byIndex.set(index, worker);
    worker.on('exit', (code, signal) => {
      if (byIndex.get(index) === worker) byIndex.delete(index);
      if (stopping) {
        if (byIndex.size === 0) {
          logger.info('all workers stopped');
          logger.flush();
          process.exit(0);
        }
        return;
      }
      logger.error(
        { worker: index, pid: worker.process.pid, code, signal },
        `worker ${index} died; starting it again in ${RESPAWN_DELAY_MS} ms`,
      );
      setTimeout(() => stopping || fork(index), RESPAWN_DELAY_MS).unref();
    });
  };
  for (let i = 0; i < count; i++) fork(i);
  logger.info({ workers: count }, 'started worker processes');
  const stop = (signal: NodeJS.Signals) => {
    if (stopping) return;
    stopping = true;
    logger.info({ signal }, 'stopping the workers');
    if (byIndex.size === 0) process.exit(0);
    for (const worker of byIndex.values()) worker.process.kill('SIGTERM');
  };
  process.on('SIGTERM', () => stop('SIGTERM'));
  process.on('SIGINT', () => stop('SIGINT'));
  process.on('SIGHUP', () => byIndex.forEach((worker) => worker.process.kill('SIGHUP')));
}
