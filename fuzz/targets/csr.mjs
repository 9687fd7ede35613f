// @ts-check
// Target 1: the CSR parser, the strict issuance policy and the signature check, in-process.
//
// Invariants per case:
//   - parseCsr/parseCsrDer throw only PkiError (with a CSR/PEM code), never TypeError/RangeError/...;
//   - IssuancePolicy.checkCsr throws only IssuanceError;
//   - verifyCsrSignature resolves a boolean or rejects with PkiError, and never resolves true for a
//     certificationRequestInfo that differs from every seed's (unless the case re-signed it);
//   - a CSR that passes policy and signature satisfies the X509-SVID profile (docs/architecture.md) (checked by an independent
//     oracle here) and a second parser (@peculiar/x509) reads the same URI SANs from it;
//   - unmodified seeds marked "accept" are accepted (the harness is not vacuous);
//   - each case finishes within the time bound (engine).

import { constants, createPrivateKey, sign } from 'node:crypto';
import { performance } from 'node:perf_hooks';
import { cloneTree, deepNesting, encodeTree, lieAboutLength, mutateTree, oidContent, parseTree, swapTag, tlv } from '../lib/der.mjs';
import { wrongError } from '../lib/engine.mjs';
import { mutateBytes } from '../lib/mutate.mjs';

const CSR_ERROR_CODES = new Set(['ERR_PEM_MALFORMED', 'ERR_CSR_MALFORMED', 'ERR_CSR_UNSUPPORTED_KEY', 'ERR_CSR_UNSUPPORTED_SIGNATURE']);
const ORGANIZATION = '2.5.4.10';
const MAX_DER = 64 * 1024;

function pemBody(pem) {
  return Buffer.from(pem.replace(/-----[^-]+-----|\s/g, ''), 'base64');
}

function pem(der, label = 'CERTIFICATE REQUEST', width = 64, eol = '\n') {
  const b64 = der.toString('base64');
  const lines = width > 0 ? (b64.match(new RegExp(`.{1,${width}}`, 'g')) ?? []) : [b64];
  return `-----BEGIN ${label}-----${eol}${lines.join(eol)}${eol}-----END ${label}-----${eol}`;
}

/** Seeds from fuzz/corpus/csrs.json, with what re-signing a mutant needs. */
export function loadCsrSeeds(corpus) {
  return corpus.csrs.map((entry) => {
    const der = pemBody(entry.csr);
    const tree = parseTree(der);
    if (!tree?.children?.[0]) throw new Error(`corpus CSR ${entry.name} is not DER`);
    const key = createPrivateKey(entry.key);
    const { hash, pssSaltLength } = entry.signing;
    const signer = (data) =>
      pssSaltLength === undefined
        ? sign(hash, data, key)
        : sign(hash, data, { key, padding: constants.RSA_PKCS1_PSS_PADDING, saltLength: pssSaltLength });
    return { name: entry.name, expect: entry.expect, der, tree, tbsHex: encodeTree(tree.children[0]).toString('hex'), signer };
  });
}

