import type { IncomingMessage, ServerResponse } from 'node:http';
import { createServer, type Server, type ServerOptions } from 'node:https';
import type { Socket } from 'node:net';

/**
 * The HTTPS listener of a simulated upstream API (Kubernetes, Vault) on 127.0.0.1: it can go away
 * (listener closed, every connection cut) and come back on the same port.
 */
export class LoopbackHttpsServer {
  readonly #sockets = new Set<Socket>();
  #server: Server;
  #port = 0;

  constructor(
    private readonly tls: ServerOptions,
    private readonly handler: (req: IncomingMessage, res: ServerResponse) => void,
  ) {
    this.#server = this.#create();
  }

  get port(): number {
    return this.#port;
  }

  listen(port = this.#port): Promise<void> {
    return new Promise((resolve, reject) => {
      this.#server.once('error', reject);
      this.#server.listen(port, '127.0.0.1', () => {
        this.#port = (this.#server.address() as { port: number }).port;
        resolve();
      });
    });
  }

  /** The server goes away: the listener closes and every connection is cut. */
  stop(): Promise<void> {
    return new Promise<void>((resolve) => {
      this.#server.close(() => resolve());
      this.#sockets.forEach((s) => s.destroy());
    });
  }

  /** Comes back on the same port. */
  resume(): Promise<void> {
    this.#server = this.#create();
    return this.listen(this.#port);
  }

  #create(): Server {
    const server = createServer(this.tls, this.handler);
    server.on('secureConnection', (socket: Socket) => {
      this.#sockets.add(socket);
      socket.on('close', () => this.#sockets.delete(socket));
    });
    return server;
  }
}
