import { credentials, Metadata, type ChannelCredentials, type Client, type ServiceError } from '@grpc/grpc-js';
import { istioCertificateService, type IstioCertificateRequest, type IstioCertificateResponse } from '../grpc/proto.js';

export interface CaClientOptions {
  /** host:port of meshca's gRPC listener (CA_ADDR). */
  readonly address: string;
  /** PEM roots to verify the server; omit for plaintext. */
  readonly rootsPem?: string;
  /** TLS server name when it differs from the address host (e.g. connecting to 127.0.0.1). */
  readonly serverName?: string;
}

export interface CertificateCall {
  readonly csrPem: string;
  readonly token?: string;
  readonly validitySeconds?: number;
  readonly clusterId?: string;
  readonly impersonatedIdentity?: string;
  readonly deadlineMs?: number;
}

interface CaStub extends Client {
  CreateCertificate(
    request: IstioCertificateRequest,
    metadata: Metadata,
    options: { deadline: Date },
    callback: (error: ServiceError | null, response?: IstioCertificateResponse) => void,
  ): void;
}

/** What istio-agent does: one unary CreateCertificate call with the token in metadata. */
export class CaClient {
  private readonly stub: CaStub;

  constructor(options: CaClientOptions) {
    const creds: ChannelCredentials = options.rootsPem ? credentials.createSsl(Buffer.from(options.rootsPem)) : credentials.createInsecure();
    const channelOptions = options.serverName ? { 'grpc.ssl_target_name_override': options.serverName, 'grpc.default_authority': options.serverName } : {};
    const Ctor = istioCertificateService();
    this.stub = new Ctor(options.address, creds, channelOptions) as unknown as CaStub;
  }

  createCertificate(call: CertificateCall): Promise<string[]> {
    const metadata = new Metadata();
    if (call.token !== undefined) metadata.set('authorization', `Bearer ${call.token}`);
    metadata.set('clusterid', call.clusterId ?? 'Kubernetes');
    const request: IstioCertificateRequest = {
      csr: call.csrPem,
      validity_duration: call.validitySeconds ?? 0,
      metadata: call.impersonatedIdentity ? { fields: { ImpersonatedIdentity: { kind: 'stringValue', stringValue: call.impersonatedIdentity } } } : null,
    };
    return new Promise((resolve, reject) =>
      this.stub.CreateCertificate(request, metadata, { deadline: new Date(Date.now() + (call.deadlineMs ?? 10_000)) }, (error, response) =>
        error ? reject(error) : resolve([...(response?.cert_chain ?? [])]),
      ),
    );
  }

  close(): void {
    this.stub.close();
  }
}
