import { X509Certificate } from 'node:crypto';
import { writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { openssl, opensslStatus } from './openssl.js';
import { removeDir, tempDir } from './server.js';

/** The PEM blocks of a concatenated CRL set. */
export function crlBlocks(pem: string): string[] {
  return pem.match(/-----BEGIN X509 CRL-----[\s\S]+?-----END X509 CRL-----\n?/g) ?? [];
}

/** CRL number by issuer DN, as openssl reads each CRL of a set. */
export function crlNumbersByIssuer(pem: string): Map<string, number> {
  return new Map(
    crlBlocks(pem).map((block) => {
      const out = openssl(['crl', '-noout', '-issuer', '-crlnumber'], block);
      const issuer = /issuer=(.*)/.exec(out)![1]!.trim();
      return [issuer, Number.parseInt(/crlNumber=(?:0x)?([0-9A-Fa-f]+)/.exec(out)![1]!, 16)];
    }),
  );
}

/** A certificate's serial as meshca spells it: lowercase hex, no leading zeros. */
export function serialOf(pem: string): string {
  return new X509Certificate(pem).serialNumber.toLowerCase().replace(/^0+(?=.)/, '');
}

/** [leaf, intermediate] of an issued cert-chain (Istio's order: leaf first, roots last). */
export function leafAndIssuer(chain: string): [string, string] {
  const [leaf, issuer] = chain.split(/(?=-----BEGIN CERTIFICATE-----)/);
  return [leaf!, issuer!];
}

/** `openssl verify -crl_check_all` of a leaf against the trusted roots and a published CRL set. */
export function verifyWithCrlSet(leaf: string, intermediate: string, rootsPem: string, crlSetPem: string): { ok: boolean; output: string } {
  const dir = tempDir('meshca-crl-');
  try {
    const file = (name: string, text: string) => {
      writeFileSync(join(dir, name), text);
      return join(dir, name);
    };
    const args = [
      'verify',
      '-crl_check_all',
      '-CRLfile',
      file('crls.pem', crlSetPem),
      '-CAfile',
      file('roots.pem', rootsPem),
      '-untrusted',
      file('int.pem', intermediate),
      file('leaf.pem', leaf),
    ];
    return opensslStatus(args);
  } finally {
    removeDir(dir);
  }
}
