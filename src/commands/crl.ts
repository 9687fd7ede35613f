import { writeFileSync } from 'node:fs';
import { openOfflineAuthority } from '../app/context.js';
import { RevocationService } from '../authority/revocation.js';
import { duration } from '../config.js';
import { requireStr, str } from '../flags.js';
import { pemEncode } from '../pki/pem.js';
import { DATA_DIR_FLAG, type Command } from './types.js';

/** `meshca crl`: the active authority's CRL as PEM, what Istio's ca-crl.pem / istio-ca-crl ConfigMap holds. */
export const crlCommand: Command = {
  usage: 'meshca crl --data-dir DIR [--out ca-crl.pem] [--kek-file PATH]',
  description: "Write the active signing authority's CRL (PEM) for Istio's plug-in ca-crl.pem, working directly on the data dir.",
  flags: [
    DATA_DIR_FLAG,
    { name: 'out', kind: 'string', value: 'PATH', help: 'write here instead of stdout' },
    { name: 'kek-file', kind: 'string', value: 'PATH', help: 'key-encryption key (or MESHCA_KEK); dev data dirs use <data-dir>/kek' },
    { name: 'crl-validity', kind: 'string', value: 'DURATION', default: '24h', help: 'nextUpdate - thisUpdate' },
  ],
  run: async (values) => {
    const dataDir = requireStr(values, 'data-dir');
    const crlValidityMs = duration(values, 'crl-validity');
    const { store, ca, kek, close } = await openOfflineAuthority({ dataDir, kekFile: str(values, 'kek-file'), env: process.env });
    try {
      const crl = await new RevocationService(ca, store, kek, { crlValidityMs }).activeCrl();
      const pem = pemEncode(crl.der, 'X509 CRL');
      const out = str(values, 'out');
      if (out) writeFileSync(out, pem);
      else process.stdout.write(pem);
    } finally {
      await close();
    }
  },
};
