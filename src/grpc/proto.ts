import { fileURLToPath } from 'node:url';
import { loadPackageDefinition, type ServiceDefinition, type ServiceClientConstructor } from '@grpc/grpc-js';
import { loadSync, type Options } from '@grpc/proto-loader';

/** The repo's proto/ folder, from src/grpc (vitest) or dist/grpc (compiled) alike. */
export const PROTO_ROOT = fileURLToPath(new URL('../../proto/', import.meta.url));
const CA_PROTO = 'istio/v1/auth/ca.proto';
const SPIFFE_PROTO = 'meshca/v1/spiffe.proto';

export interface IstioCertificateRequest {
  readonly csr: string;
  readonly validity_duration: number;
  readonly metadata?: ProtoStruct | null;
}

export interface IstioCertificateResponse {
  readonly cert_chain: readonly string[];
}

/** google.protobuf.Struct as proto-loader decodes it (oneofs: true). */
export interface ProtoStruct {
  readonly fields?: Record<string, ProtoValue>;
}

export interface ProtoValue {
  readonly kind?: string;
  readonly stringValue?: string;
  readonly structValue?: ProtoStruct;
}

interface LoadedPackage {
  readonly istio: { readonly v1: { readonly auth: { readonly IstioCertificateService: ServiceClientConstructor } } };
}

interface MeshcaPackage {
  readonly meshca: {
    readonly v1: { readonly JwtSvidService: ServiceClientConstructor; readonly TrustBundleService: ServiceClientConstructor };
  };
}

const LOAD_OPTIONS: Options = { includeDirs: [PROTO_ROOT], keepCase: true, longs: Number, defaults: true, oneofs: true };
let cached: ServiceClientConstructor | undefined;
let cachedMeshca: MeshcaPackage['meshca']['v1'] | undefined;

/** The generated client constructor; its `.service` is the server-side definition. */
export function istioCertificateService(): ServiceClientConstructor {
  cached ??= (loadPackageDefinition(loadSync(CA_PROTO, LOAD_OPTIONS)) as unknown as LoadedPackage).istio.v1.auth.IstioCertificateService;
  return cached;
}

/** meshca.v1's JwtSvidService and TrustBundleService (proto/meshca/v1/spiffe.proto). */
export function meshcaSpiffeServices(): MeshcaPackage['meshca']['v1'] {
  cachedMeshca ??= (loadPackageDefinition(loadSync(SPIFFE_PROTO, LOAD_OPTIONS)) as unknown as MeshcaPackage).meshca.v1;
  return cachedMeshca;
}

export interface MintJwtSvidRequest {
  readonly audience: readonly string[];
  readonly ttl_seconds: number;
}

export interface MintJwtSvidResponse {
  readonly token: string;
  readonly spiffe_id: string;
  readonly expires_at: number;
  readonly kid: string;
}

export interface FetchBundlesResponse {
  readonly trust_domain: string;
  /** Trust domain name → SPIFFE bundle JSON. */
  readonly bundles: Readonly<Record<string, string>>;
}

export function istioCertificateServiceDefinition(): ServiceDefinition {
  return istioCertificateService().service;
}

/** A string field of the request metadata Struct, e.g. ImpersonatedIdentity. */
export function metadataString(metadata: ProtoStruct | null | undefined, name: string): string | undefined {
  const value = metadata?.fields?.[name];
  return value?.kind === 'stringValue' ? value.stringValue : undefined;
}
