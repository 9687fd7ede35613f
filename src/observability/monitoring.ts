import { createServer, type Server } from 'node:http';
import { listenOn, type ListenAddress } from '../net.js';

/** What /metrics serves: a prom-client Registry, or (serve --workers) the sum over every worker. */
export interface MetricsSource {
  readonly contentType: string;
  metrics(): Promise<string>;
}

export interface MonitoringServer {
  readonly address: ListenAddress;
  close(): Promise<void>;
}

/**
 * Plain HTTP on the monitoring port (istiod's 15014): health, readiness, Prometheus metrics.
 * Kept off Fastify and the admin port so probes and scrapes never need the admin token or TLS.
 */
export async function startMonitoringServer(
  listen: ListenAddress,
  metrics: { readonly registry: MetricsSource },
  isReady: () => boolean,
): Promise<MonitoringServer> {
  const server: Server = createServer((req, res) => {
    const path = (req.url ?? '/').split('?')[0];
    if (req.method !== 'GET' && req.method !== 'HEAD') {
      res.writeHead(405, { allow: 'GET, HEAD' }).end();
    } else if (path === '/healthz') {
      res.writeHead(200, { 'content-type': 'text/plain' }).end('ok\n');
    } else if (path === '/readyz') {
      const ready = isReady();
      res.writeHead(ready ? 200 : 503, { 'content-type': 'text/plain' }).end(ready ? 'ready\n' : 'not ready\n');
    } else if (path === '/metrics') {
      metrics.registry.metrics().then(
        (body) => res.writeHead(200, { 'content-type': metrics.registry.contentType }).end(body),
        (error: unknown) => res.writeHead(503, { 'content-type': 'text/plain' }).end(`metrics unavailable: ${(error as Error).message}\n`),
      );
    } else {
      res.writeHead(404, { 'content-type': 'text/plain' }).end('not found: try /healthz, /readyz or /metrics\n');
    }
  });
  const address = await listenOn(server, listen);
  return {
    address,
    close: () => new Promise((resolve) => server.close(() => resolve())),
  };
}
