import type { AuthorityRecord, AuthorityUsage } from '../store/types.js';
import { TRUSTED_STATES } from '../authority/snapshot.js';
import { bool, str, UsageError } from '../flags.js';
import { openReadOnlyStore, STORE_FLAGS, type ReadOnlyStore } from './store-access.js';
import { DATA_DIR_FLAG, JSON_FLAG, printRows, type Command } from './types.js';

const DAY_MS = 86_400_000;
const HOUR_MS = 3_600_000;

export type Severity = 'critical' | 'warning' | 'info';

export interface StatusWarning {
  readonly severity: Severity;
  readonly message: string;
}

export interface AuthorityStatus {
  readonly id: string;
  readonly kind: AuthorityRecord['kind'];
  readonly state: AuthorityRecord['state'];
  readonly parentId: string | null;
  readonly notAfter: string;
  readonly daysLeft: number;
  readonly issued: number;
  readonly unexpired: number;
  readonly revoked: number;
}

export interface StatusReport {
  /** The database read: the data dir's file, or the PostgreSQL URL without credentials. */
  readonly dataDir: string;
  readonly at: string;
  readonly bundleSequence: number;
  readonly schemaVersion: number;
  readonly authorities: AuthorityStatus[];
  readonly issuance: {
    readonly lastHour: number;
    readonly lastDay: number;
    readonly stored: number;
    readonly unexpired: number;
    readonly revoked: number;
    readonly revokedUnexpired: number;
  };
  readonly deniedIdentities: string[];
  readonly warnings: StatusWarning[];
}

export interface StatusThresholds {
  readonly warningDays: number;
  readonly criticalDays: number;
}

/** `meshca status`: reads the data dir directly (read-only), so it works whether or not the server runs. */
export const statusCommand: Command = {
  usage:
    'meshca status --data-dir DIR [--warn-days 30] [--critical-days 7] [--json]\n       meshca status --store postgres://USER@HOST/DB [--store-password-file PATH] [--json]',
  description:
    'Show authorities, expiries, bundle sequence, issuance rate and warnings. Reads the data dir directly and read-only, so it works with the server running or stopped: authorities (state, expiry, days left, usage), bundle sequence, certificates issued in the last hour and day, revocations, deny-list and warnings.',
  flags: [
    DATA_DIR_FLAG,
    ...STORE_FLAGS,
    {
      name: 'warn-days',
      kind: 'string',
      value: 'DAYS',
      default: '30',
      help: 'warn when the active root or intermediate expires within this many days',
    },
    { name: 'critical-days', kind: 'string', value: 'DAYS', default: '7', help: 'critical when it expires within this many days' },
    JSON_FLAG,
  ],
  run: async (values) => {
    const thresholds = {
      warningDays: days(str(values, 'warn-days'), '--warn-days'),
      criticalDays: days(str(values, 'critical-days'), '--critical-days'),
    };
    const report = await collectStatus(await openReadOnlyStore(values), new Date(), thresholds);
    if (bool(values, 'json')) process.stdout.write(JSON.stringify(report, null, 2) + '\n');
    else printStatus(report);
  },
};

function days(value: string | undefined, flag: string): number {
  const n = Number(value);
  if (!Number.isFinite(n) || n < 0) throw new UsageError(`${flag} must be a number of days`);
  return n;
}

export async function collectStatus({ store, location }: ReadOnlyStore, now: Date, thresholds: StatusThresholds): Promise<StatusReport> {
  try {
    const authorities = await store.loadAuthorities();
    const usage = await store.authorityUsage(now);
    const counts = await store.issuanceCounts(now);
    const denied = (await store.listDenied()).map((d) => d.spiffeId);
    const rows = authorities.map((a) => authorityStatus(a, authorities, usage, now));
    return {
      dataDir: location,
      at: now.toISOString(),
      bundleSequence: await store.bundleSequence(),
      schemaVersion: (await store.schema()).version,
      authorities: rows,
      issuance: {
        lastHour: await store.issuedSince(new Date(now.getTime() - HOUR_MS)),
        lastDay: await store.issuedSince(new Date(now.getTime() - DAY_MS)),
        stored: counts.total,
        unexpired: counts.unexpired,
        revoked: counts.revoked,
        revokedUnexpired: counts.revokedUnexpired,
      },
      deniedIdentities: denied,
      warnings: warnings(authorities, denied, now, thresholds),
    };
  } finally {
    await store.close();
  }
}

function authorityStatus(
  a: AuthorityRecord,
  all: readonly AuthorityRecord[],
  usage: ReadonlyMap<string, AuthorityUsage>,
  now: Date,
): AuthorityStatus {
  const own = a.kind === 'root' ? all.filter((c) => c.parentId === a.id).map((c) => usage.get(c.id)) : [usage.get(a.id)];
  const sum = (k: keyof AuthorityUsage) => own.reduce((n, u) => n + (u?.[k] ?? 0), 0);
  return {
    id: a.id,
    kind: a.kind,
    state: a.state,
    parentId: a.parentId,
    notAfter: a.notAfter.toISOString(),
    daysLeft: Math.round(((a.notAfter.getTime() - now.getTime()) / DAY_MS) * 10) / 10,
    issued: sum('issued'),
    unexpired: sum('unexpired'),
    revoked: sum('revoked'),
  };
}

