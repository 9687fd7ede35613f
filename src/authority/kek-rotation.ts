import { openPrivateKey, privateKeyMatchesCertificate, sealPrivateKey } from '../pki/keys.js';
import type { AuthorityRecord, Store } from '../store/types.js';
import { AuthorityError } from './errors.js';
import { unsealAuthorityKey } from './signer.js';

/**
 * Re-seals every authority key under a new KEK in one store transaction (with an audit event).
 * Every key is opened first, so a wrong current KEK or one damaged key changes nothing; the
 * committed result is read back and must open under the new KEK.
 */
export async function resealAuthorityKeys(store: Store, currentKek: Buffer, newKek: Buffer, actor: string): Promise<AuthorityRecord[]> {
  const sealed = (await store.loadAuthorities()).filter((a) => a.sealedKey !== null);
  if (sealed.length === 0) throw new AuthorityError('ERR_AUTHORITY_INVALID', 'the store holds no sealed keys: nothing to re-encrypt');
  const resealed = sealed.map((record) => ({ id: record.id, sealedKey: reseal(record, currentKek, newKek) }));
  await store.applyAuthorityChange({
    resealed,
    bumpBundleSequence: false,
    audit: { actor, action: 'kek.rotate', target: 'authorities', result: 'ok', details: { authorities: resealed.map((r) => r.id) }, at: new Date() },
  });
  const after = (await store.loadAuthorities()).filter((a) => a.sealedKey !== null);
  for (const record of after) unsealAuthorityKey(record, newKek);
  return after;
}

function reseal(record: AuthorityRecord, currentKek: Buffer, newKek: Buffer): Buffer {
  let key: ReturnType<typeof unsealAuthorityKey>;
  try {
    key = unsealAuthorityKey(record, currentKek);
  } catch (error) {
    throw new AuthorityError('ERR_AUTHORITY_INCONSISTENT', `${(error as Error).message}; nothing was changed`);
  }
  const sealedKey = sealPrivateKey(key, newKek, record.id);
  if (!privateKeyMatchesCertificate(openPrivateKey(sealedKey, newKek, record.id), record.certificateDer)) {
    throw new AuthorityError('ERR_AUTHORITY_INCONSISTENT', `re-sealing the key of ${record.id} did not round-trip; nothing was changed`);
  }
  return sealedKey;
}
