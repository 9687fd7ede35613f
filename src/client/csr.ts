import { webcrypto } from 'node:crypto';
import { x509 } from '../pki/x509.js';
import { pemEncode } from '../pki/pem.js';

import type { KeyType } from '../pki/keys.js';

/** A workload key: the same types meshca's CAs use. */
export type ClientKeyType = KeyType;

export interface WorkloadKey {
  readonly keys: webcrypto.CryptoKeyPair;
  readonly keyType: ClientKeyType;
}

function algorithm(type: ClientKeyType): webcrypto.EcKeyGenParams | webcrypto.RsaHashedKeyGenParams {
  if (type.startsWith('ec-')) return { name: 'ECDSA', namedCurve: type === 'ec-p256' ? 'P-256' : 'P-384' };
  return { name: 'RSASSA-PKCS1-v1_5', modulusLength: Number(type.slice(4)), publicExponent: new Uint8Array([1, 0, 1]), hash: 'SHA-256' };
}

export async function generateWorkloadKey(type: ClientKeyType): Promise<WorkloadKey> {
  const keys = (await webcrypto.subtle.generateKey(algorithm(type), true, ['sign', 'verify'])) as webcrypto.CryptoKeyPair;
  return { keys, keyType: type };
}

/** A CSR shaped like istio-agent's: empty O= subject and one critical URI SAN. */
export async function workloadCsr(key: WorkloadKey, spiffeId: string): Promise<string> {
  const alg = key.keyType.startsWith('ec-')
    ? { name: 'ECDSA', hash: key.keyType === 'ec-p256' ? 'SHA-256' : 'SHA-384' }
    : { name: 'RSASSA-PKCS1-v1_5' };
  const csr = await x509.Pkcs10CertificateRequestGenerator.create(
    {
      name: new x509.Name([{ '2.5.4.10': [{ utf8String: '' }] }]),
      keys: key.keys,
      signingAlgorithm: alg,
      extensions: [new x509.SubjectAlternativeNameExtension([{ type: 'url', value: spiffeId }], true)],
    },
    webcrypto as unknown as Parameters<typeof x509.Pkcs10CertificateRequestGenerator.create>[1],
  );
  return csr.toString('pem') + '\n';
}

export async function privateKeyPemOf(key: WorkloadKey): Promise<string> {
  return pemEncode(new Uint8Array(await webcrypto.subtle.exportKey('pkcs8', key.keys.privateKey)), 'PRIVATE KEY');
}
