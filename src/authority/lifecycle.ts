import type { KeyObject } from 'node:crypto';
import type { Logger } from 'pino';
import type {
  AuthorityRecord,
  AuthorityRevocationReason,
  AuthorityState,
  AuthorityTransition,
  PendingAuthorityRecord,
  Store,
} from '../store/types.js';
import { createCaCertificate, validatePluginCa, type PluginCaFiles } from '../pki/certificate.js';
import type { KeyType } from '../pki/keys.js';
import { AuthorityError } from './errors.js';
import {
  attachChange,
  DEFAULT_PENDING_TTL_MS,
  isPendingId,
  newPendingAuthority,
  type IntermediateCsrRequest,
  type UpstreamCertificateFiles,
} from './pending.js';
import { authorityRecord } from './records.js';
import { SigningAuthority, unsealAuthorityKey } from './signer.js';
import { buildSnapshot, TRUSTED_STATES, type TrustSnapshot } from './snapshot.js';

export interface AuthorityProfile {
  readonly trustDomain: string;
  readonly keyType: KeyType;
  readonly rootTtlMs: number;
  readonly intermediateTtlMs: number;
}

export interface AuthorityDeps {
  readonly store: Store;
  readonly kek: Buffer;
  readonly logger: Logger;
  /** AIA OCSP URL put in every leaf (--ocsp-url); none by default. */
  readonly ocspUrl?: string;
  readonly now?: () => Date;
  /** The longest workload certificate (--max-ttl): an upstream intermediate must outlive it. */
  readonly minIntermediateLifetimeMs?: number;
  /** How long a CSR waits for its certificate (default a week). */
  readonly pendingTtlMs?: number;
  /** On an empty store: the first intermediate is signed by this upstream CA instead of a self-signed root. */
  readonly bootstrapSigner?: IntermediateSigner;
}

/** An upstream CA that signs meshca's intermediate CSRs (the port Vault and cert-manager clients implement). */
export interface IntermediateSigner {
  readonly kind: 'vault' | 'cert-manager';
  /** Resolves with the signed certificate and the chain up to and including the upstream root. */
  signIntermediate(request: {
    readonly id: string;
    readonly csrPem: string;
    readonly ttlMs: number;
    readonly signal?: AbortSignal;
  }): Promise<UpstreamCertificateFiles>;
}

export interface CertificateAuthorityOptions extends AuthorityDeps, AuthorityProfile {}

export interface PrepareRequest {
  readonly keyType?: KeyType;
  readonly rootTtlMs?: number;
  readonly intermediateTtlMs?: number;
}

/** CA certificates are backdated a little so freshly rotated roots verify on nodes with skewed clocks. */
const CA_BACKDATE_MS = 5 * 60_000;

type ChangeListener = (snapshot: TrustSnapshot) => void;

/** What revoking an authority did (docs/operations/compromise.md). */
export interface AuthorityRevocationOutcome {
  /** The revoked authority, now tainted. */
  readonly authority: AuthorityRecord;
  /** Every authority tainted by it: the authority itself, and a root's intermediates. */
  readonly tainted: readonly string[];
  /** The intermediate that signs from now on, when the revoked one was (or was under) the signer. */
  readonly replacement: AuthorityRecord | null;
  /** Unexpired leaves issued by the tainted intermediates (listable with GET /v1/certificates?authorityId=). */
  readonly unexpiredCertificates: number;
}

/** One revocation as a store change: what to insert, which states move, what is tainted. */
interface RevocationPlan {
  readonly insert: AuthorityRecord[];
  readonly transitions: AuthorityTransition[];
  readonly tainted: AuthorityRecord[];
  readonly replacementId: string | null;
}

/**
 * The set of signing authorities and their state machine (docs/architecture.md), SPIRE-style: every change
 * is one journaled store transaction with a state guard, and the in-memory snapshot is rebuilt from
 * the store afterwards, so a crash at any point leaves either the old or the new state.
 */
export class CertificateAuthority {
  private snapshot!: TrustSnapshot;
  private readonly listeners: ChangeListener[] = [];
  private queue: Promise<unknown> = Promise.resolve();
  private readonly now: () => Date;

  private constructor(private readonly options: AuthorityDeps & Partial<AuthorityProfile>) {
    this.now = options.now ?? (() => new Date());
  }

