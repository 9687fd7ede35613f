import { writeFileSync } from 'node:fs';
import { openOfflineAuthority } from '../app/context.js';
import { RevocationService } from '../authority/revocation.js';
import { duration } from '../config.js';
import { bool, requireStr, str } from '../flags.js';
import { pemEncode } from '../pki/pem.js';
import { DATA_DIR_FLAG, type Command } from './types.js';

/** `meshca crl`: CRLs as PEM, what Istio's ca-crl.pem / istio-ca-crl ConfigMap holds. */
export const crlCommand: Command = {
  usage: 'meshca crl --data-dir DIR [--all] [--out ca-crl.pem] [--kek-file PATH]',
  description:
    "Write the active signing authority's CRL, or with --all every published CRL (PEM, concatenated), for Istio's plug-in ca-crl.pem, working directly on the data dir.",
  flags: [
    DATA_DIR_FLAG,
    {
      name: 'all',
      kind: 'boolean',
      help: 'every CRL meshca publishes (intermediates and roots), as openssl -crl_check_all and Envoy need',
    },
    { name: 'out', kind: 'string', value: 'PATH', help: 'write here instead of stdout' },
    { name: 'kek-file', kind: 'string', value: 'PATH', help: 'key-encryption key (or MESHCA_KEK); dev data dirs use <data-dir>/kek' },
    { name: 'crl-validity', kind: 'string', value: 'DURATION', default: '24h', help: 'nextUpdate - thisUpdate' },
  ],
  run: async (values) => {
    const dataDir = requireStr(values, 'data-dir');
    const crlValidityMs = duration(values, 'crl-validity');
    const { store, ca, kek, close } = await openOfflineAuthority({ dataDir, kekFile: str(values, 'kek-file'), env: process.env });
    try {
      const revocation = new RevocationService(ca, store, kek, { crlValidityMs });
      const crls = bool(values, 'all') ? await revocation.crlSet() : [await revocation.activeCrl()];
      const pem = crls.map((crl) => pemEncode(crl.der, 'X509 CRL')).join('');
      const out = str(values, 'out');
      if (out) writeFileSync(out, pem);
      else process.stdout.write(pem);
    } finally {
      await close();
    }
  },
};
