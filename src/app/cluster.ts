/**
 * serve --workers N: N processes serving the same listeners, each a full replica of the store.
 *
 * node:cluster, not SO_REUSEPORT: Node 20 cannot set SO_REUSEPORT on a listener (net's reusePort
 * arrived in Node 22.12). The workers share one listening socket and accept from it themselves
 * (SCHED_NONE); gRPC connections are long-lived HTTP/2, so how the kernel spreads accepts matters
 * per connection, not per request.
 *
 * On SQLite the workers share the database file, each committing its own issuance batches. The
 * alternative, the primary committing every worker's records sent over the cluster channel, was
 * built and measured (bench `workers`, 2 workers, c32): 0.77-0.90 ms of CPU per certificate
 * against 0.53-0.75 ms for the shared file, and lower throughput, so it was dropped.
 *
 * /metrics: whichever worker a scrape reaches asks the primary, which gathers every worker's
 * registry (prom-client's AggregatorRegistry) and answers with the sum; see Metrics for gauges.
 */
import cluster, { type Worker } from 'node:cluster';
import type { Logger } from 'pino';
import { AggregatorRegistry, type Registry } from 'prom-client';
import type { MetricsSource } from '../observability/monitoring.js';

/** Which worker this is (0..N-1), stable across restarts of that worker. */
export const WORKER_INDEX_ENV = 'MESHCA_WORKER_INDEX';

const RESPAWN_DELAY_MS = 1_000;
/** Longer than prom-client's own 5 s wait for the workers, so its error (naming the cause) arrives first. */
const CLUSTER_METRICS_TIMEOUT_MS = 6_000;
const METRICS_REQUEST = 'meshca:cluster-metrics-request';
const METRICS_RESPONSE = 'meshca:cluster-metrics-response';

interface MetricsRequest {
  readonly type: typeof METRICS_REQUEST;
  readonly id: number;
}

interface MetricsResponse {
  readonly type: typeof METRICS_RESPONSE;
  readonly id: number;
  readonly body?: string;
  readonly error?: string;
}

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
  // Every worker accepts on the shared socket itself (the kernel picks one): with round-robin the
  // primary hands each connection over IPC, and one handed to a worker that just died is lost (the
  // client hangs until its deadline). A dead worker here simply stops accepting. Set before forking.
  cluster.schedulingPolicy = cluster.SCHED_NONE;
  const aggregate = new AggregatorRegistry();
  const fork = (index: number) => {
    const worker = cluster.fork({ [WORKER_INDEX_ENV]: String(index) });
    byIndex.set(index, worker);
    worker.on('message', (message: Partial<MetricsRequest>) => {
      if (message?.type !== METRICS_REQUEST) return;
      const reply = (answer: Omit<MetricsResponse, 'type' | 'id'>) =>
        worker.isConnected() && worker.send({ type: METRICS_RESPONSE, id: message.id, ...answer });
      aggregate.clusterMetrics().then(
        (body) => reply({ body }),
        (error: unknown) => reply({ error: `the workers' metrics could not be gathered: ${(error as Error).message}` }),
      );
    });
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

/**
 * A worker's /metrics: the sum over every worker, gathered by the primary. Also makes this worker
 * answer the primary's requests for its own registry (prom-client keeps that registry list globally).
 */
export function clusterMetricsSource(local: Registry): MetricsSource {
  AggregatorRegistry.setRegistries(local);
  new AggregatorRegistry(); // installs prom-client's worker-side listener
  const pending = new Map<number, (response: MetricsResponse) => void>();
  let nextId = 0;
  process.on('message', (message: Partial<MetricsResponse>) => {
    if (message?.type === METRICS_RESPONSE && message.id !== undefined) pending.get(message.id)?.(message as MetricsResponse);
  });
  return {
    contentType: local.contentType,
    metrics: () =>
      new Promise((resolve, reject) => {
        const id = nextId++;
        const timer = setTimeout(
          () => settle({ type: METRICS_RESPONSE, id, error: 'the primary process did not answer' }),
          CLUSTER_METRICS_TIMEOUT_MS,
        );
        const settle = (response: MetricsResponse) => {
          clearTimeout(timer);
          pending.delete(id);
          if (response.body !== undefined) resolve(response.body);
          else reject(new Error(response.error ?? 'no metrics'));
        };
        pending.set(id, settle);
        process.send?.({ type: METRICS_REQUEST, id } satisfies MetricsRequest);
      }),
  };
}