  /** The server's start: bootstrap an empty store, then load. */
  static async open(options: CertificateAuthorityOptions): Promise<CertificateAuthority> {
    await CertificateAuthority.bootstrap(options).catch(async (error: unknown) => {
      // Another replica bootstrapped the shared store at the same moment (the database let one win): use its CA.
      if ((await options.store.loadAuthorities()).length === 0) throw error;
    });
    return CertificateAuthority.load(options);
  }

  /**
   * Loads the authorities of a store that has them. Tools that only sign with what exists (CRLs,
   * istiod certificates) load without a profile; creating new authorities then is refused.
   */
  static async load(options: AuthorityDeps & Partial<AuthorityProfile>): Promise<CertificateAuthority> {
    const ca = new CertificateAuthority(options);
    await ca.reload();
    return ca;
  }

  /** On an empty store only, creates the first root and intermediate; false when the store already has authorities. */
  static async bootstrap(options: CertificateAuthorityOptions): Promise<boolean> {
    if ((await options.store.loadAuthorities()).length > 0) return false;
    const ca = new CertificateAuthority(options);
    if (options.bootstrapSigner) {
      await ca.bootstrapUpstream(options.bootstrapSigner);
      return true;
    }
    const { root, intermediate } = await ca.createPair(options, 'active');
    await ca.commit({ insert: [root, intermediate], bumpBundleSequence: true }, 'meshca', 'authority.bootstrap', root.id, {
      intermediateId: intermediate.id,
      keyType: root.keyType,
    });
    options.logger.info(
      { rootId: root.id, intermediateId: intermediate.id, keyType: root.keyType },
      'created the first root and intermediate CA',
    );
    return true;
  }

  current(): TrustSnapshot {
    return this.snapshot;
  }

  onChange(listener: ChangeListener): void {
    this.listeners.push(listener);
  }

  /** Rebuilds the snapshot from the store (also how another replica's change would be picked up). */
  async reload(): Promise<TrustSnapshot> {
    const authorities = await this.options.store.loadAuthorities();
    const active = authorities.filter((a) => a.kind === 'intermediate' && a.state === 'active');
    const [current] = active;
    if (current === undefined || active.length !== 1) {
      throw new AuthorityError(
        'ERR_AUTHORITY_INCONSISTENT',
        `the store has ${active.length} active signing authorities; exactly one is required (inspect with "meshca verify")`,
      );
    }
    const signer = SigningAuthority.open(current, this.options.kek, { ocspUrl: this.options.ocspUrl });
    const previous = this.snapshot;
    this.snapshot = buildSnapshot(authorities, signer, await this.options.store.bundleSequence());
    if (previous) this.listeners.forEach((listener) => listener(this.snapshot));
    return this.snapshot;
  }

  /**
   * Picks up a change another replica committed: re-reads the store and, only if the authorities or
   * the bundle sequence differ from the snapshot, reloads (so listeners such as the serving
   * certificate react to real changes, not to every periodic re-read).
   */
  syncFromStore(): Promise<boolean> {
    return this.serialize(async () => {
      const [authorities, sequence] = await Promise.all([this.options.store.loadAuthorities(), this.options.store.bundleSequence()]);
      if (sequence === this.snapshot.bundleSequence && authorityVersion(authorities) === authorityVersion(this.snapshot.authorities))
        return false;
      await this.reload();
      return true;
    });
  }

  prepare(request: PrepareRequest, actor: string): Promise<{ root: AuthorityRecord; intermediate: AuthorityRecord }> {
    return this.serialize(async () => {
      const { root, intermediate } = await this.createPair({ ...this.profile(), ...definedOnly(request) }, 'prepared');
      await this.commit({ insert: [root, intermediate], bumpBundleSequence: true }, actor, 'authority.prepare', root.id, {
        intermediateId: intermediate.id,
        keyType: root.keyType,
      });
      return { root, intermediate };
    });
  }

