import type { Logger } from 'pino';
import type { AuthorityRecord, Store } from '../store/types.js';
import { ACTIVATE_FRACTION, lifetimePoint, preparedSuccessor } from './auto-rotation.js';
import type { CertificateAuthority, IntermediateSigner } from './lifecycle.js';
import { PassLoop, thresholdDelay } from './pass-loop.js';

/** The actor recorded in the audit log for every step the renewal takes. */
export const UPSTREAM_ACTOR = 'upstream-renewal';
/** A new intermediate is requested upstream at 2/3 of the active one's lifetime. */
export const RENEW_FRACTION = 2 / 3;

export type UpstreamStep =
  | { readonly kind: 'wait'; readonly reason: string; readonly until?: Date }
  /** Ask the upstream CA for a new intermediate (a new key), attached as prepared. */
  | { readonly kind: 'renew'; readonly reason: string }
  | { readonly kind: 'activate'; readonly id: string; readonly reason: string };

/**
 * Decided from the stored authorities alone, so a restart resumes where it stopped: a prepared
 * successor is activated on the auto-rotation schedule (5/6, or later if prepared late); without one,
 * a new intermediate is requested at 2/3 of the active one's lifetime, or at once when the active
 * intermediate is not from an upstream CA (its root's key is meshca's own).
 */
export function planUpstreamRenewal(authorities: readonly AuthorityRecord[], now: Date): UpstreamStep {
  const active = authorities.find((a) => a.kind === 'intermediate' && a.state === 'active');
  if (!active) return { kind: 'wait', reason: 'there is no active signing authority' };
  const successor = preparedSuccessor(authorities, active, now);
  if (successor) return successor;
  const root = authorities.find((a) => a.id === active.parentId);
  if (root?.sealedKey) return { kind: 'renew', reason: `${active.id} is signed by meshca's own root ${root.id}, not by the upstream CA` };
  const renewAt = lifetimePoint(active, RENEW_FRACTION);
  if (now.getTime() >= renewAt) return { kind: 'renew', reason: `${active.id} passed 2/3 of its lifetime` };
  return { kind: 'wait', reason: `${active.id} is renewed upstream at 2/3 of its lifetime`, until: new Date(renewAt) };
}

export interface UpstreamRenewalOptions {
  readonly ca: CertificateAuthority;
  readonly store: Pick<Store, 'loadAuthorities'>;
  readonly signer: IntermediateSigner;
  readonly logger: Logger;
  /** Lifetime asked of the upstream CA for each new intermediate. */
  readonly intermediateTtlMs: number;
  readonly checkIntervalMs: number;
  /** Backoff after a failed request: doubles from the first delay up to the last. */
  readonly retry: { readonly initialMs: number; readonly maxMs: number };
  /** Reports each request to the upstream CA, and whether renewal is overdue (past 5/6 without a successor). */
  readonly onAttempt?: (result: 'ok' | 'error', overdue: boolean) => void;
  readonly now?: () => Date;
}

export interface UpstreamPass {
  readonly step: UpstreamStep;
  readonly performed: boolean;
  readonly error?: Error;
}

/**
 * Keeps the intermediate signed by the upstream CA: a new key and CSR each time, attached as
 * prepared, then activated with the usual overlap. The current intermediate keeps signing while the
 * upstream is unreachable; failures are retried with backoff and logged louder once expiry nears.
 */
export class UpstreamRenewer extends PassLoop<UpstreamPass> {
  private readonly now: () => Date;
  private failures = 0;
  /** Aborts a request still waiting upstream (a CertificateRequest not yet Ready) on stop. */
  private readonly abort = new AbortController();

  constructor(private readonly options: UpstreamRenewalOptions) {
    super(options.logger, 'upstream renewal', options.checkIntervalMs);
    this.now = options.now ?? (() => new Date());
  }

  get consecutiveFailures(): number {
    return this.failures;
  }

  /** Backoff after a failure, else as automatic rotation: soon after a step, else the next threshold. */
  nextDelay(pass: UpstreamPass): number {
    const { checkIntervalMs, retry } = this.options;
    if (pass.error) return Math.min(retry.maxMs, retry.initialMs * 2 ** Math.min(30, this.failures - 1));
    return thresholdDelay(pass.performed, pass.step.kind === 'wait' ? pass.step.until : undefined, this.now(), checkIntervalMs);
  }

  protected override onStop(): void {
    this.abort.abort();
  }

  protected async pass(): Promise<UpstreamPass> {
    const { ca, logger, signer } = this.options;
    const authorities = await this.options.store.loadAuthorities();
    const step = planUpstreamRenewal(authorities, this.now());
    try {
      if (step.kind === 'activate') {
        const activated = await ca.activate(step.id, UPSTREAM_ACTOR);
        logger.info(
          { intermediateId: activated.id, rootId: activated.parentId, upstream: signer.kind },
          `upstream renewal: activated ${activated.id} (${step.reason})`,
        );
      } else if (step.kind === 'renew') {
        const attached = await this.renew();
        logger.info(
          { intermediateId: attached.id, rootId: attached.parentId, notAfter: attached.notAfter, upstream: signer.kind },
          `upstream renewal: ${signer.kind} signed a new intermediate ${attached.id}, prepared (${step.reason})`,
        );
      }
      return { step, performed: step.kind !== 'wait' };
    } catch (error) {
      return { step, performed: false, error: this.failed(error as Error, step, authorities) };
    }
  }

  /** One request upstream; a pending record of an earlier, interrupted request is dropped first. */
  private async renew(): Promise<AuthorityRecord> {
    const { ca, signer } = this.options;
    for (const stale of (await ca.pendingAuthorities()).filter((p) => p.upstream === signer.kind))
      await ca.removePending(stale.id, UPSTREAM_ACTOR).catch(() => undefined);
    const { pending, csrPem } = await ca.requestIntermediate({ upstream: signer.kind }, UPSTREAM_ACTOR);
    try {
      const files = await signer.signIntermediate({
        id: pending.id,
        csrPem,
        ttlMs: this.options.intermediateTtlMs,
        signal: this.abort.signal,
      });
      const attached = await ca.attachCertificate(pending.id, files, UPSTREAM_ACTOR);
      this.failures = 0;
      this.options.onAttempt?.('ok', false);
      return attached.find((a) => a.kind === 'intermediate')!;
    } catch (error) {
      await ca.removePending(pending.id, UPSTREAM_ACTOR).catch(() => undefined);
      throw error;
    }
  }

  private failed(error: Error, step: UpstreamStep, authorities: readonly AuthorityRecord[]): Error {
    this.failures++;
    const active = authorities.find((a) => a.kind === 'intermediate' && a.state === 'active');
    const overdue = active !== undefined && this.now().getTime() >= lifetimePoint(active, ACTIVATE_FRACTION);
    this.options.onAttempt?.('error', overdue);
    const fields = {
      err: error,
      step: step.kind,
      failures: this.failures,
      upstream: this.options.signer.kind,
      activeId: active?.id,
      activeNotAfter: active?.notAfter,
    };
    const message = `upstream renewal: ${step.kind} failed (${this.failures} in a row), meshca keeps signing with ${active?.id ?? 'the current intermediate'} and retries: ${error.message}`;
    if (overdue)
      this.options.logger.error(
        fields,
        `${message}; the intermediate expires at ${active!.notAfter.toISOString()}: fix the upstream CA before then`,
      );
    else this.options.logger.warn(fields, message);
    return error;
  }
}
