import { X509Certificate } from 'node:crypto';
import { fileURLToPath } from 'node:url';
import {
  credentials,
  loadPackageDefinition,
  Metadata,
  type Client,
  type ClientReadableStream,
  type ServiceClientConstructor,
  type ServiceError,
} from '@grpc/grpc-js';
import { loadSync } from '@grpc/proto-loader';

/**
 * A SPIFFE Workload API client built only from the spec's workload.proto with grpc-js and
 * proto-loader, the way a third-party library would: nothing of meshca's agent code.
 */
const PROTO_DIR = fileURLToPath(new URL('../../proto/', import.meta.url));

export interface X509SvidMessage {
  spiffe_id: string;
  x509_svid: Buffer;
  x509_svid_key: Buffer;
  bundle: Buffer;
}
export interface X509SvidResponse {
  svids: X509SvidMessage[];
  federated_bundles: Record<string, Buffer>;
}
export interface X509BundlesResponse {
  bundles: Record<string, Buffer>;
}
export interface JwtBundlesResponse {
  bundles: Record<string, Buffer>;
}
export interface JwtSvidResponse {
  svids: { spiffe_id: string; svid: string }[];
}
export interface ValidateResponse {
  spiffe_id: string;
  claims: {
    fields: Record<
      string,
      { kind: string; stringValue?: string; numberValue?: number; listValue?: { values: { stringValue?: string }[] } }
    >;
  };
}

type Unary<Req, Res> = (request: Req, metadata: Metadata, callback: (error: ServiceError | null, response?: Res) => void) => void;

export interface WorkloadApiClient extends Client {
  FetchX509SVID(request: object, metadata: Metadata): ClientReadableStream<X509SvidResponse>;
  FetchX509Bundles(request: object, metadata: Metadata): ClientReadableStream<X509BundlesResponse>;
  FetchJWTBundles(request: object, metadata: Metadata): ClientReadableStream<JwtBundlesResponse>;
  FetchJWTSVID: Unary<{ audience: string[]; spiffe_id?: string }, JwtSvidResponse>;
  ValidateJWTSVID: Unary<{ audience: string; svid: string }, ValidateResponse>;
}

export function workloadApiClient(socketPath: string): WorkloadApiClient {
  const loaded = loadPackageDefinition(
    loadSync('spiffe/workload/workload.proto', { includeDirs: [PROTO_DIR], keepCase: true, defaults: true, oneofs: true }),
  ) as unknown as {
    SpiffeWorkloadAPI: ServiceClientConstructor;
  };
  return new loaded.SpiffeWorkloadAPI(`unix:${socketPath}`, credentials.createInsecure()) as unknown as WorkloadApiClient;
}

/** The header every Workload API client must send; `false` builds metadata without it. */
export function workloadMetadata(withHeader = true): Metadata {
  const metadata = new Metadata();
  if (withHeader) metadata.set('workload.spiffe.io', 'true');
  return metadata;
}

export function unary<Req, Res>(
  method: Unary<Req, Res>,
  client: WorkloadApiClient,
  request: Req,
  metadata = workloadMetadata(),
): Promise<Res> {
  return new Promise((resolve, reject) =>
    method.call(client, request, metadata, (error, response) => (error ? reject(error) : resolve(response!))),
  );
}

/** Collects stream messages until `done` says so (or rejects after the timeout / on a stream error). */
export function collect<T>(stream: ClientReadableStream<T>, done: (messages: T[]) => boolean, timeoutMs = 20_000): Promise<T[]> {
  const messages: T[] = [];
  return new Promise((resolve, reject) => {
    const timer = setTimeout(() => {
      stream.cancel();
      reject(new Error(`stream gave ${messages.length} messages, not what the test waited for, within ${timeoutMs} ms`));
    }, timeoutMs);
    stream.on('data', (message: T) => {
      messages.push(message);
      if (done(messages)) {
        clearTimeout(timer);
        stream.cancel();
        resolve(messages);
      }
    });
    stream.on('error', (error: ServiceError) => {
      clearTimeout(timer);
      if (error.code !== 1) reject(error); // 1 = CANCELLED, by us
    });
  });
}

/** Splits concatenated DER certificates (the Workload API's chain and bundle encoding). */
export function splitDer(concatenated: Buffer): X509Certificate[] {
  const certificates: X509Certificate[] = [];
  let offset = 0;
  while (offset < concatenated.length) {
    const lengthByte = concatenated[offset + 1]!;
    const lengthBytes = lengthByte & 0x80 ? lengthByte & 0x7f : 0;
    const length =
      lengthBytes === 0 ? lengthByte : concatenated.subarray(offset + 2, offset + 2 + lengthBytes).reduce((n, b) => n * 256 + b, 0);
    const end = offset + 2 + lengthBytes + length;
    certificates.push(new X509Certificate(concatenated.subarray(offset, end)));
    offset = end;
  }
  return certificates;
}
