import type { X509Certificate } from 'node:crypto';
import type { CertificateSummary } from '../store/types.js';
import { normalizeSerialHex } from '../pki/serial.js';
import type { ClientRefusal, ClientStanding } from './auth.js';

export interface StandingSource {
  certificate(serialHex: string): Promise<CertificateSummary | undefined>;
  isDenied(spiffeId: string): Promise<boolean>;
}

/**
 * Checks an admin client certificate against the store: expired, revoked (what the CRL lists) or
 * deny-listed identities are refused. Verdicts are cached for `cacheMs` (at most a second or two)
 * so a burst of admin calls costs one lookup, and a revocation takes effect within that time.
 */
export function storeClientStanding(source: StandingSource, cacheMs = 1000, now: () => number = () => Date.now()): ClientStanding {
  const cache = new Map<string, { verdict: ClientRefusal | undefined; at: number }>();
  return async (certificate, spiffeId) => {
    const serial = normalizeSerialHex(certificate.serialNumber) ?? certificate.serialNumber;
    const key = `${serial}|${certificate.fingerprint256}`;
    const cached = cache.get(key);
    if (cached && now() - cached.at < cacheMs) return cached.verdict;
    const verdict = expiryRefusal(certificate, now()) ?? (await storeRefusal(source, serial, spiffeId));
    cache.set(key, { verdict, at: now() });
    if (cache.size > 1000) cache.delete(cache.keys().next().value!);
    return verdict;
  };
}

function expiryRefusal(certificate: X509Certificate, nowMs: number): ClientRefusal | undefined {
  if (nowMs < Date.parse(certificate.validFrom) || nowMs > Date.parse(certificate.validTo)) {
    return {
      status: 401,
      code: 'ERR_ADMIN_CLIENT_EXPIRED',
      message: `client certificate ${certificate.serialNumber} is outside its validity (${certificate.validFrom} – ${certificate.validTo}); get a new one`,
    };
  }
  return undefined;
}

async function storeRefusal(source: StandingSource, serial: string, spiffeId: string): Promise<ClientRefusal | undefined> {
  const [record, denied] = await Promise.all([source.certificate(serial), source.isDenied(spiffeId)]);
  if (denied)
    return {
      status: 403,
      code: 'ERR_ADMIN_CLIENT_DENIED',
      message: `${spiffeId} is on the deny-list; another admin can allow it again with DELETE /v1/identities/deny/<id>`,
    };
  if (record?.status === 'revoked')
    return {
      status: 401,
      code: 'ERR_ADMIN_CLIENT_REVOKED',
      message: `client certificate ${serial} was revoked (${record.revocationReason ?? 'unspecified'}); get a new one`,
    };
  return undefined;
}
