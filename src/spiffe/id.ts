/** SPIFFE ID parsing and formatting, strict per the SPIFFE ID spec (docs/architecture.md). */
import { MeshcaError } from '../errors.js';

export type SpiffeIdErrorCode =
  | 'ERR_SPIFFE_SCHEME'
  | 'ERR_SPIFFE_TRUST_DOMAIN'
  | 'ERR_SPIFFE_PATH'
  | 'ERR_SPIFFE_TOO_LONG'
  | 'ERR_SPIFFE_NOT_WORKLOAD';

export class SpiffeIdError extends MeshcaError<SpiffeIdErrorCode> {
  override readonly name = 'SpiffeIdError';
  constructor(code: SpiffeIdErrorCode, message: string) {
    super(code, message);
  }
}

const SCHEME = 'spiffe://';
const MAX_ID_BYTES = 2048;
const MAX_TRUST_DOMAIN_BYTES = 255;
const TRUST_DOMAIN_RE = /^[a-z0-9._-]+$/;
const SEGMENT_RE = /^[A-Za-z0-9._-]+$/;

export interface SpiffeId {
  readonly trustDomain: string;
  /** Path including the leading slash, or '' for an authority ID. */
  readonly path: string;
}

/** Validates a trust domain name and returns it unchanged. */
export function parseTrustDomain(name: string): string {
  if (name.length === 0 || name.length > MAX_TRUST_DOMAIN_BYTES) {
    throw new SpiffeIdError('ERR_SPIFFE_TRUST_DOMAIN', `trust domain must be 1-${MAX_TRUST_DOMAIN_BYTES} bytes`);
  }
  if (!TRUST_DOMAIN_RE.test(name)) {
    throw new SpiffeIdError(
      'ERR_SPIFFE_TRUST_DOMAIN',
      'trust domain may contain only lowercase letters, digits, ".", "-" and "_" (no port, userinfo or upper case)',
    );
  }
  if (name.startsWith('.') || name.endsWith('.') || name.includes('..')) {
    throw new SpiffeIdError('ERR_SPIFFE_TRUST_DOMAIN', 'trust domain must not have an empty label or a leading/trailing dot');
  }
  return name;
}

function checkSegment(segment: string): void {
  if (segment.length === 0) throw new SpiffeIdError('ERR_SPIFFE_PATH', 'path has an empty segment or a trailing slash');
  if (segment === '.' || segment === '..') {
    throw new SpiffeIdError('ERR_SPIFFE_PATH', 'path must not contain "." or ".." segments');
  }
  if (!SEGMENT_RE.test(segment)) {
    throw new SpiffeIdError('ERR_SPIFFE_PATH', 'path segments may contain only letters, digits, ".", "-" and "_"');
  }
}

/** Parses a SPIFFE ID string. Throws SpiffeIdError with a stable code on any deviation from the spec. */
export function parseSpiffeId(input: string): SpiffeId {
  if (Buffer.byteLength(input, 'utf8') > MAX_ID_BYTES) {
    throw new SpiffeIdError('ERR_SPIFFE_TOO_LONG', `SPIFFE ID exceeds ${MAX_ID_BYTES} bytes`);
  }
  if (!input.startsWith(SCHEME)) throw new SpiffeIdError('ERR_SPIFFE_SCHEME', 'SPIFFE ID must start with "spiffe://"');
  const rest = input.slice(SCHEME.length);
  const slash = rest.indexOf('/');
  const trustDomain = parseTrustDomain(slash === -1 ? rest : rest.slice(0, slash));
  const path = slash === -1 ? '' : rest.slice(slash);
  if (path !== '') path.slice(1).split('/').forEach(checkSegment);
  return { trustDomain, path };
}

export function formatSpiffeId(id: SpiffeId): string {
  return `${SCHEME}${id.trustDomain}${id.path}`;
}

export function authorityId(trustDomain: string): string {
  return `${SCHEME}${parseTrustDomain(trustDomain)}`;
}

export interface WorkloadIdentity {
  readonly trustDomain: string;
  readonly namespace: string;
  readonly serviceAccount: string;
}

/** Formats the Istio workload identity spiffe://<td>/ns/<ns>/sa/<sa>, validating every part. */
export function workloadId(trustDomain: string, namespace: string, serviceAccount: string): string {
  const id = `${SCHEME}${trustDomain}/ns/${namespace}/sa/${serviceAccount}`;
  parseSpiffeId(id);
  return id;
}

/** Parses an Istio workload ID back into its parts; throws ERR_SPIFFE_NOT_WORKLOAD for other shapes. */
export function parseWorkloadId(input: string): WorkloadIdentity {
  const { trustDomain, path } = parseSpiffeId(input);
  const [, nsLabel, namespace, saLabel, serviceAccount, ...extra] = path.split('/');
  if (nsLabel !== 'ns' || saLabel !== 'sa' || namespace === undefined || serviceAccount === undefined || extra.length > 0) {
    throw new SpiffeIdError('ERR_SPIFFE_NOT_WORKLOAD', 'expected spiffe://<trust-domain>/ns/<namespace>/sa/<service-account>');
  }
  return { trustDomain, namespace, serviceAccount };
}

/** meshca's own identity: the SPIFFE ID of its serving certificate and of what it issues by itself. */
export function meshcaId(trustDomain: string): string {
  return workloadId(trustDomain, 'meshca', 'meshca');
}