  /** Makes a prepared intermediate (or a prepared root's intermediate) the signer; the old one retires. */
  activate(id: string, actor: string): Promise<AuthorityRecord> {
    return this.serialize(async () => {
      if (isPendingId(id))
        throw new AuthorityError(
          'ERR_AUTHORITY_STATE',
          `${id} is pending: attach its signed certificate first (POST /v1/authorities/${id}/certificate)`,
          { state: 'pending' },
        );
      const authorities = await this.options.store.loadAuthorities();
      const target = activationTarget(authorities, id);
      SigningAuthority.open(target, this.options.kek); // never activate something that cannot sign
      const root = find(authorities, target.parentId!);
      const transitions = [...retireActive(authorities, root.id), { id: target.id, from: ['prepared'], to: 'active' } as const];
      if (root.state !== 'active') transitions.push({ id: root.id, from: [root.state], to: 'active' });
      await this.commit({ transitions, bumpBundleSequence: false }, actor, 'authority.activate', target.id, { rootId: root.id });
      return find(await this.options.store.loadAuthorities(), target.id);
    });
  }

  /** Removes a root (with its intermediates) or an intermediate from the bundle. */
  remove(id: string, force: boolean, actor: string): Promise<{ removed: string[]; unexpiredCertificates: number }> {
    return this.serialize(async () => {
      const authorities = await this.options.store.loadAuthorities();
      const affected = removalSet(authorities, id);
      const intermediates = affected.filter((a) => a.kind === 'intermediate').map((a) => a.id);
      const unexpired = await this.options.store.countUnexpired(intermediates, this.now());
      if (unexpired > 0 && !force) {
        throw new AuthorityError(
          'ERR_AUTHORITY_IN_USE',
          `${unexpired} unexpired certificates still chain to ${id}; wait for them to expire, re-issue them, or remove with force`,
          { unexpiredCertificates: unexpired },
        );
      }
      const transitions = affected.map((a) => ({ id: a.id, from: [a.state], to: 'removed' as const }));
      const bump = affected.some((a) => a.kind === 'root' && TRUSTED_STATES.has(a.state));
      await this.commit({ transitions, bumpBundleSequence: bump }, actor, 'authority.remove', id, { force, unexpired });
      return { removed: affected.map((a) => a.id), unexpiredCertificates: unexpired };
    });
  }

  /**
   * Revokes a root or an intermediate after a key compromise: it and (for a root) its intermediates
   * become tainted and never sign again. When the signer is among them, its replacement becomes
   * active in the same store transaction, so issuance never pauses: a fresh intermediate under the
   * same root, or for a root the prepared intermediate under another root.
   */
  revoke(id: string, reason: AuthorityRevocationReason, actor: string): Promise<AuthorityRevocationOutcome> {
    return this.serialize(async () => {
      const authorities = await this.options.store.loadAuthorities();
      const target = find(authorities, id);
      if (target.state === 'tainted' || target.state === 'removed') {
        throw new AuthorityError('ERR_AUTHORITY_STATE', `${id} is already ${target.state}`, { state: target.state });
      }
      const plan = target.kind === 'root' ? rootRevocation(authorities, target) : await this.intermediateRevocation(authorities, target);
      const at = this.now();
      const intermediates = plan.tainted.filter((a) => a.kind === 'intermediate').map((a) => a.id);
      const unexpired = await this.options.store.countUnexpired(intermediates, at);
      const tainted = plan.tainted.map((a) => a.id);
      await this.options.store.applyAuthorityChange({
        insert: plan.insert,
        transitions: plan.transitions,
        revocations: plan.tainted.map((a) => ({ authorityId: a.id, revokedAt: at, reason: a.id === id ? reason : 'cACompromise', actor })),
        bumpBundleSequence: false,
        audit: {
          actor,
          action: 'authority.revoke',
          target: id,
          result: 'ok',
          details: { reason, kind: target.kind, tainted, replacementId: plan.replacementId, unexpiredCertificates: unexpired },
          at,
        },
      });
      await this.reload();
      const current = this.snapshot.authorities;
      const replacement = plan.replacementId === null ? null : find(current, plan.replacementId);
      this.options.logger.warn(
        { id, reason, tainted, replacementId: plan.replacementId, unexpiredCertificates: unexpired },
        'authority revoked and tainted',
      );
      return { authority: find(current, id), tainted, replacement, unexpiredCertificates: unexpired };
    });
  }

