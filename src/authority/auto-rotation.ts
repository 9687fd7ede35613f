import type { Logger } from 'pino';
import { KEY_TYPES, type KeyType } from '../pki/keys.js';
import type { SingletonGate } from '../store/fence.js';
import type { AuthorityRecord, Store } from '../store/types.js';
import { AuthorityError } from './errors.js';
import type { CertificateAuthority } from './lifecycle.js';
import { PassLoop, thresholdDelay } from './pass-loop.js';
import { TRUSTED_STATES } from './snapshot.js';

/** The actor recorded in the audit log for every automatic step. */
export const AUTO_ROTATE_ACTOR = 'auto-rotate';
/** SPIRE's thresholds, as fractions of the active intermediate's lifetime. */
export const PREPARE_FRACTION = 1 / 2;
export const ACTIVATE_FRACTION = 5 / 6;

/**
 * The part of an authority's validity that counts for rotation: from the later of its notBefore and
 * the moment meshca created (or imported) it, to its notAfter. meshca backdates its CA certificates
 * by a few minutes for clock skew; measured from notBefore, that backdate would dominate short
 * lifetimes (minutes, in tests) and make every threshold "already passed". For real lifetimes
 * (months, years) the two are the same to within a rounding error.
 */
export function rotationLifetime(authority: AuthorityRecord): { readonly start: number; readonly end: number } {
  return { start: Math.max(authority.notBefore.getTime(), authority.createdAt.getTime()), end: authority.notAfter.getTime() };
}

/** The instant at which `fraction` of the authority's lifetime has passed (epoch ms). */
export function lifetimePoint(authority: AuthorityRecord, fraction: number): number {
  const { start, end } = rotationLifetime(authority);
  return start + (end - start) * fraction;
}

export type RotationStep =
  /** Nothing to do before `until` (if known). */
  | { readonly kind: 'wait'; readonly reason: string; readonly until?: Date }
  /** A new root and intermediate, published in the bundle now, activated later. */
  | { readonly kind: 'prepare'; readonly reason: string; readonly keyType: KeyType }
  /** A new intermediate under the (young enough) active root, active at once; the bundle is unchanged. */
  | { readonly kind: 'rotate-intermediate'; readonly reason: string }
  /** The prepared intermediate becomes the signer. */
  | { readonly kind: 'activate'; readonly id: string; readonly reason: string }
  /** Automatic rotation cannot proceed; an operator must act. */
  | { readonly kind: 'blocked'; readonly reason: string };

export interface RotationPlan {
  readonly step: RotationStep;
  /** Retired roots to try to remove (the store refuses while unexpired leaves chain to them). */
  readonly retiredRoots: readonly string[];
  /** The thresholds of the active intermediate, for logs and status. */
  readonly activeId?: string;
  readonly prepareAt?: Date;
  readonly activateAt?: Date;
}

export interface RotationProfile {
  /** Lifetime of new intermediates (--intermediate-ttl): a root that would cut it short is renewed. */
  readonly intermediateTtlMs: number;
  /** Used when the active authority's key type is not one meshca can generate. */
  readonly keyType: KeyType;
}

/**
 * Decides the next automatic step from the stored authorities alone, so it is the same before and
 * after a restart (the store is the journal; nothing about the rotation lives in memory):
 *
 * - A usable prepared intermediate exists → activate it at 5/6 of the active intermediate's lifetime
 *   (or, if it was prepared late, halfway between its preparation and the active one's expiry, so it
 *   always gets some time to reach workloads' bundles and old leaves some time to drain). An
 *   authority an operator prepared or imported counts too: it is never prepared twice.
 * - Else, at 1/2 of the active intermediate's lifetime:
 *   - if the active root is past half its own lifetime at the takeover (5/6), or would cut the next
 *     intermediate short (expires before it would): prepare a new root + intermediate pair now (the new root joins the bundle, and has until
 *     5/6 to reach every workload with their next certificate);
 *   - otherwise the root is kept and only the intermediate is renewed, at 5/6, with
 *     rotate-intermediate: an intermediate under an already-trusted root needs no propagation
 *     (workloads send it with their leaf), so a separate prepared phase would change nothing.
 * - Intermediates under an external (plug-in) root are never replaced by a self-signed authority:
 *   that is reported as blocked until an operator imports the next plug-in CA (which is then
 *   activated on schedule).
 */
