import pg from 'pg';
import type { PoolConfig } from 'pg';

/** The one NOTIFY channel: every authority, revocation and deny-list change is announced on it, at commit. */
export const CHANGE_CHANNEL = 'meshca_changes';

import type { StoreChangeEvent } from '../types.js';

export type StoreChange = Exclude<StoreChangeEvent, 'resync'>;
/** 'resync': re-read everything (periodic backstop, or the feed reconnected and may have missed changes). */
export type ChangeEvent = StoreChangeEvent;

export interface ChangeFeedOptions {
  readonly logger?: { warn(obj: object, msg: string): void; info(obj: object, msg: string): void };
  /** Backstop re-read period: a lost notification is noticed within this long. */
  readonly resyncIntervalMs?: number;
  readonly reconnectDelayMs?: number;
}

const DEFAULT_RESYNC_MS = 2_000;
const DEFAULT_RECONNECT_MS = 1_000;

/**
 * Other replicas' changes, from LISTEN on a dedicated connection (a pooled one would be handed to
 * queries and lose the subscription). A dropped connection is re-established after a delay and
 * announces 'resync', since notifications sent meanwhile are gone; a timer announces 'resync' too,
 * in case a notification is lost in some way nobody noticed.
 */
export class ChangeFeed {
  private client: pg.Client | undefined;
  private readonly listeners: ((event: ChangeEvent) => void)[] = [];
  private readonly resyncTimer: NodeJS.Timeout;
  private reconnectTimer: NodeJS.Timeout | undefined;
  private stopped = false;
  private listening = false;

  constructor(
    private readonly config: PoolConfig,
    private readonly options: ChangeFeedOptions = {},
  ) {
    this.resyncTimer = setInterval(() => this.emit('resync'), options.resyncIntervalMs ?? DEFAULT_RESYNC_MS);
    this.resyncTimer.unref();
    void this.connect();
  }

  /** Whether the LISTEN connection is up (readiness reports it). */
  get connected(): boolean {
    return this.listening;
  }

  subscribe(listener: (event: ChangeEvent) => void): () => void {
    this.listeners.push(listener);
    return () => {
      const i = this.listeners.indexOf(listener);
      if (i >= 0) this.listeners.splice(i, 1);
    };
  }

  async close(): Promise<void> {
    this.stopped = true;
    clearInterval(this.resyncTimer);
    clearTimeout(this.reconnectTimer);
    this.listening = false;
    await this.client?.end().catch(() => undefined);
  }

  private async connect(): Promise<void> {
    if (this.stopped) return;
    const client = new pg.Client({ ...this.config, application_name: `${this.config.application_name ?? 'meshca'} (changes)` });
    this.client = client;
    client.on('notification', (message) => {
      if (message.channel === CHANGE_CHANNEL) this.emit(isChange(message.payload) ? message.payload : 'resync');
    });
    client.on('error', (error) => this.lost(client, error));
    client.on('end', () => this.lost(client, new Error('connection ended')));
    try {
      await client.connect();
      await client.query(`LISTEN ${CHANGE_CHANNEL}`);
    } catch (error) {
      this.lost(client, error as Error);
      return;
    }
    const wasDown = !this.listening;
    this.listening = true;
    // Changes made while the feed was down were never delivered: re-read everything.
    if (wasDown) this.emit('resync');
  }

  private lost(client: pg.Client, error: Error): void {
    if (this.client !== client || this.stopped) return;
    if (this.listening) this.options.logger?.warn({ err: error }, 'lost the PostgreSQL change feed; reconnecting');
    this.listening = false;
    this.client = undefined;
    client.removeAllListeners('end');
    void client.end().catch(() => undefined);
    clearTimeout(this.reconnectTimer);
    this.reconnectTimer = setTimeout(() => void this.connect(), this.options.reconnectDelayMs ?? DEFAULT_RECONNECT_MS);
    this.reconnectTimer.unref();
  }

  private emit(event: ChangeEvent): void {
    for (const listener of this.listeners) {
      try {
        listener(event);
      } catch (error) {
        this.options.logger?.warn({ err: error }, 'a store change listener threw; ignored');
      }
    }
  }
}

function isChange(payload: string | undefined): payload is StoreChange {
  return payload === 'authorities' || payload === 'revocations' || payload === 'denied';
}