  /** Taints one intermediate; if it signs, a fresh intermediate under the same root takes over. */
  private async intermediateRevocation(authorities: readonly AuthorityRecord[], target: AuthorityRecord): Promise<RevocationPlan> {
    const taint: AuthorityTransition = { id: target.id, from: [target.state], to: 'tainted' };
    if (target.state !== 'active') return { insert: [], transitions: [taint], tainted: [target], replacementId: null };
    const root = find(authorities, target.parentId!);
    if (!root.sealedKey) {
      throw new AuthorityError(
        'ERR_AUTHORITY_STATE',
        `${target.id} signs and its root ${root.id} is external (plug-in CA): import a new intermediate, activate it, then revoke ${target.id}`,
      );
    }
    const issuer = { certificateDer: root.certificateDer, privateKey: unsealAuthorityKey(root, this.options.kek) };
    const replacement = await this.createIntermediate(root, issuer, this.profile(), 'active');
    return { insert: [replacement], transitions: [taint], tainted: [target], replacementId: replacement.id };
  }

  /** A new intermediate under the active root, active at once; roots and bundle are unchanged. */
  rotateIntermediate(actor: string): Promise<AuthorityRecord> {
    return this.serialize(async () => {
      const authorities = await this.options.store.loadAuthorities();
      const root = find(authorities, this.snapshot.signer.record.parentId!);
      if (!root.sealedKey) {
        throw new AuthorityError('ERR_AUTHORITY_STATE', `root ${root.id} is external (plug-in CA); import a new intermediate instead`);
      }
      const issuer = { certificateDer: root.certificateDer, privateKey: unsealAuthorityKey(root, this.options.kek) };
      const intermediate = await this.createIntermediate(root, issuer, this.profile(), 'prepared');
      const transitions = [...retireActive(authorities, root.id), { id: intermediate.id, from: ['prepared'], to: 'active' } as const];
      await this.commit(
        { insert: [intermediate], transitions, bumpBundleSequence: false },
        actor,
        'authority.rotate-intermediate',
        intermediate.id,
        {
          rootId: root.id,
        },
      );
      return { ...intermediate, state: 'active' };
    });
  }

  /** Imports Istio's plug-in CA file set as a prepared authority. */
  importPlugin(files: PluginCaFiles, actor: string): Promise<AuthorityRecord[]> {
    return this.serialize(async () => {
      const authorities = await this.options.store.loadAuthorities();
      const inserted = await this.pluginRecords(files, authorities);
      const bump = inserted.some((a) => a.kind === 'root');
      await this.commit({ insert: inserted, bumpBundleSequence: bump }, actor, 'authority.import', inserted[0]?.id ?? '', {
        ids: inserted.map((a) => a.id),
      });
      return inserted;
    });
  }

  /** A new key sealed under the KEK and its CSR, recorded as a pending authority until its certificate is attached. */
  requestIntermediate(request: IntermediateCsrRequest, actor: string): Promise<{ pending: PendingAuthorityRecord; csrPem: string }> {
    return this.serialize(async () => {
      const profile = { ...this.profile(), pendingTtlMs: this.options.pendingTtlMs ?? DEFAULT_PENDING_TTL_MS };
      const { record, csrPem } = await newPendingAuthority(request, profile, this.options.kek, this.now());
      await this.options.store.addPendingAuthority(
        record,
        this.audit(actor, 'authority.request-intermediate', record.id, {
          keyType: record.keyType,
          upstream: record.upstream,
          expiresAt: record.expiresAt.toISOString(),
        }),
      );
      return { pending: record, csrPem };
    });
  }

  pendingAuthorities(): Promise<PendingAuthorityRecord[]> {
    return this.options.store.loadPendingAuthorities();
  }

  /** Completes a pending authority with its upstream-signed certificate: it becomes prepared, its root joins the bundle. */
  attachCertificate(id: string, files: UpstreamCertificateFiles, actor: string): Promise<AuthorityRecord[]> {
    return this.serialize(() => this.attach(id, files, actor, 'prepared'));
  }

  /** Deletes a pending authority (its sealed key goes with it). */
  removePending(id: string, actor: string, reason = 'authority.remove-pending'): Promise<void> {
    return this.serialize(async () => {
      const removed = await this.options.store.deletePendingAuthority(id, this.audit(actor, reason, id, {}));
      if (!removed)
        throw new AuthorityError('ERR_AUTHORITY_NOT_FOUND', `no pending authority with id ${id} (list them with GET /v1/authorities)`);
    });
  }

