// @ts-check
// A minimal PKCS#10 writer for the benchmark's pre-generated workload CSRs.
//
// The project's client (dist/client/csr.js, @peculiar/x509 over WebCrypto) needs ~5 ms per CSR on
// the dev machine, which would make preparing 7,000+ identities take longer than the whole quick
// run. This writer emits the same CertificationRequestInfo byte for byte (checked against
// workloadCsr() by `assertSameShapeAsClient` every time material is generated), signed with
// node:crypto: an empty O= subject, the SPKI, and an extensionRequest holding one critical URI SAN.

import { createPublicKey, sign, webcrypto } from 'node:crypto';

/**
 * @param {number} tag
 * @param {...Buffer} parts
 * @returns {Buffer}
 */
function tlv(tag, ...parts) {
  const body = Buffer.concat(parts);
  const n = body.length;
  let header;
  if (n < 0x80) header = Buffer.from([tag, n]);
  else if (n < 0x100) header = Buffer.from([tag, 0x81, n]);
  else if (n < 0x10000) header = Buffer.from([tag, 0x82, n >> 8, n & 0xff]);
  else header = Buffer.from([tag, 0x83, n >> 16, (n >> 8) & 0xff, n & 0xff]);
  return Buffer.concat([header, body]);
}

/** @param {string} dotted */
function oid(dotted) {
  const arcs = dotted.split('.').map(Number);
  const bytes = [40 * arcs[0] + arcs[1]];
  for (const arc of arcs.slice(2)) {
    const chunk = [arc & 0x7f];
    for (let v = arc >>> 7; v > 0; v >>>= 7) chunk.unshift(0x80 | (v & 0x7f));
    bytes.push(...chunk);
  }
  return tlv(0x06, Buffer.from(bytes));
}

const SEQ = 0x30;
const SET = 0x31;
const EMPTY_O_NAME = tlv(SEQ, tlv(SET, tlv(SEQ, oid('2.5.4.10'), tlv(0x0c))));
const EXTENSION_REQUEST = oid('1.2.840.113549.1.9.14');
const SUBJECT_ALT_NAME = oid('2.5.29.17');
const CRITICAL = tlv(0x01, Buffer.from([0xff]));
const ECDSA_WITH_SHA256 = tlv(SEQ, oid('1.2.840.10045.4.3.2'));
const SHA256_WITH_RSA = tlv(SEQ, oid('1.2.840.113549.1.1.11'), tlv(0x05));

/**
 * The to-be-signed part of a workload CSR.
 * @param {import('node:crypto').KeyObject} publicKey
 * @param {string} spiffeId
 */
export function certificationRequestInfo(publicKey, spiffeId) {
  const spki = /** @type {Buffer} */ (publicKey.export({ type: 'spki', format: 'der' }));
  const san = tlv(0x04, tlv(SEQ, tlv(0x86, Buffer.from(spiffeId, 'ascii'))));
  const extensions = tlv(SEQ, tlv(SEQ, SUBJECT_ALT_NAME, CRITICAL, san));
  const attributes = tlv(0xa0, tlv(SEQ, EXTENSION_REQUEST, tlv(SET, extensions)));
  return tlv(SEQ, tlv(0x02, Buffer.from([0])), EMPTY_O_NAME, spki, attributes);
}

/**
 * A PEM CSR for `spiffeId`, signed by `privateKey` (EC P-256 → ecdsa-with-SHA256, RSA → sha256WithRSAEncryption).
 * @param {import('node:crypto').KeyObject} privateKey
 * @param {string} spiffeId
 * @returns {string}
 */
export function workloadCsrPem(privateKey, spiffeId) {
  const publicKey = createPublicKey(privateKey);
  const info = certificationRequestInfo(publicKey, spiffeId);
  const algorithm = privateKey.asymmetricKeyType === 'ec' ? ECDSA_WITH_SHA256 : SHA256_WITH_RSA;
  const signature = sign('sha256', info, privateKey);
  const der = tlv(SEQ, info, algorithm, tlv(0x03, Buffer.from([0]), signature));
  const b64 = der.toString('base64').replace(/.{1,64}/g, '$&\n');
  return `-----BEGIN CERTIFICATE REQUEST-----\n${b64}-----END CERTIFICATE REQUEST-----\n`;
}

/**
 * The DER elements inside a PEM CSR's outer SEQUENCE: [certificationRequestInfo, signatureAlgorithm, signature].
 * @param {string} pem
 * @returns {Buffer[]}
 */
function topLevelElements(pem) {
  const der = Buffer.from(pem.replace(/-----[^-]+-----|\s/g, ''), 'base64');
  /** @param {number} at */
  const element = (at) => {
    let len = der[at + 1];
    let header = 2;
    if (len & 0x80) {
      const n = len & 0x7f;
      len = 0;
      for (let i = 0; i < n; i++) len = len * 256 + der[at + 2 + i];
      header += n;
    }
    return { header, end: at + header + len };
  };
  const outer = element(0);
  const children = [];
  for (let at = outer.header; at < outer.end; ) {
    const { end } = element(at);
    children.push(der.subarray(at, end));
    at = end;
  }
  return children;
}

/**
 * Guards the shortcut above: for the same key and identity, the project's client must produce the very
 * same request info and signature algorithm (signatures themselves are randomised); otherwise the
 * benchmark would measure a different CSR than the one istio-agent sends.
 * @param {import('node:crypto').KeyObject} privateKey an EC P-256 or RSA key
 * @param {Pick<typeof import('../../src/client/csr.js'), 'generateWorkloadKey' | 'workloadCsr'>} client dist/client/csr.js
 */
export async function assertSameShapeAsClient(privateKey, client) {
  const spiffeId = 'spiffe://cluster.local/ns/bench/sa/shape-check';
  const ec = privateKey.asymmetricKeyType === 'ec';
  const algorithm = ec ? { name: 'ECDSA', namedCurve: 'P-256' } : { name: 'RSASSA-PKCS1-v1_5', hash: 'SHA-256' };
  const pkcs8 = privateKey.export({ type: 'pkcs8', format: 'der' });
  const spki = createPublicKey(privateKey).export({ type: 'spki', format: 'der' });
  const keys = {
    privateKey: await webcrypto.subtle.importKey('pkcs8', pkcs8, algorithm, true, ['sign']),
    publicKey: await webcrypto.subtle.importKey('spki', spki, algorithm, true, ['verify']),
  };
  const [theirInfo, theirAlgorithm] = topLevelElements(await client.workloadCsr({ keys, keyType: ec ? 'ec-p256' : 'rsa-2048' }, spiffeId));
  const [ourInfo, ourAlgorithm] = topLevelElements(workloadCsrPem(privateKey, spiffeId));
  const theirs = Buffer.concat([theirInfo, theirAlgorithm]);
  const ours = Buffer.concat([ourInfo, ourAlgorithm]);
  if (!theirs.equals(ours)) {
    throw new Error(
      `bench CSR writer drifted from dist/client/csr.js (${ec ? 'EC' : 'RSA'}):\n  client: ${theirs.toString('hex')}\n  bench:  ${ours.toString('hex')}`,
    );
  }
}
