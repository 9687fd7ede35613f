import { fileURLToPath } from 'node:url';
import { loadPackageDefinition, type ServiceDefinition, type ServiceClientConstructor } from '@grpc/grpc-js';
import { loadSync } from '@grpc/proto-loader';

/** The repo's proto/ folder, from src/grpc (vitest) or dist/grpc (compiled) alike. */
export const PROTO_ROOT = fileURLToPath(new URL('../../proto/', import.meta.url));
const CA_PROTO = 'istio/v1/auth/ca.proto';

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

let cached: ServiceClientConstructor | undefined;

/** The generated client constructor; its `.service` is the server-side definition. */
export function istioCertificateService(): ServiceClientConstructor {
  cached ??= (
    loadPackageDefinition(
      loadSync(CA_PROTO, { includeDirs: [PROTO_ROOT], keepCase: true, longs: Number, defaults: true, oneofs: true }),
    ) as unknown as LoadedPackage
  ).istio.v1.auth.IstioCertificateService;
  return cached;
}

export function istioCertificateServiceDefinition(): ServiceDefinition {
  return istioCertificateService().service;
}

/** A string field of the request metadata Struct, e.g. ImpersonatedIdentity. */
export function metadataString(metadata: ProtoStruct | null | undefined, name: string): string | undefined {
  const value = metadata?.fields?.[name];
  return value?.kind === 'stringValue' ? value.stringValue : undefined;
}