/** What an operator should act on, most urgent first. */
export function warnings(
  authorities: readonly AuthorityRecord[],
  denied: readonly string[],
  now: Date,
  thresholds: StatusThresholds,
): StatusWarning[] {
  const out: StatusWarning[] = [];
  if (authorities.length === 0)
    out.push({ severity: 'critical', message: 'no authorities: start "meshca serve" once to create the first root and intermediate' });
  const activeIntermediates = authorities.filter((a) => a.kind === 'intermediate' && a.state === 'active');
  if (authorities.length > 0 && activeIntermediates.length !== 1) {
    out.push({
      severity: 'critical',
      message: `${activeIntermediates.length} active intermediates (exactly one is required; the server will not start): run "meshca verify"`,
    });
  }
  const activeRoots = authorities.filter((a) => a.kind === 'root' && a.state === 'active');
  for (const a of [...activeRoots, ...activeIntermediates]) {
    const left = a.notAfter.getTime() - now.getTime();
    const what = `the active ${a.kind} ${a.id}`;
    if (left <= 0) out.push({ severity: 'critical', message: `${what} expired at ${a.notAfter.toISOString()}` });
    else if (left <= thresholds.criticalDays * DAY_MS)
      out.push({
        severity: 'critical',
        message: `${what} expires in ${(left / DAY_MS).toFixed(1)} days (${a.notAfter.toISOString()}): ${rotationHint(a)}`,
      });
    else if (left <= thresholds.warningDays * DAY_MS)
      out.push({
        severity: 'warning',
        message: `${what} expires in ${(left / DAY_MS).toFixed(1)} days (${a.notAfter.toISOString()}): ${rotationHint(a)}`,
      });
  }
  for (const a of authorities.filter(
    (x) => x.kind === 'root' && x.state !== 'active' && TRUSTED_STATES.has(x.state) && x.notAfter.getTime() <= now.getTime(),
  )) {
    out.push({
      severity: 'warning',
      message: `the ${a.state} root ${a.id} expired at ${a.notAfter.toISOString()} but is still in the bundle: remove it`,
    });
  }
  for (const a of authorities.filter((x) => x.state === 'tainted')) {
    out.push({ severity: 'warning', message: `${a.kind} ${a.id} is tainted: re-issue the certificates that chain to it, then remove it` });
  }
  for (const a of authorities.filter((x) => x.state === 'prepared' && x.kind === 'intermediate')) {
    out.push({
      severity: 'info',
      message: `intermediate ${a.id} is prepared since ${a.createdAt.toISOString()}: activate it once every workload trusts its root`,
    });
  }
  if (denied.length > 0) {
    out.push({
      severity: 'warning',
      message: `${denied.length} identit${denied.length === 1 ? 'y is' : 'ies are'} on the deny-list: ${denied.slice(0, 3).join(', ')}${denied.length > 3 ? ', …' : ''}`,
    });
  }
  const order: Record<Severity, number> = { critical: 0, warning: 1, info: 2 };
  return out.sort((x, y) => order[x.severity] - order[y.severity]);
}

function rotationHint(a: AuthorityRecord): string {
  return a.kind === 'root'
    ? 'prepare and activate a new root ("meshca authorities prepare")'
    : 'rotate it ("meshca authorities rotate-intermediate")';
}

function printStatus(report: StatusReport): void {
  process.stdout.write(`meshca status: ${report.dataDir} at ${report.at} (read directly from the store)\n\nAUTHORITIES\n`);
  printRows(
    report.authorities.map((a) => ({
      ...a,
      parentId: a.parentId ?? '-',
      notAfter: a.notAfter.slice(0, 19) + 'Z',
      daysLeft: a.daysLeft.toFixed(1),
    })),
    ['id', 'kind', 'state', 'parentId', 'notAfter', 'daysLeft', 'issued', 'unexpired', 'revoked'],
    false,
  );
  const i = report.issuance;
  const summary: [string, string][] = [
    ['bundle sequence', String(report.bundleSequence)],
    ['issued last 1h', `${i.lastHour} (${(i.lastHour / 60).toFixed(1)}/min)`],
    ['issued last 24h', String(i.lastDay)],
    ['certificates', `${i.stored} stored, ${i.unexpired} unexpired`],
    ['revoked', `${i.revoked} (${i.revokedUnexpired} unexpired, on CRLs)`],
    ['denied identities', String(report.deniedIdentities.length)],
    ['schema version', String(report.schemaVersion)],
  ];
  process.stdout.write('\n' + summary.map(([k, v]) => `${k.padEnd(18)} ${v}`).join('\n') + '\n\nWARNINGS\n');
  if (report.warnings.length === 0) process.stdout.write('none\n');
  else
    printRows(
      report.warnings.map((w) => ({ ...w })),
      ['severity', 'message'],
      false,
    );
}