export function planRotation(authorities: readonly AuthorityRecord[], now: Date, profile: RotationProfile): RotationPlan {
  const retiredRoots = authorities.filter((a) => a.kind === 'root' && a.state === 'retired').map((a) => a.id);
  const active = authorities.find((a) => a.kind === 'intermediate' && a.state === 'active');
  if (!active) return { step: { kind: 'wait', reason: 'there is no active signing authority' }, retiredRoots };
  const byId = new Map(authorities.map((a) => [a.id, a]));
  const root = active.parentId ? byId.get(active.parentId) : undefined;
  const t = now.getTime();
  const prepareAt = lifetimePoint(active, PREPARE_FRACTION);
  const activateAt = lifetimePoint(active, ACTIVATE_FRACTION);
  const thresholds = { activeId: active.id, prepareAt: new Date(prepareAt), activateAt: new Date(activateAt) };
  const plan = (step: RotationStep): RotationPlan => ({ step, retiredRoots, ...thresholds });

  const successor = preparedSuccessor(authorities, active, now);
  if (successor) return plan(successor);
  if (t < prepareAt) return plan({ kind: 'wait', reason: `${active.id} is before half of its lifetime`, until: new Date(prepareAt) });
  if (!root || root.sealedKey === null) {
    return plan({
      kind: 'blocked',
      reason: `${active.id} is under an external root (plug-in CA) that meshca cannot sign with; import the next plug-in CA ("meshca authorities import") and it is activated at 5/6`,
    });
  }
  // Judge the root at the moment the next intermediate would take over (5/6), not now: a root that
  // crosses its half-life between 1/2 and 5/6 is renewed on time rather than in a rush at 5/6.
  const takeover = Math.max(t, activateAt);
  const rootHalf = lifetimePoint(root, PREPARE_FRACTION);
  if (takeover >= rootHalf || root.notAfter.getTime() < takeover + profile.intermediateTtlMs) {
    const keyType = (KEY_TYPES as readonly string[]).includes(active.keyType) ? (active.keyType as KeyType) : profile.keyType;
    const why = takeover >= rootHalf ? 'is past half of its lifetime by 5/6' : 'would cut the next intermediate short';
    return plan({ kind: 'prepare', keyType, reason: `${active.id} passed half of its lifetime and its root ${root.id} ${why}` });
  }
  if (t >= activateAt)
    return plan({
      kind: 'rotate-intermediate',
      reason: `${active.id} passed 5/6 of its lifetime; its root ${root.id} is kept (before half of its lifetime)`,
    });
  return plan({
    kind: 'wait',
    reason: `${active.id} gets a new intermediate under ${root.id} at 5/6 of its lifetime`,
    until: new Date(activateAt),
  });
}

/**
 * The step for the newest usable prepared intermediate, if there is one: activate it at 5/6 of the
 * active one's lifetime, or halfway between its preparation and the active one's expiry if it was
 * prepared late, so it has time to reach workloads and old leaves have time to drain.
 */
export function preparedSuccessor(
  authorities: readonly AuthorityRecord[],
  active: AuthorityRecord,
  now: Date,
): Extract<RotationStep, { kind: 'activate' | 'wait' }> | undefined {
  const byId = new Map(authorities.map((a) => [a.id, a]));
  const t = now.getTime();
  const candidate = authorities
    .filter((a) => a.kind === 'intermediate' && a.state === 'prepared' && a.sealedKey !== null && a.notAfter.getTime() > t)
    .filter((a) => TRUSTED_STATES.has(byId.get(a.parentId ?? '')?.state ?? 'removed'))
    .sort((a, b) => b.createdAt.getTime() - a.createdAt.getTime())[0];
  if (!candidate) return undefined;
  const prepared = candidate.createdAt.getTime();
  const due = Math.max(lifetimePoint(active, ACTIVATE_FRACTION), prepared + Math.max(0, active.notAfter.getTime() - prepared) / 2);
  if (t >= due)
    return {
      kind: 'activate',
      id: candidate.id,
      reason: `${active.id} passed 5/6 of its lifetime; ${candidate.id} was prepared at ${new Date(prepared).toISOString()}`,
    };
  return {
    kind: 'wait',
    reason: `${candidate.id} is prepared; it becomes the signer at ${new Date(due).toISOString()}`,
    until: new Date(due),
  };
}

export interface AutoRotationOptions {
  readonly ca: CertificateAuthority;
  readonly store: Pick<Store, 'loadAuthorities'>;
  readonly logger: Logger;
  readonly intermediateTtlMs: number;
  readonly keyType: KeyType;
  /** How often the thresholds are checked (a pass is also scheduled at the next known threshold). */
  readonly checkIntervalMs: number;
  /** Injectable clock (tests). It must be the CertificateAuthority's clock too. */
  readonly now?: () => Date;
  /** Replicas on a shared store: only the lease holder takes steps; the others just plan. */
  readonly singleton?: SingletonGate;
}

export interface AutoRotationPass {
  readonly plan: RotationPlan;
  /** The step that was carried out ('wait' and 'blocked' carry out nothing). */
  readonly performed: RotationStep['kind'] | null;
  /** Root ids removed in this pass. */
  readonly removed: readonly string[];
}