function pemVariant(rng, der) {
  const [name, make] = rng.pick([
    ['pem', () => pem(der)],
    ['pem NEW label', () => pem(der, 'NEW CERTIFICATE REQUEST')],
    ['pem CERTIFICATE label', () => pem(der, 'CERTIFICATE')],
    ['pem lowercase label', () => pem(der, 'certificate request')],
    ['pem CRLF', () => pem(der, undefined, 64, '\r\n')],
    ['pem one line', () => pem(der, undefined, 0)],
    ['pem 76 columns', () => pem(der, undefined, 76)],
    ['pem no trailing newline', () => pem(der).trimEnd()],
    ['pem two blocks', () => pem(der) + pem(der)],
    ['pem junk around', () => `subject=/O=\nissuer junk\n${pem(der)}trailing text\n`],
    ['pem trailing spaces', () => pem(der).replace(/\n/g, ' \n')],
    ['pem tab inside', () => pem(der).replace(/\n(?=[A-Za-z0-9])/, '\n\t')],
    ['pem mismatched END', () => pem(der).replace('END CERTIFICATE REQUEST', 'END CERTIFICATE')],
    ['pem missing END', () => pem(der).replace(/-----END[^\n]*\n$/, '')],
    ['pem bad base64 char', () => pem(der).replace(/(\n[A-Za-z0-9+/]{10})/, '$1*')],
    ['pem base64url alphabet', () => pem(der).replace(/\+/g, '-').replace(/\//g, '_')],
    ['pem extra padding', () => pem(der).replace(/\n-----END/, '====\n-----END')],
    ['pem missing padding', () => pem(der).replace(/=+\n-----END/, '\n-----END')],
    ['pem unicode', () => pem(der).replace(/\n([A-Za-z])/, '\n\u00e9$1')],
    ['pem nested BEGIN', () => `-----BEGIN CERTIFICATE REQUEST-----\n${pem(der)}-----END CERTIFICATE REQUEST-----\n`],
    ['pem empty body', () => pem(Buffer.alloc(0))],
    ['pem just over the size cap', () => pem(der) + ' '.repeat(MAX_DER * 2 + 1)],
    ['pem 3,000 BEGIN lines', () => '-----BEGIN CERTIFICATE REQUEST-----\n'.repeat(3000)],
    ['pem long label', () => `-----BEGIN ${'A'.repeat(100_000)}`],
    ['empty string', () => ''],
  ]);
  return [name, make()];
}

function specialInput(rng) {
  return rng.pick([
    () => ['der', Buffer.alloc(0), 'empty'],
    () => ['der', rng.bytes(rng.range(1, 64)), 'random small'],
    () => ['der', rng.bytes(rng.range(64, 4096)), 'random medium'],
    () => ['der', rng.bytes(MAX_DER), 'random 64 KiB'],
    () => ['der', Buffer.concat([Buffer.of(0x30, 0x82, 0xff, 0xfc), rng.bytes(MAX_DER - 4)]), 'SEQUENCE of random bytes, exactly 64 KiB'],
    () => ['der', rng.bytes(MAX_DER + 1), 'random 64 KiB + 1'],
    () => ['der', deepNesting(rng.pick([31, 32, 33, 34, 100, 1000, 5000])), 'deep SEQUENCE nesting'],
    () => ['der', deepNesting(rng.pick([33, 500, 3000]), Buffer.alloc(0), 0xa0), 'deep [0] nesting'],
    () => ['der', Buffer.concat([Buffer.alloc(rng.pick([2, 64, 1000]) * 2, 0).fill(Buffer.of(0x30, 0x80))]), 'nested indefinite lengths'],
    () => ['der', Buffer.of(0x30, 0x84, 0xff, 0xff, 0xff, 0xff, 0x30, 0x00), 'length 4 GiB'],
    () => ['der', Buffer.of(0x30, 0x88, 0x7f, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff), 'length 2^63'],
    () => ['der', Buffer.of(0x30, 0x82, 0x00, 0x05, 0x02, 0x01, 0x00, 0x05, 0x00), 'non-minimal length'],
    () => [
      'der',
      tlv(
        0x30,
        tlv(0x30, tlv(0x02, Buffer.of(0)), tlv(0x30), tlv(0x30), tlv(0xa0)),
        tlv(0x30, tlv(0x06, oidContent('1.2.840.10045.4.3.2'))),
        tlv(0x03, Buffer.of(0)),
      ),
      'hollow CSR',
    ],
    () => ['der', Buffer.from('-----BEGIN CERTIFICATE REQUEST-----'), 'PEM header as DER'],
    () => [
      'pem',
      '-----BEGIN CERTIFICATE REQUEST-----\n' + 'A'.repeat(rng.pick([100, 87_380, 131_072])) + '\n-----END CERTIFICATE REQUEST-----\n',
      'long base64 body',
    ],
    () => ['pem', rng.bytes(rng.range(1, 2000)).toString('latin1'), 'random text'],
  ])();
}

export function csrTarget(mods, corpus, options = {}) {
  const { parseCsr, parseCsrDer, verifyCsrSignature, PkiError, IssuancePolicy, IssuanceError, x509 } = mods;
  const seeds = loadCsrSeeds(corpus);
  const identity = corpus.identity;
  const profile = { uris: [identity], dnsNames: [] };
  const policy = new IssuancePolicy({ defaultTtlMs: 86_400_000, maxTtlMs: 30 * 86_400_000, backdateMs: 60_000 });
  const knownTbs = new Set(seeds.map((s) => s.tbsHex));
  const donors = seeds.map((s) => s.tree);

  function generate(rng) {
    const seed = rng.pick(seeds);
    const kind = rng.weighted([
      [45, 'tree'],
      [22, 'bytes'],
      [10, 'length-lie'],
      [10, 'pem'],
      [9, 'special'],
      [4, 'unmodified'],
    ]);
    const input = {
      form: 'der',
      der: seed.der,
      pem: undefined,
      seed: seed.name,
      seedExpect: seed.expect,
      unmodified: false,
      resigned: false,
      steps: [kind],
    };
    if (kind === 'unmodified') {
      input.unmodified = true;
      if (rng.bool()) Object.assign(input, { form: 'pem', pem: pem(seed.der) });
      return input;
    }
    if (kind === 'special') {
      const [form, data, name] = specialInput(rng);
      input.steps = [name];
      input.seed = undefined;
      if (form === 'der') input.der = data;
      else Object.assign(input, { form, pem: data });
      return input;
    }
    let der = seed.der;
    if (kind === 'tree') {
      const tree = cloneTree(seed.tree);
      for (let n = rng.range(1, 3); n > 0; n--) input.steps.push(mutateTree(rng, tree, donors));
      if (rng.bool(0.35) && tree.children?.length >= 1) {
        // Re-sign the mutated certificationRequestInfo with the seed's key: gets deep into policy.
        const signature = seed.signer(encodeTree(tree.children[0]));
        tree.children[2] = { tag: 0x03, content: Buffer.concat([Buffer.of(0), signature]) };
        input.resigned = true;
        input.steps.push('re-signed');
      }
      der = encodeTree(tree);
      if (rng.bool(0.15)) {
        const [out, name] = mutateBytes(rng, der);
        der = out;
        input.steps.push(name);
      }
    } else if (kind === 'bytes') {
      for (let n = rng.range(1, 4); n > 0; n--) {
        const which = rng.int(10);
        if (which === 0) {
          der = swapTag(rng, der);
          input.steps.push('tag');
        } else if (which === 1) {
          der = lieAboutLength(rng, der);
          input.steps.push('length-lie');
        } else {
          const [out, name] = mutateBytes(rng, der);
          der = out;
          input.steps.push(name);
        }
      }
    } else if (kind === 'length-lie') {
      for (let n = rng.range(1, 2); n > 0; n--) der = lieAboutLength(rng, der);
    } else {
      if (rng.bool(0.3)) der = mutateBytes(rng, der)[0];
      const [name, text] = pemVariant(rng, der);
      input.steps.push(name);
      Object.assign(input, { form: 'pem', pem: text });
      return input;
    }
    input.der = der;
    return input;
  }

  /** the X509-SVID profile (docs/architecture.md)'s strict CSR policy, restated independently of src/authority/policy.ts. */
  function policyOracle(csr) {
    const problems = [];
    if (csr.uris.length === 0 || csr.uris.some((u) => u !== identity))
      problems.push(`URI SANs ${JSON.stringify(csr.uris)} are not exactly ${identity}`);
    if (csr.dnsNames.length + csr.ipAddresses.length + csr.emails.length > 0) problems.push('has DNS, IP or email SANs');
    if (csr.subject.some((a) => a.oid !== ORGANIZATION))
      problems.push(`subject has ${csr.subject.map((a) => a.oid).join(',')}, not only O=`);
    if (csr.requestsCa) problems.push('requests cA=true');
    if (csr.keyAlgorithm === 'rsa' ? !(csr.rsaModulusBits >= 2048) : !['ec-p256', 'ec-p384'].includes(csr.keyAlgorithm))
      problems.push(`key ${csr.keyAlgorithm}/${csr.rsaModulusBits} is not allowed`);
    return problems.map((p) => `accepted a CSR that breaks the X509-SVID profile (docs/architecture.md): ${p}`);
  }

  /**
   * The SAN as a second parser reads it: the extension is located by walking the request's
   * attributes with this file's own DER tree, then decoded by @peculiar/x509. (Only the SAN: the
   * subject and other extensions are not copied into certificates, so readings may differ there.)
   */
  function secondParser(der) {
    const info = parseTree(der)?.children?.[0];
    const attributes = info?.children?.[3];
    const isOid = (node, dotted) => node?.tag === 0x06 && node.content.equals(oidContent(dotted));
    const extensionRequests = (attributes?.children ?? []).filter((a) => isOid(a.children?.[0], '1.2.840.113549.1.9.14'));
    const extensions = extensionRequests.flatMap((a) => a.children?.[1]?.children?.[0]?.children ?? []);
    const sans = extensions.filter((e) => isOid(e.children?.[0], '2.5.29.17'));
    if (extensionRequests.length !== 1 || sans.length !== 1)
      return [`accepted CSR has ${extensionRequests.length} extensionRequest attributes and ${sans.length} SAN extensions`];
    try {
      const names = new x509.SubjectAlternativeNameExtension(encodeTree(sans[0])).names.toJSON();
      const uris = names.filter((n) => n.type === 'url').map((n) => n.value);
      if (names.length !== 1 || uris[0] !== identity)
        return [`accepted CSR's SAN reads differently in @peculiar/x509: ${JSON.stringify(names)}`];
      return [];
    } catch (error) {
      return [`accepted CSR's SAN does not parse in @peculiar/x509: ${error?.message}`];
    }
  }

  async function execute(input) {
    const violations = [];
    const started = performance.now();
    let csr;
    try {
      csr = input.form === 'der' ? parseCsrDer(input.der) : parseCsr(input.pem);
    } catch (error) {
      if (!(error instanceof PkiError)) violations.push(wrongError(input.form === 'der' ? 'parseCsrDer' : 'parseCsr', error, 'PkiError'));
      else if (!CSR_ERROR_CODES.has(error.code)) violations.push(`parse failed with PkiError code ${error.code}, not a CSR/PEM code`);
      if (input.unmodified && input.seedExpect === 'accept')
        violations.push(`unmodified seed ${input.seed} did not parse: ${error?.message}`);
      return { outcome: `parse ${error?.code ?? error?.name}`, violations, ms: performance.now() - started };
    }
    let policyError;
    try {
      policy.checkCsr(csr, profile);
    } catch (error) {
      policyError = error;
      if (!(error instanceof IssuanceError)) violations.push(wrongError('IssuancePolicy.checkCsr', error, 'IssuanceError'));
    }
    let verified;
    try {
      verified = await verifyCsrSignature(csr);
      if (typeof verified !== 'boolean') violations.push(`verifyCsrSignature resolved ${typeof verified}, not a boolean`);
    } catch (error) {
      verified = error;
      if (!(error instanceof PkiError)) violations.push(wrongError('verifyCsrSignature', error, 'PkiError'));
    }
    const ms = performance.now() - started;
    const tbsKnown = knownTbs.has(Buffer.from(csr.certificationRequestInfoDer).toString('hex'));
    if (verified === true && !tbsKnown && !input.resigned)
      violations.push('verifyCsrSignature resolved true for a certificationRequestInfo no key signed (mutated TBS)');
    const accepted = policyError === undefined && verified === true;
    if (accepted) violations.push(...policyOracle(csr), ...secondParser(csr.der));
    if (input.unmodified && input.seedExpect === 'accept' && !accepted)
      violations.push(`unmodified seed ${input.seed} was refused: ${policyError?.message ?? verified?.message ?? 'signature false'}`);
    const outcome = accepted
      ? 'accepted'
      : policyError
        ? `policy ${policyError.code}`
        : verified === false
          ? 'bad signature'
          : `verify ${verified?.code ?? verified?.name}`;
    return { outcome, violations, ms };
  }

  return {
    name: 'csr',
    timeBoundMs: options.timeBoundMs ?? 50,
    hangMs: options.hangMs ?? 5000,
    retime: true,
    generate,
    execute,
    describe: (input) => ({
      base64: input.form === 'der' ? input.der.toString('base64') : Buffer.from(input.pem, 'utf8').toString('base64'),
      note: `${input.form === 'der' ? 'DER for parseCsrDer' : 'PEM text (utf8) for parseCsr'}; seed "${input.seed ?? '-'}"; ${input.steps.join(' > ')}`,
    }),
  };
}
