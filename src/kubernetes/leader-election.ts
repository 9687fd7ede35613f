/**
 * Lease-based leader election (coordination.k8s.io/v1), the protocol of client-go's leaderelection:
 * the holder renews spec.renewTime every retry period; others take over once they have seen the same
 * record unchanged for leaseDurationSeconds (measured on their own clock, so clock skew between
 * replicas does not matter). A leader that cannot renew within the renew deadline steps down before
 * anyone else may acquire, and a leader that stops releases the lease so a successor need not wait.
 */

import { randomBytes } from 'node:crypto';
import { hostname } from 'node:os';
import type { Logger } from 'pino';
import { Resource } from './api.js';
import type { KubeClient } from './client.js';
import { microTime, type Lease, type LeaseSpec } from './types.js';

export interface LeaderElectorOptions {
  readonly client: KubeClient;
  readonly namespace: string;
  readonly name: string;
  /** Unique per replica (default: hostname + random suffix). */
  readonly identity?: string;
  readonly leaseDurationMs: number;
  /** Default 2/3 of the lease duration. */
  readonly renewDeadlineMs?: number;
  /** Default 1/5 of the lease duration. */
  readonly retryPeriodMs?: number;
  readonly logger: Logger;
  readonly onStartedLeading: () => void;
  readonly onStoppedLeading: () => void;
}

export class LeaderElector {
  readonly identity: string;
  readonly #leases: Resource<Lease>;
  readonly #options: LeaderElectorOptions;
  readonly #renewDeadlineMs: number;
  readonly #retryPeriodMs: number;
  #leader = false;
  #lastRenewal = 0;
  #observed: { key: string; at: number } | undefined;
  #timer: NodeJS.Timeout | undefined;
  #running: Promise<void> | undefined;
  #stopped = false;

  constructor(options: LeaderElectorOptions) {
    this.#options = options;
    this.identity = options.identity ?? `${hostname()}_${randomBytes(4).toString('hex')}`;
    this.#leases = Resource.leases(options.client);
    this.#renewDeadlineMs = options.renewDeadlineMs ?? Math.round((options.leaseDurationMs * 2) / 3);
    this.#retryPeriodMs = options.retryPeriodMs ?? Math.max(100, Math.round(options.leaseDurationMs / 5));
    if (this.#renewDeadlineMs >= options.leaseDurationMs)
      throw new RangeError('the renew deadline must be shorter than the lease duration');
  }

  isLeader(): boolean {
    return this.#leader;
  }

  start(): void {
    this.#schedule(0);
  }

  /** Stops campaigning; a leader stops its work first, then releases the lease. */
  async stop(): Promise<void> {
    this.#stopped = true;
    clearTimeout(this.#timer);
    await this.#running;
    if (!this.#leader) return;
    this.#stepDown('stopping');
    try {
      const lease = await this.#leases.get(this.#options.namespace, this.#options.name);
      if (lease?.spec?.holderIdentity !== this.identity) return;
      const now = microTime(new Date());
      await this.#leases.update(this.#options.namespace, {
        ...lease,
        spec: { ...lease.spec, holderIdentity: '', leaseDurationSeconds: 1, acquireTime: now, renewTime: now },
      });
      this.#options.logger.info({ lease: this.#leaseName() }, 'released the leader lease');
    } catch (error) {
      this.#options.logger.warn(
        { err: error, lease: this.#leaseName() },
        'could not release the leader lease; a successor takes over when it expires',
      );
    }
  }

  #schedule(delayMs: number): void {
    if (this.#stopped) return;
    this.#timer = setTimeout(() => {
      this.#running = this.#tick().finally(() => {
        this.#running = undefined;
        // Followers jitter their attempts so replicas do not all hit the API at once.
        this.#schedule(this.#leader ? this.#retryPeriodMs : this.#retryPeriodMs * (1 + Math.random() * 0.2));
      });
    }, delayMs);
    this.#timer.unref();
  }

  async #tick(): Promise<void> {
    let held: boolean;
    try {
      held = await this.#tryAcquireOrRenew();
    } catch (error) {
      this.#options.logger.warn({ err: error, lease: this.#leaseName() }, 'leader election: cannot reach the lease');
      held = false;
    }
    if (this.#stopped) return;
    const now = Date.now();
    if (held) {
      this.#lastRenewal = now;
      if (!this.#leader) {
        this.#leader = true;
        this.#options.logger.info({ identity: this.identity, lease: this.#leaseName() }, 'became the leader');
        this.#options.onStartedLeading();
      }
    } else if (this.#leader && now - this.#lastRenewal >= this.#renewDeadlineMs) {
      this.#stepDown('could not renew the lease within the renew deadline');
    }
  }

  #stepDown(reason: string): void {
    if (!this.#leader) return;
    this.#leader = false;
    this.#options.logger.info({ identity: this.identity, lease: this.#leaseName(), reason }, 'stopped leading');
    this.#options.onStoppedLeading();
  }

  async #tryAcquireOrRenew(): Promise<boolean> {
    const { namespace, name } = this.#options;
    const now = new Date();
    const durationSeconds = Math.max(1, Math.ceil(this.#options.leaseDurationMs / 1000));
    const lease = await this.#leases.get(namespace, name);
    if (lease === undefined) {
      const spec: LeaseSpec = {
        holderIdentity: this.identity,
        leaseDurationSeconds: durationSeconds,
        acquireTime: microTime(now),
        renewTime: microTime(now),
        leaseTransitions: 0,
      };
      return this.#write(() =>
        this.#leases.create(namespace, { apiVersion: 'coordination.k8s.io/v1', kind: 'Lease', metadata: { name, namespace }, spec }),
      );
    }
    const spec = lease.spec ?? {};
    const holder = spec.holderIdentity ?? '';
    const key = JSON.stringify([holder, spec.renewTime, spec.acquireTime, spec.leaseDurationSeconds, lease.metadata.resourceVersion]);
    if (this.#observed?.key !== key) this.#observed = { key, at: now.getTime() };
    if (holder !== '' && holder !== this.identity) {
      const expiresAt = this.#observed.at + (spec.leaseDurationSeconds ?? durationSeconds) * 1000;
      if (now.getTime() < expiresAt) return false;
    }
    const renewing = holder === this.identity;
    const next: LeaseSpec = {
      holderIdentity: this.identity,
      leaseDurationSeconds: durationSeconds,
      acquireTime: renewing ? (spec.acquireTime ?? microTime(now)) : microTime(now),
      renewTime: microTime(now),
      leaseTransitions: (spec.leaseTransitions ?? 0) + (renewing ? 0 : 1),
    };
    return this.#write(() => this.#leases.update(namespace, { ...lease, spec: next }));
  }

  /** A 409 (someone else wrote first) is a lost race, not an error. */
  async #write(write: () => Promise<Lease>): Promise<boolean> {
    try {
      await write();
      return true;
    } catch (error) {
      if ((error as { status?: number }).status === 409) return false;
      throw error;
    }
  }

  #leaseName(): string {
    return `${this.#options.namespace}/${this.#options.name}`;
  }
}
