import type { FlagSpec, FlagValues } from '../flags.js';

export interface Command {
  readonly usage: string;
  readonly description: string;
  readonly flags: readonly FlagSpec[];
  run(values: FlagValues, positionals: readonly string[]): Promise<void>;
}

export const DATA_DIR_FLAG: FlagSpec = { name: 'data-dir', kind: 'string', value: 'DIR', default: './data', help: 'meshca data directory' };
/** The one --kek-file spec of the offline tools (the server's is in config.ts: it may generate a dev KEK). */
export const KEK_FILE_FLAG: FlagSpec = {
  name: 'kek-file',
  kind: 'string',
  value: 'PATH',
  help: 'key-encryption key file (or MESHCA_KEK); without either, <data-dir>/kek is used if it exists (--dev data dirs)',
};
export const JSON_FLAG: FlagSpec = { name: 'json', kind: 'boolean', help: 'print JSON for scripts instead of a table' };

/** Prints rows as an aligned table (humans) or JSON (scripts). */
export function printRows(rows: readonly Record<string, unknown>[], columns: readonly string[], json: boolean, raw: unknown = rows): void {
  if (json) {
    process.stdout.write(JSON.stringify(raw, null, 2) + '\n');
    return;
  }
  const cells = rows.map((r) => columns.map((c) => (r[c] === null || r[c] === undefined ? '-' : String(r[c]))));
  const widths = columns.map((c, i) => Math.max(c.length, ...cells.map((row) => row[i]?.length ?? 0)));
  const line = (values: readonly string[]) =>
    values
      .map((v, i) => v.padEnd(widths[i] ?? 0))
      .join('  ')
      .trimEnd();
  process.stdout.write([line(columns.map((c) => c.toUpperCase())), ...cells.map(line)].join('\n') + '\n');
}