  /** Deletes pending authorities past their expiry; returns their ids. */
  async expirePending(actor: string): Promise<string[]> {
    const expired = (await this.pendingAuthorities()).filter((p) => p.expiresAt.getTime() <= this.now().getTime());
    for (const p of expired) await this.removePending(p.id, actor, 'authority.pending-expired').catch(() => undefined);
    return expired.map((p) => p.id);
  }

  private async attach(
    id: string,
    files: UpstreamCertificateFiles,
    actor: string,
    state: 'prepared' | 'active',
  ): Promise<AuthorityRecord[]> {
    const pending = (await this.options.store.loadPendingAuthorities()).find((p) => p.id === id);
    if (!pending)
      throw new AuthorityError(
        'ERR_AUTHORITY_NOT_FOUND',
        `no pending authority with id ${id} (request one with POST /v1/authorities/intermediate-csr)`,
      );
    const change = await attachChange({
      pending,
      files,
      authorities: await this.options.store.loadAuthorities(),
      kek: this.options.kek,
      trustDomain: this.profile().trustDomain,
      minLifetimeMs: this.options.minIntermediateLifetimeMs ?? 0,
      state,
      now: this.now(),
    });
    await this.commit(
      { insert: change.insert, transitions: change.transitions, bumpBundleSequence: change.bumpBundleSequence, completesPending: id },
      actor,
      'authority.attach',
      change.intermediate.id,
      {
        pendingId: id,
        rootId: change.root.id,
        upstreamIntermediates: change.intermediate.upstreamChainDers.length,
        upstream: pending.upstream,
      },
    );
    return [change.root, change.intermediate];
  }

  private async pluginRecords(files: PluginCaFiles, authorities: readonly AuthorityRecord[]): Promise<AuthorityRecord[]> {
    const plugin = await validatePluginCa(files, this.now());
    if (plugin.chainDers.length > 0) {
      throw new AuthorityError(
        'ERR_AUTHORITY_INVALID',
        'plug-in chains with more than one intermediate are not supported yet; sign ca-cert directly by the root',
      );
    }
    const now = this.now();
    const known = new Set(authorities.map((a) => a.sha256Fingerprint));
    const newRoot = async (der: Buffer) =>
      authorityRecord({ kind: 'root', parentId: null, state: 'prepared', certificateDer: der, privateKey: null }, this.options.kek, now);
    const selfSigned = plugin.caCertificateDer.equals(plugin.rootDer);
    const rootRecord = selfSigned
      ? await authorityRecord(
          { kind: 'root', parentId: null, state: 'prepared', certificateDer: plugin.rootDer, privateKey: plugin.privateKey },
          this.options.kek,
          now,
        )
      : await newRoot(plugin.rootDer);
    if (known.has(rootRecord.sha256Fingerprint) && selfSigned) {
      throw new AuthorityError('ERR_AUTHORITY_INVALID', `root ${rootRecord.id} is already imported`);
    }
    const records: AuthorityRecord[] = known.has(rootRecord.sha256Fingerprint) ? [] : [rootRecord];
    const rootId = rootRecord.id;
    const intermediate = selfSigned
      ? await this.createIntermediate(
          rootRecord,
          { certificateDer: plugin.rootDer, privateKey: plugin.privateKey },
          this.profile(),
          'prepared',
        )
      : await authorityRecord(
          {
            kind: 'intermediate',
            parentId: rootId,
            state: 'prepared',
            certificateDer: plugin.caCertificateDer,
            privateKey: plugin.privateKey,
          },
          this.options.kek,
          now,
        );
    if (known.has(intermediate.sha256Fingerprint))
      throw new AuthorityError('ERR_AUTHORITY_INVALID', `${intermediate.id} is already imported`);
    records.push(intermediate);
    for (const der of plugin.extraRootDers) {
      const extra = await newRoot(der);
      if (!known.has(extra.sha256Fingerprint) && !records.some((r) => r.id === extra.id)) records.push(extra);
    }
    return records;
  }