/**
 * SPIRE-style automatic rotation (docs/architecture.md), off unless --auto-rotate. Every step it takes is
 * one of CertificateAuthority's journaled operations (one store transaction each, audited with the
 * actor "auto-rotate"), and every pass re-reads the store, so a restart resumes where it stopped.
 */
export class AutoRotator extends PassLoop<AutoRotationPass> {
  private readonly now: () => Date;
  private lastReport = '';

  constructor(private readonly options: AutoRotationOptions) {
    super(options.logger, 'auto-rotation', options.checkIntervalMs, options.singleton);
    this.now = options.now ?? (() => new Date());
  }

  /** The check interval, or sooner when the plan knows its next threshold; soon after a step. */
  nextDelay(pass: AutoRotationPass): number {
    const until = pass.plan.step.kind === 'wait' ? pass.plan.step.until : undefined;
    return thresholdDelay(pass.performed !== null, until, this.now(), this.options.checkIntervalMs);
  }

  /** What a replica without the lease reports: the plan, nothing carried out. */
  protected async standby(): Promise<AutoRotationPass> {
    return { plan: planRotation(await this.options.store.loadAuthorities(), this.now(), this.options), performed: null, removed: [] };
  }

  protected async pass(): Promise<AutoRotationPass> {
    const { ca, logger } = this.options;
    const plan = planRotation(await this.options.store.loadAuthorities(), this.now(), this.options);
    const step = plan.step;
    let performed: RotationStep['kind'] | null = null;
    const log = { activeId: plan.activeId, prepareAt: plan.prepareAt, activateAt: plan.activateAt };
    try {
      if (step.kind === 'prepare') {
        const { root, intermediate } = await ca.prepare({ keyType: step.keyType }, AUTO_ROTATE_ACTOR);
        logger.info(
          { ...log, rootId: root.id, intermediateId: intermediate.id, keyType: step.keyType, bundleSequence: ca.current().bundleSequence },
          `auto-rotation: prepared a new root and intermediate (${step.reason})`,
        );
        performed = step.kind;
      } else if (step.kind === 'activate') {
        const activated = await ca.activate(step.id, AUTO_ROTATE_ACTOR);
        logger.info(
          { ...log, intermediateId: activated.id, rootId: activated.parentId },
          `auto-rotation: activated ${activated.id} (${step.reason})`,
        );
        performed = step.kind;
      } else if (step.kind === 'rotate-intermediate') {
        const intermediate = await ca.rotateIntermediate(AUTO_ROTATE_ACTOR);
        logger.info(
          { ...log, intermediateId: intermediate.id, rootId: intermediate.parentId },
          `auto-rotation: rotated the intermediate (${step.reason})`,
        );
        performed = step.kind;
      } else {
        const until = step.kind === 'wait' && step.until ? ` (next step due ${step.until.toISOString()})` : '';
        this.reportOnce(
          step.kind === 'blocked' ? 'warn' : 'info',
          `auto-rotation: ${step.kind === 'blocked' ? 'blocked' : 'waiting'}: ${step.reason}${until}`,
          log,
        );
      }
    } catch (error) {
      logger.warn(
        { err: error, ...log, step: step.kind },
        `auto-rotation: ${step.kind} failed, retrying on the next check: ${(error as Error).message}`,
      );
    }
    const removed: string[] = [];
    for (const id of plan.retiredRoots) {
      try {
        const result = await ca.remove(id, false, AUTO_ROTATE_ACTOR);
        removed.push(id);
        logger.info(
          { rootId: id, removed: result.removed, bundleSequence: ca.current().bundleSequence },
          `auto-rotation: removed retired root ${id}; no unexpired certificate chains to it`,
        );
      } catch (error) {
        if (error instanceof AuthorityError && error.code === 'ERR_AUTHORITY_IN_USE') {
          logger.debug(
            { rootId: id, unexpiredCertificates: error.details.unexpiredCertificates },
            `auto-rotation: retired root ${id} still has unexpired certificates`,
          );
        } else {
          logger.warn({ err: error, rootId: id }, `auto-rotation: removing retired root ${id} failed: ${(error as Error).message}`);
        }
      }
    }
    return { plan, performed, removed };
  }

  private reportOnce(level: 'warn' | 'info', message: string, fields: Record<string, unknown>): void {
    if (message === this.lastReport) return;
    this.lastReport = message;
    this.options.logger[level](fields, message);
  }
}

/** Starts automatic rotation and logs its schedule. */
export function startAutoRotation(options: AutoRotationOptions): AutoRotator {
  options.logger.info(
    { checkInterval: `${options.checkIntervalMs}ms`, prepareAt: 'half of the active intermediate lifetime', activateAt: '5/6 of it' },
    'automatic rotation is on (--auto-rotate): prepare at 1/2, activate at 5/6, remove retired roots once their certificates expired',
  );
  return new AutoRotator(options).start();
}
