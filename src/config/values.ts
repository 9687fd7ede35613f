/** The one set of flag-value parsers every command and the server config use; errors name the flag. */
import { parseDuration } from '../duration.js';
import { UsageError } from '../errors.js';
import { str, type FlagValues } from '../flags.js';

/** Runs a parser, turning its error into a UsageError that names the flag. */
export function guard<T>(flag: string, parse: () => T): T {
  try {
    return parse();
  } catch (error) {
    throw new UsageError(`${flag}: ${(error as Error).message}`);
  }
}

export function durationFlag(values: FlagValues, name: string): number {
  return guard(`--${name}`, () => parseDuration(str(values, name)!));
}

export function positiveDuration(values: FlagValues, name: string): number {
  const ms = durationFlag(values, name);
  if (ms <= 0) throw new UsageError(`--${name} must be longer than 0 (e.g. 1m)`);
  return ms;
}

export function nonNegativeNumber(values: FlagValues, name: string): number {
  const n = Number(str(values, name));
  if (!Number.isFinite(n) || n < 0) throw new UsageError(`--${name} must be a number ≥ 0`);
  return n;
}

export function positiveNumber(values: FlagValues, name: string): number {
  const n = Number(str(values, name));
  if (!Number.isFinite(n) || n <= 0) throw new UsageError(`--${name} must be a positive number`);
  return n;
}

export function positiveInt(values: FlagValues, name: string): number {
  const n = Number(str(values, name));
  if (!Number.isInteger(n) || n <= 0) throw new UsageError(`--${name} must be a positive integer`);
  return n;
}

export function nonNegativeInt(values: FlagValues, name: string): number {
  const n = Number(str(values, name));
  if (!Number.isInteger(n) || n < 0) throw new UsageError(`--${name} must be an integer ≥ 0`);
  return n;
}

/** "5%" or "0.05" → 0.05. */
export function percentage(values: FlagValues, name: string): number {
  const raw = str(values, name)!.trim();
  const n = raw.endsWith('%') ? Number(raw.slice(0, -1)) / 100 : Number(raw);
  if (!Number.isFinite(n) || n < 0 || n > 1) throw new UsageError(`--${name} must be a percentage between 0% and 100% (e.g. 5%)`);
  return n;
}

/** One of a fixed set of words. */
export function oneOf<T extends string>(values: FlagValues, name: string, choices: readonly T[]): T {
  const raw = str(values, name);
  const choice = choices.find((c) => c === raw);
  if (choice === undefined) throw new UsageError(`--${name} must be one of ${choices.join(', ')} (got "${raw}")`);
  return choice;
}
