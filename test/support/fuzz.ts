/**
 * The fuzz library for tests. The PRNG, mutators, engine and targets live in fuzz/ as plain ESM
 * (.mjs), because `npm run fuzz` runs them with plain node against dist/, and Node 20 cannot load
 * TypeScript; this module binds them to the TypeScript sources under src/ instead and gives them
 * types.
 */
import { readFileSync } from 'node:fs';
import { join } from 'node:path';
import { status as grpcStatus } from '@grpc/grpc-js';
import { pino } from 'pino';
// @ts-expect-error -- plain ESM without type declarations, shared with the node-only runner
import * as shared from '../../fuzz/index.mjs';
import * as adminServer from '../../src/admin/server.js';
import * as authn from '../../src/authn/index.js';
import * as authorityErrors from '../../src/authority/errors.js';
import * as inventory from '../../src/authority/inventory.js';
import * as issuance from '../../src/authority/issuance.js';
import * as lifecycle from '../../src/authority/lifecycle.js';
import * as policy from '../../src/authority/policy.js';
import * as revocation from '../../src/authority/revocation.js';
import * as caClient from '../../src/client/ca-client.js';
import * as config from '../../src/config.js';
import * as flags from '../../src/flags.js';
import * as metrics from '../../src/observability/metrics.js';
import * as csr from '../../src/pki/csr.js';
import * as pkiErrors from '../../src/pki/errors.js';
import * as x509 from '../../src/pki/x509.js';
import * as h2Connection from '../../src/grpc/h2/connection.js';
import * as hpack from '../../src/grpc/h2/hpack.js';
import * as server from '../../src/app/server.js';
import * as spiffe from '../../src/spiffe/id.js';
import * as sqlite from '../../src/store/sqlite.js';

/** fuzz/lib/modules.mjs's MODULE_PATHS, statically imported (vite cannot resolve a computed import). */
const SOURCES: Readonly<Record<string, object>> = {
  'pki/csr': csr,
  'pki/errors': pkiErrors,
  'pki/x509': x509,
  'authority/policy': policy,
  'authority/errors': authorityErrors,
  'authority/lifecycle': lifecycle,
  'authority/inventory': inventory,
  'authority/revocation': revocation,
  'authority/issuance': issuance,
  'authn/index': authn,
  'spiffe/id': spiffe,
  'store/sqlite': sqlite,
  'observability/metrics': metrics,
  'admin/server': adminServer,
  config,
  flags,
  'app/server': server,
  'client/ca-client': caClient,
  'grpc/h2/connection': h2Connection,
  'grpc/h2/hpack': hpack,
};

export type TargetName = 'csr' | 'token' | 'spiffe' | 'admin' | 'grpc' | 'h2';

export interface Violation {
  readonly target: string;
  readonly seed: number;
  readonly index: number;
  readonly message: string;
  /** The input, base64 (bytes for DER, UTF-8 text otherwise; see `note`). */
  readonly input: string;
  readonly note: string;
  readonly stack?: string;
}

export interface FuzzReport {
  readonly target: string;
  readonly cases: number;
  readonly elapsedMs: number;
  readonly maxCaseMs: number;
  readonly slowestCase: number;
  readonly outcomes: Readonly<Record<string, number>>;
  readonly violations: readonly Violation[];
  readonly known: Readonly<Record<string, { count: number; summary: string }>>;
}

export interface CaseResult {
  readonly outcome: string;
  readonly violations: readonly (string | { message: string })[];
  readonly ms?: number;
}

export interface FuzzTarget {
  readonly name: TargetName;
  readonly timeBoundMs: number;
  generate(r: Rng, index: number): unknown;
  execute(input: unknown): Promise<CaseResult>;
  describe(input: unknown): { base64: string; note: string };
  finalCheck?(): Promise<string[]>;
  close?(): Promise<void>;
  /** The token target: a trusted RS256 token with these claims changed (reproducers). */
  tokenFor?(patch: Record<string, unknown>): string;
  /** The admin target's Fastify app (reproducers). */
  readonly app?: { inject(options: object): Promise<{ statusCode: number; body: string }> };
}

export interface Rng {
  u32(): number;
  int(n: number): number;
  bool(p?: number): boolean;
  pick<T>(items: readonly T[]): T;
  bytes(n: number): Buffer;
}

export interface KnownIssue {
  readonly id: string;
  readonly target: TargetName;
  readonly match: RegExp;
  readonly summary: string;
}

export const KNOWN_ISSUES: readonly KnownIssue[] = shared.KNOWN_ISSUES;
/** Seeded PRNG (sfc32): the same (seed, target, index) always generates the same case. */
export const Rng: new (seed: number) => Rng = shared.Rng;
export const caseSeed: (seed: number, target: string, index: number) => number = shared.caseSeed;
/** Byte/string/JSON mutators and DER tools, for ad-hoc reproducers. */
export const { mutateBytes, mutateString, mutateJsonObject, parseTree, encodeTree, lieAboutLength, mutateTree, tlv, oidContent } =
  shared as Record<string, (...args: never[]) => never>;
/** The SPIFFE ID spec as one regex (the SPIFFE target's oracle). */
export const SPIFFE_ID_ORACLE: RegExp = shared.SPIFFE_ID_ORACLE;
/** The admin target's bearer token. */
export const ADMIN_TOKEN: string = shared.ADMIN_TOKEN;
/** The token target's fixed clock, in seconds. */
export const TOKEN_NOW: number = shared.TOKEN_NOW;

export const runFuzz: (
  target: FuzzTarget,
  options: { seed: number; iterations: number; only?: number; knownIssues?: readonly KnownIssue[] },
) => Promise<FuzzReport> = shared.runFuzz;
export const formatViolations: (report: FuzzReport) => string = shared.formatViolations;

const corpus = (name: string): unknown => JSON.parse(readFileSync(join(import.meta.dirname, '..', '..', 'fuzz', 'corpus', name), 'utf8'));

type Modules = Record<string, unknown>;
let modules: Promise<Modules> | undefined;

/** src/ modules in the flat namespace the targets expect. */
export function sourceModules(): Promise<Modules> {
  const source = async (path: string): Promise<object> => {
    if (!SOURCES[path]) throw new Error(`test/support/fuzz.ts: add a static import for src/${path}`);
    return SOURCES[path];
  };
  modules ??= shared.loadModules(source, { pino, grpcStatus }) as Promise<Modules>;
  return modules;
}

/** A target wired to src/, with the checked-in corpus. */
export async function makeTarget(name: TargetName, options: { timeBoundMs?: number } = {}): Promise<FuzzTarget> {
  const mods = await sourceModules();
  switch (name) {
    case 'csr':
      return shared.csrTarget(mods, corpus('csrs.json'), options);
    case 'token':
      return shared.tokenTarget(mods, corpus('jwt-keys.json'), options);
    case 'spiffe':
      return shared.spiffeTarget(mods, options);
    case 'admin':
      return shared.adminTarget(mods, corpus('plugin-ca.json'), options);
    case 'grpc':
      return shared.grpcTarget(mods, corpus('csrs.json'), corpus('jwt-keys.json'), options);
    case 'h2':
      return shared.h2Target(mods, options);
  }
}
