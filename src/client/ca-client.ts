import { credentials, Metadata, type ChannelCredentials, type Client, type ServiceError } from '@grpc/grpc-js';
import {
  istioCertificateService,
  meshcaSpiffeServices,
  type FetchBundlesResponse,
  type IstioCertificateRequest,
  type IstioCertificateResponse,
  type MintJwtSvidRequest,
  type MintJwtSvidResponse,
} from '../grpc/proto.js';

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

type Unary<Req, Res> = (
  request: Req,
  metadata: Metadata,
  options: { deadline: Date },
  callback: (error: ServiceError | null, response?: Res) => void,
) => void;

interface JwtSvidStub extends Client {
  MintJwtSvid: Unary<MintJwtSvidRequest, MintJwtSvidResponse>;
}

interface BundleStub extends Client {
  FetchBundles: Unary<Record<string, never>, FetchBundlesResponse>;
}

export interface JwtSvidCall {
  readonly token: string;
  readonly audiences: readonly string[];
  readonly ttlSeconds?: number;
  readonly clusterId?: string;
  readonly deadlineMs?: number;
}

export interface MintedJwtSvid {
  readonly token: string;
  readonly spiffeId: string;
  readonly expiresAt: Date;
  readonly kid: string;
}

export interface FetchedBundles {
  readonly trustDomain: string;
  /** Trust domain name → SPIFFE bundle JSON. */
  readonly bundles: Readonly<Record<string, string>>;
}

/**
 * What istio-agent does: one unary CreateCertificate call with the token in metadata; plus meshca's
 * JWT-SVID and bundle services over the same channel (one connection).
 */
export class CaClient {
  private readonly stub: CaStub;
  private readonly jwtStub: JwtSvidStub;
  private readonly bundleStub: BundleStub;

  constructor(options: CaClientOptions) {
    const creds: ChannelCredentials = options.rootsPem
      ? credentials.createSsl(Buffer.from(options.rootsPem))
      : credentials.createInsecure();
    const channelOptions = options.serverName
      ? { 'grpc.ssl_target_name_override': options.serverName, 'grpc.default_authority': options.serverName }
      : {};
    const Ctor = istioCertificateService();
    this.stub = new Ctor(options.address, creds, channelOptions) as unknown as CaStub;
    const shared = { channelOverride: this.stub.getChannel() };
    const services = meshcaSpiffeServices();
    this.jwtStub = new services.JwtSvidService(options.address, creds, shared) as unknown as JwtSvidStub;
    this.bundleStub = new services.TrustBundleService(options.address, creds, shared) as unknown as BundleStub;
  }

  mintJwtSvid(call: JwtSvidCall): Promise<MintedJwtSvid> {
    const request: MintJwtSvidRequest = { audience: call.audiences, ttl_seconds: call.ttlSeconds ?? 0 };
    return new Promise((resolve, reject) =>
      this.jwtStub.MintJwtSvid(request, callMetadata(call.token, call.clusterId), deadline(call.deadlineMs), (error, response) =>
        error || !response
          ? reject(error ?? new Error('empty response'))
          : resolve({
              token: response.token,
              spiffeId: response.spiffe_id,
              expiresAt: new Date(response.expires_at * 1000),
              kid: response.kid,
            }),
      ),
    );
  }

  fetchBundles(deadlineMs?: number): Promise<FetchedBundles> {
    return new Promise((resolve, reject) =>
      this.bundleStub.FetchBundles({}, new Metadata(), deadline(deadlineMs), (error, response) =>
        error || !response
          ? reject(error ?? new Error('empty response'))
          : resolve({ trustDomain: response.trust_domain, bundles: { ...response.bundles } }),
      ),
    );
  }

  createCertificate(call: CertificateCall): Promise<string[]> {
    const metadata = callMetadata(call.token, call.clusterId);
    const request: IstioCertificateRequest = {
      csr: call.csrPem,
      validity_duration: call.validitySeconds ?? 0,
      metadata: call.impersonatedIdentity
        ? { fields: { ImpersonatedIdentity: { kind: 'stringValue', stringValue: call.impersonatedIdentity } } }
        : null,
    };
    return new Promise((resolve, reject) =>
      this.stub.CreateCertificate(request, metadata, { deadline: new Date(Date.now() + (call.deadlineMs ?? 10_000)) }, (error, response) =>
        error ? reject(error) : resolve([...(response?.cert_chain ?? [])]),
      ),
    );
  }

  close(): void {
    this.stub.close(); // the one channel all three stubs share
  }
}

function callMetadata(token: string | undefined, clusterId: string | undefined): Metadata {
  const metadata = new Metadata();
  if (token !== undefined) metadata.set('authorization', `Bearer ${token}`);
  metadata.set('clusterid', clusterId ?? 'Kubernetes');
  return metadata;
}

function deadline(ms = 10_000): { deadline: Date } {
  return { deadline: new Date(Date.now() + ms) };
}
