import { H2Code, type H2Connection } from './h2/connection.js';

/** How long a client connection may live, idle, and go without answering a ping. */
export interface SessionLifetime {
  /** Ping the client this often; no answer within keepaliveTimeoutMs drops the connection. 0 = never. */
  readonly keepaliveTimeMs: number;
  readonly keepaliveTimeoutMs: number;
  /** A connection with no call open this long gets GOAWAY. 0 = never. */
  readonly maxConnectionIdleMs: number;
  /** A connection this old (±10 %, so replicas' clients do not all reconnect at once) gets GOAWAY. 0 = never. */
  readonly maxConnectionAgeMs: number;
  /** After an age GOAWAY, calls still open get this long before the connection is destroyed. */
  readonly maxConnectionAgeGraceMs: number;
}

/** Node's timers overflow (and fire at once) beyond this; longer periods mean "never". */
const MAX_TIMER_MS = 2 ** 31 - 1;
const enabled = (ms: number) => ms > 0 && ms < MAX_TIMER_MS;

/**
 * Every open client connection, with its keepalive, idle and age timers. Closing drains them:
 * GOAWAY first, so calls in progress finish and clients reconnect elsewhere, then destroy.
 */
export class SessionRegistry {
  readonly #sessions = new Set<H2Connection>();

  constructor(private readonly lifetime: SessionLifetime) {}

  track(session: H2Connection): void {
    this.#sessions.add(session);
    const timers = new SessionTimers(session, this.lifetime);
    session.onClose(() => {
      timers.stop();
      this.#sessions.delete(session);
    });
  }

  /** GOAWAY to every connection; waits for their calls up to timeoutMs, then destroys what is left. */
  async drain(timeoutMs: number): Promise<void> {
    const open = [...this.#sessions];
    const closed = open.map((session) => new Promise<void>((resolve) => session.goaway(H2Code.NO_ERROR, resolve)));
    let timer: NodeJS.Timeout | undefined;
    const late = new Promise<void>((resolve) => {
      timer = setTimeout(() => {
        for (const session of this.#sessions) session.destroy();
        resolve();
      }, timeoutMs);
    });
    await Promise.race([Promise.all(closed), late]);
    clearTimeout(timer);
  }
}

class SessionTimers {
  #open = 0;
  #idle: NodeJS.Timeout | undefined;
  #keepalive: NodeJS.Timeout | undefined;
  #age: NodeJS.Timeout | undefined;
  #grace: NodeJS.Timeout | undefined;

  constructor(
    private readonly session: H2Connection,
    private readonly lifetime: SessionLifetime,
  ) {
    if (enabled(lifetime.maxConnectionIdleMs)) {
      session.onActivity = (open) => this.#activity(open);
      this.#armIdle();
    }
    if (enabled(lifetime.maxConnectionAgeMs)) {
      const jitter = (Math.random() * 2 - 1) * (lifetime.maxConnectionAgeMs / 10);
      this.#age = unref(setTimeout(() => this.#retire(), lifetime.maxConnectionAgeMs + jitter));
    }
    this.#scheduleKeepalive();
  }

  stop(): void {
    for (const timer of [this.#idle, this.#keepalive, this.#age, this.#grace]) clearTimeout(timer);
  }

  /** The idle timer runs only while no stream is open. */
  #activity(open: number): void {
    const wasOpen = this.#open;
    this.#open = open;
    if (open > 0 && wasOpen === 0) clearTimeout(this.#idle);
    else if (open === 0 && wasOpen > 0 && !this.session.closed) this.#armIdle();
  }

  #armIdle(): void {
    this.#idle = unref(setTimeout(() => this.#goaway(), this.lifetime.maxConnectionIdleMs));
  }

  #retire(): void {
    this.#goaway();
    if (enabled(this.lifetime.maxConnectionAgeGraceMs)) {
      this.#grace = unref(setTimeout(() => this.session.destroy(), this.lifetime.maxConnectionAgeGraceMs));
    }
  }

  /** GOAWAY(NO_ERROR): calls already open finish, new ones go to a new connection. */
  #goaway(): void {
    this.session.goaway(H2Code.NO_ERROR);
  }

  #scheduleKeepalive(): void {
    if (!enabled(this.lifetime.keepaliveTimeMs)) return;
    this.#keepalive = unref(setTimeout(() => this.#ping(), this.lifetime.keepaliveTimeMs));
  }

  #ping(): void {
    if (this.session.closed) return;
    const timeout = unref(setTimeout(() => this.session.destroy(), this.lifetime.keepaliveTimeoutMs));
    this.#keepalive = timeout;
    this.session.ping((error) => {
      clearTimeout(timeout);
      if (error) this.session.destroy();
      else this.#scheduleKeepalive();
    });
  }
}

function unref(timer: NodeJS.Timeout): NodeJS.Timeout {
  timer.unref();
  return timer;
}
