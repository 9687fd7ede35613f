import type { KeyObject } from 'node:crypto';
import type { AuthorityRecord } from '../store/types.js';
import { openPrivateKey, privateKeyMatchesCertificate } from '../pki/keys.js';
import { LeafTemplate, type LeafRequest, type LeafTemplateOptions, type TbsSigner } from '../pki/leaf.js';
import { AuthorityError } from './errors.js';

/** The intermediate that signs leaves right now: its record, its key in memory, its leaf template. */
export class SigningAuthority {
  private constructor(
    readonly record: AuthorityRecord,
    private readonly template: LeafTemplate,
  ) {}

  /** Unseals the key under the KEK and proves it belongs to the certificate before it signs anything. */
  static open(record: AuthorityRecord, kek: Buffer, leaf: LeafTemplateOptions = {}): SigningAuthority {
    const key = unsealAuthorityKey(record, kek);
    return new SigningAuthority(record, LeafTemplate.create(record.certificateDer, key, leaf));
  }

  get id(): string {
    return this.record.id;
  }

  get notAfter(): Date {
    return this.record.notAfter;
  }

  /** `signer` computes the signature (default: node:crypto on libuv's pool); see CsrVerifier.signerFor. */
  sign(request: LeafRequest, signer?: TbsSigner): Promise<Buffer> {
    return this.template.sign(request, signer);
  }
}

/** Unseals an authority's key under the KEK and proves it belongs to the certificate. */
export function unsealAuthorityKey(record: AuthorityRecord, kek: Buffer): KeyObject {
  if (!record.sealedKey) {
    throw new AuthorityError('ERR_AUTHORITY_INCONSISTENT', `authority ${record.id} has no private key and cannot sign`);
  }
  let key: KeyObject;
  try {
    key = openPrivateKey(record.sealedKey, kek, record.id);
  } catch {
    throw new AuthorityError(
      'ERR_AUTHORITY_INCONSISTENT',
      `cannot decrypt the key of authority ${record.id}: is this the KEK the data dir was created with (--kek-file / MESHCA_KEK)?`,
    );
  }
  if (!privateKeyMatchesCertificate(key, record.certificateDer)) {
    throw new AuthorityError('ERR_AUTHORITY_INCONSISTENT', `the key of authority ${record.id} does not match its certificate`);
  }
  return key;
}
