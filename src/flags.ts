/**
 * Command-line flags: node:util parseArgs (`--name value`, `--name=value`, booleans, repeatable
 * lists) plus every flag also read from MESHCA_<NAME_IN_CAPS> (lists comma-separated). Flags beat
 * env beat defaults. The flag specs also drive --help and the generated docs table.
 */
import { parseArgs } from 'node:util';
export type FlagValue = string | boolean | readonly string[] | undefined;

export interface FlagSpec {
  readonly name: string;
  readonly kind: 'string' | 'boolean' | 'list';
  readonly help: string;
  readonly default?: string | boolean | readonly string[];
  /** Shown in --help, e.g. PATH, HOST:PORT. */
  readonly value?: string;
}

export type FlagValues = Readonly<Record<string, FlagValue>>;

import { UsageError } from './errors.js';

export { UsageError };

export function envName(flag: string): string {
  return `MESHCA_${flag.toUpperCase().replace(/-/g, '_')}`;
}

export interface ParsedArgs {
  readonly values: FlagValues;
  readonly positionals: readonly string[];
  readonly help: boolean;
}

type ParseArgsOptions = NonNullable<Parameters<typeof parseArgs>[0]>['options'];

/** node:util parseArgs for the command line, then the MESHCA_* overlay, then defaults. */
export function parseFlags(specs: readonly FlagSpec[], argv: readonly string[], env: NodeJS.ProcessEnv, command: string): ParsedArgs {
  const byName = new Map(specs.map((s) => [s.name, s]));
  const options: ParseArgsOptions = { help: { type: 'boolean', short: 'h' } };
  for (const spec of specs)
    options[spec.name] = spec.kind === 'boolean' ? { type: 'boolean' } : { type: 'string', multiple: spec.kind === 'list' };
  // parseArgs (Node 20) takes no value for a boolean; `--dev=false` style is kept by reading it here.
  const explicitBooleans = new Map<string, boolean>();
  const args = argv.filter((arg) => {
    const m = /^--([^=]+)=(.*)$/.exec(arg);
    const spec = m ? byName.get(m[1]!) : undefined;
    if (!m || spec?.kind !== 'boolean') return true;
    explicitBooleans.set(spec.name, parseBoolean(m[2]!, `--${spec.name}`));
    return false;
  });
  let parsed: ReturnType<typeof parseArgs>;
  try {
    parsed = parseArgs({ args, options, strict: true, allowPositionals: true });
  } catch (error) {
    throw parseError(error, byName, command);
  }
  const fromArgs = parsed.values as Record<string, string | boolean | string[] | undefined>;
  const values: Record<string, FlagValue> = {};
  for (const spec of specs) {
    const given = explicitBooleans.get(spec.name) ?? fromArgs[spec.name];
    values[spec.name] = (Array.isArray(given) ? given.flatMap(splitList) : given) ?? fromEnv(spec, env) ?? spec.default;
  }
  return { values, positionals: parsed.positionals, help: fromArgs.help === true };
}

/** parseArgs' errors, said the way the rest of the CLI says things (and with the next step). */
function parseError(error: unknown, byName: ReadonlyMap<string, FlagSpec>, command: string): UsageError {
  const message = (error as Error).message;
  const code = (error as { code?: string }).code;
  const flag = /'(-{1,2}[^' ]+)/.exec(message)?.[1] ?? '';
  if (code === 'ERR_PARSE_ARGS_UNKNOWN_OPTION')
    return new UsageError(`unknown flag ${flag} for "meshca ${command}"; run "meshca ${command} --help"`);
  if (code === 'ERR_PARSE_ARGS_INVALID_OPTION_VALUE') {
    const spec = byName.get(flag.replace(/^--/, ''));
    if (spec?.kind === 'boolean') return new UsageError(`${flag} takes no value (or ${flag}=true|false)`);
    if (/argument missing/.test(message)) return new UsageError(`${flag} needs a value (${spec?.value ?? 'VALUE'})`);
    return new UsageError(`${flag} needs a value (${spec?.value ?? 'VALUE'}); for a value starting with "-" write ${flag}=VALUE`);
  }
  return new UsageError(message);
}

function fromEnv(spec: FlagSpec, env: NodeJS.ProcessEnv): FlagValue {
  const raw = env[envName(spec.name)];
  if (raw === undefined || raw === '') return undefined;
  if (spec.kind === 'boolean') return parseBoolean(raw, envName(spec.name));
  return spec.kind === 'list' ? splitList(raw) : raw;
}

function splitList(value: string): string[] {
  return value
    .split(',')
    .map((v) => v.trim())
    .filter((v) => v.length > 0);
}

function parseBoolean(value: string, where: string): boolean {
  if (/^(1|true|yes|on)$/i.test(value)) return true;
  if (/^(0|false|no|off)$/i.test(value)) return false;
  throw new UsageError(`${where} must be true or false, not "${value}"`);
}

export function formatHelp(usage: string, description: string, specs: readonly FlagSpec[]): string {
  const rows = specs.map((s) => {
    const flag = `--${s.name}${s.kind === 'boolean' ? '' : ` ${s.value ?? 'VALUE'}`}`;
    const def =
      s.default === undefined || s.default === false
        ? ''
        : ` (default: ${Array.isArray(s.default) ? s.default.join(',') : String(s.default)})`;
    return `  ${flag.padEnd(34)} ${s.help}${def}\n  ${''.padEnd(34)} env: ${envName(s.name)}${s.kind === 'list' ? ' (comma-separated)' : ''}`;
  });
  return `Usage: ${usage}\n\n${description}\n\nFlags:\n${rows.join('\n')}\n  ${'--help'.padEnd(34)} show this help\n`;
}

/** Typed accessors used by command implementations. */
export function str(values: FlagValues, name: string): string | undefined {
  const v = values[name];
  return typeof v === 'string' ? v : undefined;
}

export function requireStr(values: FlagValues, name: string): string {
  const v = str(values, name);
  if (v === undefined) throw new UsageError(`--${name} is required (or set ${envName(name)})`);
  return v;
}

export function bool(values: FlagValues, name: string): boolean {
  return values[name] === true;
}

export function list(values: FlagValues, name: string): readonly string[] {
  const v = values[name];
  return Array.isArray(v) ? v : [];
}
