import { spawn } from 'node:child_process';
import { chmodSync, mkdirSync, renameSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import type { Logger } from 'pino';
import type { AgentMetrics } from './metrics.js';
import { svidPem, type AgentState } from './state.js';

export interface FileWriterOptions {
  readonly dir: string;
  readonly state: AgentState;
  readonly logger: Logger;
  readonly metrics: AgentMetrics;
  /** Run with `sh -c` after each update (MESHCA_WRITE_DIR set); runs never overlap. */
  readonly onRotate?: string;
}

/** Writes `data` to `path` atomically: a new file beside it, then rename. */
export function writeAtomically(path: string, data: string, mode: number): void {
  const temporary = `${path}.new-${process.pid}`;
  writeFileSync(temporary, data, { mode });
  chmodSync(temporary, mode);
  renameSync(temporary, path);
}

/**
 * Keeps tls.crt (leaf + intermediates), tls.key (PKCS#8, 0600) and ca.crt (own and federated roots)
 * in --write-dir for applications that read certificate files, and runs --on-rotate after each update.
 */
export class FileWriter {
  private hook: Promise<void> = Promise.resolve();
  private readonly unsubscribe: () => void;

  constructor(private readonly options: FileWriterOptions) {
    mkdirSync(options.dir, { recursive: true, mode: 0o755 });
    this.unsubscribe = options.state.onChange(() => this.write());
    this.write();
  }

  close(): Promise<void> {
    this.unsubscribe();
    return this.hook;
  }

  private write(): void {
    const { state, dir, logger, metrics } = this.options;
    const svid = state.currentSvid();
    if (!svid || !state.ownBundle()) return;
    try {
      const { chainPem, keyPem } = svidPem(svid);
      // Key first: a reader that sees the new certificate must find its key already in place.
      writeAtomically(join(dir, 'tls.key'), keyPem, 0o600);
      writeAtomically(join(dir, 'tls.crt'), chainPem, 0o644);
      writeAtomically(join(dir, 'ca.crt'), state.allRootsPem(), 0o644);
      metrics.fileUpdates.inc({ result: 'ok' });
      logger.info({ dir, notAfter: svid.notAfter }, 'wrote tls.crt, tls.key and ca.crt');
    } catch (error) {
      metrics.fileUpdates.inc({ result: 'error' });
      logger.error({ err: error, dir }, `writing the certificate files failed: ${(error as Error).message}`);
      return;
    }
    if (this.options.onRotate) this.hook = this.hook.then(() => this.runHook(this.options.onRotate!));
  }

  private runHook(command: string): Promise<void> {
    return new Promise((resolve) => {
      const child = spawn('sh', ['-c', command], {
        stdio: ['ignore', 'inherit', 'inherit'],
        env: { ...process.env, MESHCA_WRITE_DIR: this.options.dir },
      });
      child.on('error', (error) => {
        this.options.logger.warn({ err: error }, `--on-rotate could not start: ${error.message}`);
        resolve();
      });
      child.on('exit', (code, signal) => {
        if (code !== 0) this.options.logger.warn({ code, signal }, '--on-rotate command failed');
        resolve();
      });
    });
  }
}
