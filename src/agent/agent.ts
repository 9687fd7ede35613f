import { chmodSync, existsSync, lstatSync, mkdirSync, readFileSync, rmSync } from 'node:fs';
import { dirname } from 'node:path';
import { Server, ServerCredentials, type ServiceDefinition, type UntypedServiceImplementation } from '@grpc/grpc-js';
import type { Logger } from 'pino';
import { startMonitoringServer, type MonitoringServer } from '../observability/monitoring.js';
import type { ListenAddress } from '../net.js';
import { FileWriter } from './file-writer.js';
import { JwtSvidCache } from './jwt-cache.js';
import { AgentMetrics } from './metrics.js';
import type { AgentConfig } from './options.js';
import { sdsDefinition, sdsHandlers } from './sds.js';
import { BundlePoller, MeshcaConnection, SvidRotator } from './sources.js';
import { AgentState } from './state.js';
import { workloadApiDefinition, workloadApiHandlers } from './workload-api.js';

export interface RunningAgent {
  readonly state: AgentState;
  readonly metrics: AgentMetrics;
  readonly monitoringAddress: ListenAddress;
  /** Renews the X509-SVID now (tests, SIGHUP). */
  renew(): Promise<boolean>;
  close(): Promise<void>;
}

/** A gRPC server on a Unix socket: directory created, stale socket replaced, mode set after bind. */
async function serveOnSocket(
  path: string,
  mode: number,
  service: ServiceDefinition,
  handlers: UntypedServiceImplementation,
): Promise<Server> {
  mkdirSync(dirname(path), { recursive: true, mode: 0o755 });
  if (existsSync(path)) {
    if (!lstatSync(path).isSocket()) throw new Error(`${path} exists and is not a socket; remove it or choose another path`);
    rmSync(path);
  }
  const server = new Server({ 'grpc.enable_channelz': 0 });
  server.addService(service, handlers);
  await new Promise<void>((resolve, reject) =>
    server.bindAsync(`unix:${path}`, ServerCredentials.createInsecure(), (error) => (error ? reject(error) : resolve())),
  );
  chmodSync(path, mode);
  return server;
}

/** Refuses new calls, lets unary calls finish for a second, then cancels the streams (they never end by themselves). */
function shutdownServer(server: Server, path: string): Promise<void> {
  return new Promise((resolve) => {
    const timer = setTimeout(() => server.forceShutdown(), 1000);
    server.tryShutdown(() => {
      clearTimeout(timer);
      rmSync(path, { force: true });
      resolve();
    });
  });
}

/**
 * The node agent's composition root: one connection to meshca (gRPC only), an SVID rotator and a
 * bundle poller feeding one AgentState, and the transports reading it: the Workload API socket,
 * optionally SDS and files, plus its own monitoring endpoint.
 */
export async function startAgent(config: AgentConfig, logger: Logger, metrics = new AgentMetrics()): Promise<RunningAgent> {
  const state = new AgentState(config.trustDomain);
  const connection = new MeshcaConnection({
    address: config.server,
    rootsPem: readFileSync(config.rootFile, 'utf8'),
    serverName: config.serverName,
    clusterId: config.clusterId,
  });
  const bundles = new BundlePoller({ connection, state, logger, metrics });
  const rotator = new SvidRotator({
    connection,
    state,
    tokenFile: config.tokenFile,
    trustDomain: config.trustDomain,
    clusterId: config.clusterId,
    ttlSeconds: config.svidTtlSeconds,
    logger,
    metrics,
    onRenewed: () => void bundles.refresh(),
  });
  const jwtSvids = new JwtSvidCache(connection, config.tokenFile, config.clusterId);
  const monitoring: MonitoringServer = await startMonitoringServer(config.monitoringListen, metrics, () => {
    const svid = state.currentSvid();
    return svid !== undefined && svid.notAfter.getTime() > Date.now() && state.ownBundle() !== undefined;
  });
  const sockets: { server: Server; path: string }[] = [];
  try {
    sockets.push({
      path: config.socket,
      server: await serveOnSocket(
        config.socket,
        config.socketMode,
        workloadApiDefinition(),
        workloadApiHandlers({ state, jwtSvids: (aud) => jwtSvids.get(aud), metrics, logger }),
      ),
    });
    if (config.sdsSocket)
      sockets.push({
        path: config.sdsSocket,
        server: await serveOnSocket(config.sdsSocket, config.socketMode, sdsDefinition(), sdsHandlers({ state, metrics, logger })),
      });
  } catch (error) {
    await Promise.all(sockets.map((s) => shutdownServer(s.server, s.path)));
    await monitoring.close();
    connection.close();
    throw error;
  }
  const files = config.writeDir ? new FileWriter({ dir: config.writeDir, state, logger, metrics, onRotate: config.onRotate }) : undefined;
  bundles.start();
  rotator.start();
  logger.info(
    {
      server: config.server,
      socket: config.socket,
      sdsSocket: config.sdsSocket,
      writeDir: config.writeDir,
      monitoring: monitoring.address,
    },
    'meshca agent is serving the Workload API',
  );
  return {
    state,
    metrics,
    monitoringAddress: monitoring.address,
    renew: () => rotator.renew(),
    close: async () => {
      rotator.stop();
      bundles.stop();
      await Promise.all(sockets.map((s) => shutdownServer(s.server, s.path)));
      await files?.close();
      await monitoring.close();
      connection.close();
    },
  };
}
