import { pino, type Logger } from 'pino';

export type { Logger } from 'pino';

/** Paths pino blanks out wherever they appear, so a careless log call cannot leak a secret. */
const REDACTED_PATHS = [
  'token',
  'authorization',
  'privateKey',
  'key',
  'kek',
  'adminToken',
  '*.token',
  '*.authorization',
  '*.privateKey',
  '*.key',
  '*.kek',
  'headers.authorization',
  'req.headers.authorization',
];

export interface LoggerOptions {
  readonly level?: string;
  /** Where JSON lines go; defaults to stdout. */
  readonly destination?: NodeJS.WritableStream;
}

/** One structured JSON logger for the whole process (Fastify gets a child of it). */
export function createLogger(options: LoggerOptions = {}): Logger {
  return pino(
    {
      name: 'meshca',
      level: options.level ?? 'info',
      redact: { paths: REDACTED_PATHS, censor: '[redacted]' },
      timestamp: pino.stdTimeFunctions.isoTime,
      formatters: { level: (label) => ({ level: label }) },
    },
    options.destination ?? pino.destination({ fd: 1, sync: false }),
  );
}
