import type { Logger } from 'pino';

export interface LongRunning {
  /** Graceful stop; the process exits 0 once it resolves, 1 if it rejects. */
  close(): Promise<void>;
  /** SIGHUP. */
  reload(): Promise<void>;
}

/** SIGTERM/SIGINT stop `name` once, cleanly; SIGHUP reloads it. For the long-running commands (serve, agent). */
export function stopOnSignals(logger: Logger, name: string, running: LongRunning): void {
  let stopping = false;
  const stop = (signal: string) => {
    if (stopping) return;
    stopping = true;
    logger.info({ signal }, `${name} shutting down`);
    running.close().then(
      () => {
        logger.info(`${name} stopped cleanly`);
        logger.flush();
        process.exit(0);
      },
      (error: unknown) => {
        logger.error({ err: error }, `${name}: unclean shutdown`);
        process.exit(1);
      },
    );
  };
  process.on('SIGTERM', () => stop('SIGTERM'));
  process.on('SIGINT', () => stop('SIGINT'));
  process.on(
    'SIGHUP',
    () =>
      void running.reload().then(
        () => logger.info(`${name} reloaded (SIGHUP)`),
        (error: unknown) => logger.error({ err: error }, `${name}: reload failed`),
      ),
  );
}
