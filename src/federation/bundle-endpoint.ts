import { createServer, type Server } from 'node:https';
import { listenOn, type ListenAddress } from '../net.js';

export interface EndpointCredentials {
  readonly certificateChainPem: string;
  readonly privateKeyPem: string;
}

export interface BundleEndpointOptions {
  readonly listen: ListenAddress;
  /** The current SPIFFE bundle document. */
  readonly bundle: () => string;
  /** meshca's serving SVID: https_spiffe clients authenticate the endpoint by its SPIFFE ID. */
  readonly credentials: () => EndpointCredentials;
  /** Registers a callback for renewed credentials. */
  readonly onRenew: (listener: (credentials: EndpointCredentials) => void) => void;
}

export interface BundleEndpoint {
  readonly address: ListenAddress;
  close(): Promise<void>;
}

/**
 * The SPIFFE bundle endpoint for the https_spiffe profile on its own listener: GET on any path
 * answers the bundle, over TLS with meshca's SVID (the certificate is swapped on renewal).
 */
export async function startBundleEndpoint(options: BundleEndpointOptions): Promise<BundleEndpoint> {
  const tls = (c: EndpointCredentials) => ({ key: c.privateKeyPem, cert: c.certificateChainPem, minVersion: 'TLSv1.2' as const });
  const server: Server = createServer(tls(options.credentials()), (req, res) => {
    if (req.method !== 'GET' && req.method !== 'HEAD') {
      res.writeHead(405, { allow: 'GET, HEAD' }).end();
      return;
    }
    res.writeHead(200, { 'content-type': 'application/json', 'cache-control': 'max-age=60' }).end(options.bundle());
  });
  options.onRenew((credentials) => server.setSecureContext(tls(credentials)));
  const address = await listenOn(server, options.listen);
  return { address, close: () => new Promise((resolve) => server.close(() => resolve())) };
}
