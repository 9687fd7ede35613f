import { connect, createServer, type TLSSocket } from 'node:tls';
import { generateWorkloadKey, privateKeyPemOf, workloadCsr } from '../../src/client/csr.js';
import type { CaClient } from '../../src/client/ca-client.js';

export interface WorkloadCredentials {
  readonly key: string;
  /** Leaf + intermediates. */
  readonly cert: string;
  /** The roots the workload received (last cert_chain element). */
  readonly ca: string;
}

/** Gets a fresh key and certificate for an identity, as istio-agent would. */
export async function workloadCredentials(client: CaClient, spiffeId: string, token: string): Promise<WorkloadCredentials> {
  const key = await generateWorkloadKey('ec-p256');
  const chain = await client.createCertificate({ csrPem: await workloadCsr(key, spiffeId), token });
  return { key: await privateKeyPemOf(key), cert: chain.slice(0, -1).join(''), ca: chain[chain.length - 1]! };
}

export interface HandshakeResult {
  readonly ok: boolean;
  readonly error?: string;
  readonly protocol?: string | null;
  /** What each side saw of the other: URI SANs. */
  readonly serverSawClient?: string;
  readonly clientSawServer?: string;
}

/**
 * A real TLS mutual-auth handshake over loopback; each side verifies the other against the trust
 * bundle it is given (ca), as Envoy does with the SPIFFE roots. Hostname checks are off: SVIDs have no DNS names.
 */
export async function mutualTls(
  client: WorkloadCredentials,
  server: WorkloadCredentials,
  options: { clientCa?: string; serverCa?: string } = {},
): Promise<HandshakeResult> {
  let serverSawClient: string | undefined;
  let serverError: string | undefined;
  const tlsServer = createServer(
    {
      key: server.key,
      cert: server.cert,
      ca: options.serverCa ?? server.ca,
      requestCert: true,
      rejectUnauthorized: true,
      minVersion: 'TLSv1.3',
    },
    (socket: TLSSocket) => {
      serverSawClient = socket.getPeerX509Certificate()?.subjectAltName;
      socket.end('ok');
    },
  );
  tlsServer.on('tlsClientError', (e) => (serverError = e.message));
  await new Promise<void>((resolve) => tlsServer.listen(0, '127.0.0.1', resolve));
  const port = (tlsServer.address() as { port: number }).port;
  try {
    return await new Promise<HandshakeResult>((resolve) => {
      const socket = connect(
        {
          host: '127.0.0.1',
          port,
          key: client.key,
          cert: client.cert,
          ca: options.clientCa ?? client.ca,
          checkServerIdentity: () => undefined,
          minVersion: 'TLSv1.3',
        },
        () => {
          const clientSawServer = socket.getPeerX509Certificate()?.subjectAltName;
          let data = '';
          socket.on('data', (d) => (data += d));
          socket.on('end', () =>
            resolve({
              ok: data === 'ok',
              protocol: socket.getProtocol(),
              serverSawClient,
              clientSawServer,
              error: data === 'ok' ? undefined : (serverError ?? 'connection closed'),
            }),
          );
        },
      );
      socket.on('error', (e) => resolve({ ok: false, error: serverError ?? e.message }));
    });
  } finally {
    tlsServer.close();
  }
}
