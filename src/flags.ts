/**
 * A small flag parser for the CLI: `--name value`, `--name=value`, booleans, repeatable lists, and
 * every flag also read from MESHCA_<NAME_IN_CAPS> (lists comma-separated). Flags beat env beat defaults.
 */
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

export class UsageError extends Error {
  override readonly name = 'UsageError';
}

export function envName(flag: string): string {
  return `MESHCA_${flag.toUpperCase().replace(/-/g, '_')}`;
}

export interface ParsedArgs {
  readonly values: FlagValues;
  readonly positionals: readonly string[];
  readonly help: boolean;
}

export function parseFlags(specs: readonly FlagSpec[], argv: readonly string[], env: NodeJS.ProcessEnv, command: string): ParsedArgs {
  const byName = new Map(specs.map((s) => [s.name, s]));
  const fromArgs = new Map<string, string | boolean | string[]>();
  const positionals: string[] = [];
  let help = false;
  for (let i = 0; i < argv.length; i++) {
    const arg = argv[i];
    if (arg === undefined) break;
    if (arg === '--help' || arg === '-h') {
      help = true;
      continue;
    }
    if (!arg.startsWith('--')) {
      positionals.push(arg);
      continue;
    }
    const eq = arg.indexOf('=');
    const name = arg.slice(2, eq === -1 ? undefined : eq);
    const spec = byName.get(name);
    if (!spec) throw new UsageError(`unknown flag --${name} for "meshca ${command}"; run "meshca ${command} --help"`);
    if (spec.kind === 'boolean') {
      fromArgs.set(name, eq === -1 ? true : parseBoolean(arg.slice(eq + 1), `--${name}`));
      continue;
    }
    const value = eq === -1 ? argv[++i] : arg.slice(eq + 1);
    if (value === undefined) throw new UsageError(`--${name} needs a value (${spec.value ?? 'VALUE'})`);
    if (spec.kind === 'list') fromArgs.set(name, [...((fromArgs.get(name) as string[] | undefined) ?? []), ...splitList(value)]);
    else fromArgs.set(name, value);
  }
  const values: Record<string, FlagValue> = {};
  for (const spec of specs) values[spec.name] = fromArgs.get(spec.name) ?? fromEnv(spec, env) ?? spec.default;
  return { values, positionals, help };
}

function fromEnv(spec: FlagSpec, env: NodeJS.ProcessEnv): FlagValue {
  const raw = env[envName(spec.name)];
  if (raw === undefined || raw === '') return undefined;
  if (spec.kind === 'boolean') return parseBoolean(raw, envName(spec.name));
  return spec.kind === 'list' ? splitList(raw) : raw;
}

function splitList(value: string): string[] {
  return value.split(',').map((v) => v.trim()).filter((v) => v.length > 0);
}

function parseBoolean(value: string, where: string): boolean {
  if (/^(1|true|yes|on)$/i.test(value)) return true;
  if (/^(0|false|no|off)$/i.test(value)) return false;
  throw new UsageError(`${where} must be true or false, not "${value}"`);
}

export function formatHelp(usage: string, description: string, specs: readonly FlagSpec[]): string {
  const rows = specs.map((s) => {
    const flag = `--${s.name}${s.kind === 'boolean' ? '' : ` ${s.value ?? 'VALUE'}`}`;
    const def = s.default === undefined || s.default === false ? '' : ` (default: ${Array.isArray(s.default) ? s.default.join(',') : String(s.default)})`;
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
