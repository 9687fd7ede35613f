import { createPublicKey, type KeyObject } from 'node:crypto';
import { openPrivateKey, privateKeyMatchesCertificate, sealPrivateKey } from '../pki/keys.js';
import type { AuthorityRecord, Store } from '../store/types.js';
import { AuthorityError } from './errors.js';
import { unsealAuthorityKey } from './signer.js';

/**
 * Re-seals every authority key (CA, pending CSR and JWT-SVID signing keys) under a new KEK in one
 * store transaction (with an audit event). Every key is opened first, so a wrong current KEK or one
 * damaged key changes nothing; the committed result is read back and must open under the new KEK.
 */
export async function resealAuthorityKeys(store: Store, currentKek: Buffer, newKek: Buffer, actor: string): Promise<AuthorityRecord[]> {
  const sealed = (await store.loadAuthorities()).filter((a) => a.sealedKey !== null);
  if (sealed.length === 0) throw new AuthorityError('ERR_AUTHORITY_INVALID', 'the store holds no sealed keys: nothing to re-encrypt');
  const resealed = sealed.map((record) => ({ id: record.id, sealedKey: reseal(record, currentKek, newKek) }));
  const resealedPending = (await store.loadPendingAuthorities()).map((p) => ({
    id: p.id,
    sealedKey: resealUncertified(p.sealedKey, p.id, currentKek, newKek),
  }));
  const resealedJwtKeys = (await store.loadJwtAuthorities())
    .filter((k) => k.state !== 'removed')
    .map((k) => ({ kid: k.kid, sealedKey: resealUncertified(k.sealedKey, k.kid, currentKek, newKek) }));
  await store.applyAuthorityChange({
    resealed,
    resealedPending,
    resealedJwtKeys,
    bumpBundleSequence: false,
    audit: {
      actor,
      action: 'kek.rotate',
      target: 'authorities',
      result: 'ok',
      details: {
        authorities: resealed.map((r) => r.id),
        pending: resealedPending.map((r) => r.id),
        jwtKeys: resealedJwtKeys.map((r) => r.kid),
      },
      at: new Date(),
    },
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

/** Pending CSR keys and JWT signing keys have no certificate: the round trip compares public keys instead. */
function resealUncertified(sealed: Buffer, id: string, currentKek: Buffer, newKek: Buffer): Buffer {
  let key: KeyObject;
  try {
    key = openPrivateKey(sealed, currentKek, id);
  } catch {
    throw new AuthorityError('ERR_AUTHORITY_INCONSISTENT', `cannot decrypt the key of ${id} with the current KEK; nothing was changed`);
  }
  const sealedKey = sealPrivateKey(key, newKek, id);
  const spki = (k: KeyObject) => createPublicKey(k).export({ format: 'der', type: 'spki' });
  if (!spki(openPrivateKey(sealedKey, newKek, id)).equals(spki(key))) {
    throw new AuthorityError('ERR_AUTHORITY_INCONSISTENT', `re-sealing the key of ${id} did not round-trip; nothing was changed`);
  }
  return sealedKey;
}