  /** The profile new authorities are made with; absent when loaded by a tool that never creates them. */
  private profile(): AuthorityProfile {
    const { trustDomain, keyType, rootTtlMs, intermediateTtlMs } = this.options;
    if (trustDomain === undefined || keyType === undefined || rootTtlMs === undefined || intermediateTtlMs === undefined) {
      throw new AuthorityError('ERR_AUTHORITY_STATE', 'this CA was loaded without an authority profile, so it cannot create authorities');
    }
    return { trustDomain, keyType, rootTtlMs, intermediateTtlMs };
  }

  /** The first intermediate, signed upstream and active at once (nothing was issued before it). */
  private async bootstrapUpstream(signer: IntermediateSigner): Promise<void> {
    const { pending, csrPem } = await this.requestIntermediate({ upstream: signer.kind }, 'meshca');
    let attached: AuthorityRecord[];
    try {
      const files = await signer.signIntermediate({ id: pending.id, csrPem, ttlMs: this.profile().intermediateTtlMs });
      attached = await this.attach(pending.id, files, 'meshca', 'active');
    } catch (error) {
      await this.removePending(pending.id, 'meshca').catch(() => undefined); // the next start asks again with a new key
      throw error;
    }
    const [root, intermediate] = attached;
    this.options.logger.info(
      { intermediateId: intermediate?.id, rootId: root?.id, upstream: signer.kind },
      `created the first intermediate CA, signed by ${signer.kind}`,
    );
  }

  private audit(actor: string, action: string, target: string, details: Record<string, unknown>) {
    return { actor, action, target, result: 'ok' as const, details, at: this.now() };
  }

  private async createPair(profile: AuthorityProfile, state: AuthorityState) {
    const now = this.now();
    const notBefore = new Date(now.getTime() - CA_BACKDATE_MS);
    const root = await createCaCertificate({
      kind: 'root',
      trustDomain: profile.trustDomain,
      keyType: profile.keyType,
      notBefore,
      notAfter: new Date(now.getTime() + profile.rootTtlMs),
    });
    const rootRecord = await authorityRecord(
      { kind: 'root', parentId: null, state, certificateDer: root.certificateDer, privateKey: root.privateKey },
      this.options.kek,
      now,
    );
    const intermediate = await this.createIntermediate(rootRecord, root, profile, state);
    return { root: rootRecord, intermediate };
  }

  private async createIntermediate(
    root: AuthorityRecord,
    issuer: { readonly certificateDer: Buffer; readonly privateKey: KeyObject },
    profile: AuthorityProfile,
    state: AuthorityState,
  ): Promise<AuthorityRecord> {
    const now = this.now();
    const notAfter = Math.min(now.getTime() + profile.intermediateTtlMs, root.notAfter.getTime());
    const cert = await createCaCertificate({
      kind: 'intermediate',
      trustDomain: profile.trustDomain,
      keyType: profile.keyType,
      notBefore: new Date(now.getTime() - CA_BACKDATE_MS),
      notAfter: new Date(notAfter),
      issuer,
    });
    return authorityRecord(
      { kind: 'intermediate', parentId: root.id, state, certificateDer: cert.certificateDer, privateKey: cert.privateKey },
      this.options.kek,
      now,
    );
  }

  private async commit(
    change: { insert?: AuthorityRecord[]; transitions?: AuthorityTransition[]; bumpBundleSequence: boolean; completesPending?: string },
    actor: string,
    action: string,
    target: string,
    details: Record<string, unknown>,
  ): Promise<void> {
    await this.options.store.applyAuthorityChange({ ...change, audit: this.audit(actor, action, target, details) });
    if (this.snapshot) await this.reload();
  }

  /** One lifecycle operation at a time in this process; store guards catch other replicas. */
  private serialize<T>(operation: () => Promise<T>): Promise<T> {
    const run = this.queue.then(operation, operation);
    this.queue = run.catch(() => undefined);
    return run;
  }
}

/** What distinguishes one stored authority set from another: every change (re-sealing too) sets updated_at. */
function authorityVersion(authorities: readonly AuthorityRecord[]): string {
  return authorities
    .map((a) => `${a.id}:${a.state}:${a.updatedAt.getTime()}`)
    .sort()
    .join(',');
}

function definedOnly(request: PrepareRequest): Partial<AuthorityProfile> {
  return Object.fromEntries(Object.entries(request).filter(([, v]) => v !== undefined));
}

