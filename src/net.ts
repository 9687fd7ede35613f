import { createServer, type Server } from 'node:net';

export interface ListenAddress {
  readonly host: string;
  readonly port: number;
}

/** Parses "host:port", "[v6]:port" or ":port" (all interfaces). Port 0 picks a free port. */
export function parseListenAddress(input: string): ListenAddress {
  const m = /^(?:\[([0-9a-fA-F:.]+)\]|([^:[\]]*)):(\d{1,5})$/.exec(input.trim());
  const port = m ? Number(m[3]) : NaN;
  if (!m || port > 65535) throw new Error(`invalid listen address "${input}": use host:port, e.g. 127.0.0.1:15012`);
  return { host: m[1] ?? (m[2] || '0.0.0.0'), port };
}

export function formatAddress(a: ListenAddress): string {
  return a.host.includes(':') ? `[${a.host}]:${a.port}` : `${a.host}:${a.port}`;
}

/** Starts listening and resolves with the bound address (the real port when 0 was asked). */
export function listenOn(server: Server, listen: ListenAddress): Promise<ListenAddress> {
  return new Promise((resolve, reject) => {
    server.once('error', reject);
    server.listen(listen.port, listen.host, () => {
      server.off('error', reject);
      const bound = server.address();
      resolve(typeof bound === 'object' && bound ? { host: listen.host, port: bound.port } : listen);
    });
  });
}

/** Binds and releases `listen` at once: rejects with the bind error (EADDRINUSE, EACCES) if it cannot be served. */
export async function probeListen(listen: ListenAddress): Promise<void> {
  if (listen.port === 0) return;
  const server = createServer();
  await listenOn(server, listen);
  await new Promise<void>((resolve) => server.close(() => resolve()));
}
