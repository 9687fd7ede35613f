/** Maps Kubernetes service-account token claims to a workload identity. */

import type { JWTPayload } from 'jose';
import { workloadId } from '../spiffe/id.js';
import { AuthenticationError } from './errors.js';

const SA_SUBJECT_PREFIX = 'system:serviceaccount:';
const DNS1123_LABEL_RE = /^[a-z0-9]([-a-z0-9]*[a-z0-9])?$/;
const DNS1123_SUBDOMAIN_RE = /^[a-z0-9]([-a-z0-9]*[a-z0-9])?(\.[a-z0-9]([-a-z0-9]*[a-z0-9])?)*$/;

/** Kubernetes namespace names are DNS-1123 labels. Length is checked first so the regex stays cheap. */
export function isNamespaceName(name: string): boolean {
  return name.length <= 63 && DNS1123_LABEL_RE.test(name);
}

/** Kubernetes service-account names are DNS-1123 subdomains. */
export function isServiceAccountName(name: string): boolean {
  return name.length <= 253 && DNS1123_SUBDOMAIN_RE.test(name);
}

/** The claims-derived part of a CallerIdentity (everything but the cluster). */
export interface TokenIdentity {
  readonly namespace: string;
  readonly serviceAccount: string;
  readonly spiffeId: string;
  readonly podName?: string;
  readonly podUid?: string;
  readonly nodeName?: string;
  readonly expiresAtMs: number;
}

/** Builds the identity from verified claims; anything that is not a well-formed SA token → ERR_TOKEN_SUBJECT. */
export function identityFromClaims(payload: JWTPayload, trustDomain: string): TokenIdentity {
  const { namespace, serviceAccount } = parseServiceAccountSubject(payload.sub);
  const k8s = kubernetesClaim(payload['kubernetes.io'], namespace, serviceAccount);
  return {
    namespace,
    serviceAccount,
    spiffeId: workloadId(trustDomain, namespace, serviceAccount),
    ...k8s,
    expiresAtMs: expiryMs(payload.exp),
  };
}

/** Latest exp we accept: far beyond any real token, well inside the Date range (found by fuzzing: 1e308). */
const MAX_EXP_SECONDS = 253_402_300_799; // 9999-12-31T23:59:59Z

function expiryMs(exp: number | undefined): number {
  if (exp === undefined || !Number.isFinite(exp) || exp > MAX_EXP_SECONDS)
    throw new AuthenticationError('ERR_TOKEN_MALFORMED', 'token "exp" is missing or out of range');
  return exp * 1000;
}

/** Parses `system:serviceaccount:<ns>:<sa>`. */
export function parseServiceAccountSubject(sub: unknown): { namespace: string; serviceAccount: string } {
  if (typeof sub !== 'string' || !sub.startsWith(SA_SUBJECT_PREFIX)) {
    throw subjectError('token subject is not a Kubernetes service account');
  }
  const parts = sub.slice(SA_SUBJECT_PREFIX.length).split(':');
  const [namespace, serviceAccount] = parts;
  if (parts.length !== 2 || !isNamespaceName(namespace!) || !isServiceAccountName(serviceAccount!)) {
    throw subjectError('token subject has an invalid namespace or service account name');
  }
  return { namespace: namespace!, serviceAccount: serviceAccount! };
}

type K8sDetails = Pick<TokenIdentity, 'podName' | 'podUid' | 'nodeName'>;

/**
 * Cross-checks the `kubernetes.io` claim against `sub` and extracts pod and node. The API server
 * writes both from the same object, so a disagreement means the token was not minted by it.
 */
function kubernetesClaim(claim: unknown, namespace: string, serviceAccount: string): K8sDetails {
  if (claim === undefined) return {};
  if (!isRecord(claim)) throw subjectError('kubernetes.io claim is not an object');
  const sa = isRecord(claim.serviceaccount) ? claim.serviceaccount : {};
  if (claim.namespace !== namespace || sa.name !== serviceAccount) {
    throw subjectError('kubernetes.io claim does not match the token subject');
  }
  const pod = isRecord(claim.pod) ? claim.pod : {};
  const node = isRecord(claim.node) ? claim.node : {};
  return { ...optional('podName', pod.name), ...optional('podUid', pod.uid), ...optional('nodeName', node.name) };
}

/** `{ [key]: value }` for a non-empty string, else `{}`: absent stays absent in the identity. */
function optional<K extends keyof K8sDetails>(key: K, value: unknown): K8sDetails {
  return typeof value === 'string' && value !== '' ? { [key]: value } : {};
}

function isRecord(value: unknown): value is Record<string, unknown> {
  return typeof value === 'object' && value !== null && !Array.isArray(value);
}

function subjectError(message: string): AuthenticationError {
  return new AuthenticationError('ERR_TOKEN_SUBJECT', message);
}