function find(authorities: readonly AuthorityRecord[], id: string): AuthorityRecord {
  const record = authorities.find((a) => a.id === id);
  if (!record) throw new AuthorityError('ERR_AUTHORITY_NOT_FOUND', `no authority with id ${id}`);
  return record;
}

function activationTarget(authorities: readonly AuthorityRecord[], id: string): AuthorityRecord {
  const record = find(authorities, id);
  const target =
    record.kind === 'intermediate'
      ? record
      : authorities
          .filter((a) => a.parentId === record.id && a.state === 'prepared')
          .sort((a, b) => b.createdAt.getTime() - a.createdAt.getTime())[0];
  if (target?.state !== 'prepared') {
    throw new AuthorityError(
      'ERR_AUTHORITY_STATE',
      `${id} is ${record.state}; only a prepared authority can be activated (prepare one first)`,
      {
        state: record.state,
      },
    );
  }
  const root = find(authorities, target.parentId!);
  // A tainted root stays trusted until removed, but nothing under it may sign again.
  if (!TRUSTED_STATES.has(root.state) || root.state === 'tainted')
    throw new AuthorityError('ERR_AUTHORITY_STATE', `the root ${root.id} of ${target.id} is ${root.state}`);
  return target;
}

/** The transitions retiring the current signer, and its root when the new signer has another root. */
function retireActive(authorities: readonly AuthorityRecord[], nextRootId: string): AuthorityTransition[] {
  return authorities
    .filter((a) => a.state === 'active' && (a.kind === 'intermediate' || a.id !== nextRootId))
    .map((a) => ({ id: a.id, from: ['active'], to: 'retired' }));
}

/**
 * Taints a root and its intermediates. Refused unless another root is prepared or active: the mesh
 * must already trust a successor, or every workload would lose its trust anchor at once.
 */
function rootRevocation(authorities: readonly AuthorityRecord[], root: AuthorityRecord): RevocationPlan {
  const successors = authorities.filter((a) => a.kind === 'root' && a.id !== root.id && (a.state === 'prepared' || a.state === 'active'));
  if (successors.length === 0) {
    throw new AuthorityError(
      'ERR_AUTHORITY_STATE',
      `no other root is prepared or active, so revoking ${root.id} would leave the mesh without a trust anchor: run "meshca authorities prepare", wait until the new root is distributed, then revoke`,
      { state: root.state },
    );
  }
  const children = authorities.filter((a) => a.parentId === root.id && a.state !== 'removed' && a.state !== 'tainted');
  const transitions: AuthorityTransition[] = [root, ...children].map((a) => ({ id: a.id, from: [a.state], to: 'tainted' }));
  let replacementId: string | null = null;
  if (children.some((a) => a.state === 'active')) {
    const next = authorities
      .filter((a) => a.kind === 'intermediate' && a.state === 'prepared' && a.sealedKey && successors.some((r) => r.id === a.parentId))
      .sort((a, b) => b.createdAt.getTime() - a.createdAt.getTime())[0];
    if (!next) {
      throw new AuthorityError(
        'ERR_AUTHORITY_STATE',
        `${root.id} holds the signer and no prepared intermediate under another root can take over: prepare one first`,
        {
          state: root.state,
        },
      );
    }
    const successor = find(authorities, next.parentId!);
    transitions.push({ id: next.id, from: ['prepared'], to: 'active' });
    if (successor.state !== 'active') transitions.push({ id: successor.id, from: [successor.state], to: 'active' });
    replacementId = next.id;
  }
  return { insert: [], transitions, tainted: [root, ...children], replacementId };
}

function removalSet(authorities: readonly AuthorityRecord[], id: string): AuthorityRecord[] {
  const record = find(authorities, id);
  if (record.state === 'removed') throw new AuthorityError('ERR_AUTHORITY_STATE', `${id} is already removed`, { state: record.state });
  const affected = record.kind === 'root' ? [record, ...authorities.filter((a) => a.parentId === id && a.state !== 'removed')] : [record];
  if (affected.some((a) => a.state === 'active')) {
    throw new AuthorityError('ERR_AUTHORITY_STATE', `${id} is or contains the active signing authority; activate another one first`, {
      state: record.state,
    });
  }
  return affected;
}
