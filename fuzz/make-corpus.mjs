#!/usr/bin/env node
// @ts-check
// Regenerates fuzz/corpus/: the seed CSRs (with their throw-away test keys, so mutants can be
// re-signed), the JWT signing keys and an Istio plug-in CA. The corpus is checked in so fuzz cases
// are the same on every run; regenerate only when a new seed is wanted:
//
//   npm run build && node fuzz/make-corpus.mjs
//
// Every key here is a test fixture made for this corpus and protects nothing.

import { createPrivateKey, sign } from 'node:crypto';
import { execFileSync } from 'node:child_process';
import { mkdtempSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { fileURLToPath } from 'node:url';
import { exportJWK, generateKeyPair } from 'jose';
import { oidContent, tlv } from './lib/der.mjs';

const ROOT = fileURLToPath(new URL('..', import.meta.url));
const OUT = join(ROOT, 'fuzz', 'corpus');
const ID = 'spiffe://cluster.local/ns/app/sa/api';
const SAN = `subjectAltName=critical,URI:${ID}`;
const { generateWorkloadKey, workloadCsr, privateKeyPemOf } = await import(join(ROOT, 'dist', 'client', 'csr.js'));

const tmp = mkdtempSync(join(tmpdir(), 'meshca-corpus-'));
const file = (name) => join(tmp, name);
const openssl = (args) => execFileSync('openssl', args, { encoding: 'utf8', stdio: ['pipe', 'pipe', 'pipe'] });

function opensslKey(name, args) {
  openssl(['genpkey', ...args, '-out', file(name)]);
  return readFileSync(file(name), 'utf8');
}

function opensslCsr(keyName, args) {
  return openssl(['req', '-new', '-key', file(keyName), ...args]);
}

const csrs = [];
const add = (name, expect, csr, key, signing) => csrs.push({ name, expect, csr, key, signing });

for (const type of ['ec-p256', 'ec-p384', 'rsa-2048']) {
  const key = await generateWorkloadKey(type);
  const signing = type === 'ec-p384' ? { hash: 'sha384' } : { hash: 'sha256' };
  add(`workloadCsr ${type}`, 'accept', await workloadCsr(key, ID), await privateKeyPemOf(key), signing);
}

const rsa = opensslKey('rsa.pem', ['-algorithm', 'RSA', '-pkeyopt', 'rsa_keygen_bits:2048']);
add('openssl rsa-2048 pkcs1', 'accept', opensslCsr('rsa.pem', ['-subj', '/O=', '-addext', SAN]), rsa, { hash: 'sha256' });
add(
  'openssl rsa-2048 pss',
  'accept',
  opensslCsr('rsa.pem', [
    '-subj',
    '/O=',
    '-addext',
    SAN,
    '-sha256',
    '-sigopt',
    'rsa_padding_mode:pss',
    '-sigopt',
    'rsa_pss_saltlen:32',
    '-sigopt',
    'rsa_mgf1_md:sha256',
  ]),
  rsa,
  { hash: 'sha256', pssSaltLength: 32 },
);
const rsa4096 = opensslKey('rsa4096.pem', ['-algorithm', 'RSA', '-pkeyopt', 'rsa_keygen_bits:4096']);
add('openssl rsa-4096 sha512', 'accept', opensslCsr('rsa4096.pem', ['-subj', '/O=', '-addext', SAN, '-sha512']), rsa4096, {
  hash: 'sha512',
});
const ec = opensslKey('ec.pem', ['-algorithm', 'EC', '-pkeyopt', 'ec_paramgen_curve:P-256']);
add('openssl ec-p256 sha512', 'accept', opensslCsr('ec.pem', ['-subj', '/O=', '-addext', SAN, '-sha512']), ec, { hash: 'sha512' });
add('openssl ec-p256 no extensions', 'reject', opensslCsr('ec.pem', ['-subj', '/O=meshca']), ec, { hash: 'sha256' });

writeFileSync(
  file('sink.cnf'),
  [
    '[req]',
    'prompt = no',
    'distinguished_name = dn',
    'attributes = attrs',
    'req_extensions = ext',
    'utf8 = yes',
    'string_mask = utf8only',
    '[dn]',
    'CN = api.app.svc',
    'O = Bäckerei',
    'OU = mesh',
    'C = US',
    'emailAddress = ops@example.com',
    '[attrs]',
    'challengePassword = hunter22',
    '[ext]',
    `subjectAltName = critical,URI:${ID},URI:spiffe://cluster.local/ns/app/sa/other,DNS:api.example,IP:10.0.0.1,IP:2001:db8::1,email:a@b.example,otherName:1.3.6.1.4.1.311.20.2.3;UTF8:upn@example,RID:1.2.3.4`,
    'basicConstraints = critical,CA:TRUE,pathlen:3',
    'keyUsage = critical,digitalSignature,keyCertSign',
    'extendedKeyUsage = serverAuth,clientAuth,codeSigning',
    'subjectKeyIdentifier = hash',
    '1.2.3.4.5 = ASN1:UTF8String:custom',
    '',
  ].join('\n'),
);
add('openssl ec-p256 kitchen sink', 'reject', openssl(['req', '-new', '-key', file('ec.pem'), '-config', file('sink.cnf')]), ec, {
  hash: 'sha256',
});

// A compressed EC point, which openssl's req does not emit: built by hand and signed here.
{
  const privateKey = createPrivateKey(ec);
  const jwk = privateKey.export({ format: 'jwk' });
  const x = Buffer.from(jwk.x ?? '', 'base64url');
  const y = Buffer.from(jwk.y ?? '', 'base64url');
  const point = Buffer.concat([Buffer.of(y[y.length - 1] & 1 ? 0x03 : 0x02), x]);
  const spki = tlv(
    0x30,
    tlv(0x30, tlv(0x06, oidContent('1.2.840.10045.2.1')), tlv(0x06, oidContent('1.2.840.10045.3.1.7'))),
    tlv(0x03, Buffer.of(0), point),
  );
  const sanValue = tlv(0x30, tlv(0x86, Buffer.from(ID)));
  const extension = tlv(0x30, tlv(0x06, oidContent('2.5.29.17')), tlv(0x01, Buffer.of(0xff)), tlv(0x04, sanValue));
  const attributes = tlv(0xa0, tlv(0x30, tlv(0x06, oidContent('1.2.840.113549.1.9.14')), tlv(0x31, tlv(0x30, extension))));
  const subject = tlv(0x30, tlv(0x31, tlv(0x30, tlv(0x06, oidContent('2.5.4.10')), tlv(0x0c, Buffer.alloc(0)))));
  const info = tlv(0x30, tlv(0x02, Buffer.of(0)), subject, spki, attributes);
  const signature = sign('sha256', info, privateKey);
  const der = tlv(0x30, info, tlv(0x30, tlv(0x06, oidContent('1.2.840.10045.4.3.2'))), tlv(0x03, Buffer.of(0), signature));
  const pem = `-----BEGIN CERTIFICATE REQUEST-----\n${der.toString('base64').replace(/.{64}/g, '$&\n')}\n-----END CERTIFICATE REQUEST-----\n`;
  add('handmade ec-p256 compressed point', 'accept', pem, ec, { hash: 'sha256' });
}

// JWT keys: three the server trusts (one without a kid, so kid-less tokens match two keys) and two an attacker holds.
const jwtKeys = {};
for (const [name, alg] of [
  ['trusted-rsa', 'RS256'],
  ['trusted-ec', 'ES256'],
  ['trusted-rsa-2', 'RS256'],
  ['attacker-rsa', 'RS256'],
  ['attacker-ec', 'ES256'],
]) {
  const { privateKey } = await generateKeyPair(alg, { extractable: true });
  jwtKeys[name] = await exportJWK(privateKey);
}

// An Istio plug-in CA: an external root and an intermediate (the shape of ca-cert.pem & co).
openssl([
  'req',
  '-x509',
  '-newkey',
  'ec',
  '-pkeyopt',
  'ec_paramgen_curve:P-256',
  '-nodes',
  '-keyout',
  file('root-key.pem'),
  '-out',
  file('root-cert.pem'),
  '-days',
  '7300',
  '-subj',
  '/O=Fuzz/CN=Fuzz Plug-in Root',
  '-addext',
  'basicConstraints=critical,CA:TRUE',
  '-addext',
  'keyUsage=critical,keyCertSign,cRLSign',
]);
openssl([
  'req',
  '-new',
  '-newkey',
  'ec',
  '-pkeyopt',
  'ec_paramgen_curve:P-256',
  '-nodes',
  '-keyout',
  file('ca-key.pem'),
  '-out',
  file('ca.csr'),
  '-subj',
  '/O=Fuzz/CN=Fuzz Plug-in Intermediate',
]);
writeFileSync(
  file('ext.cnf'),
  'basicConstraints=critical,CA:TRUE,pathlen:0\nkeyUsage=critical,keyCertSign,cRLSign\nsubjectKeyIdentifier=hash\nauthorityKeyIdentifier=keyid\nsubjectAltName=URI:spiffe://cluster.local\n',
);
openssl([
  'x509',
  '-req',
  '-in',
  file('ca.csr'),
  '-CA',
  file('root-cert.pem'),
  '-CAkey',
  file('root-key.pem'),
  '-CAcreateserial',
  '-out',
  file('ca-cert.pem'),
  '-days',
  '3650',
  '-extfile',
  file('ext.cnf'),
]);
const read = (name) => readFileSync(file(name), 'utf8');
const pluginCa = {
  caCert: read('ca-cert.pem'),
  caKey: read('ca-key.pem'),
  certChain: read('ca-cert.pem') + read('root-cert.pem'),
  rootCert: read('root-cert.pem'),
};

writeFileSync(join(OUT, 'csrs.json'), JSON.stringify({ identity: ID, csrs }, null, 2) + '\n');
writeFileSync(join(OUT, 'jwt-keys.json'), JSON.stringify(jwtKeys, null, 2) + '\n');
writeFileSync(join(OUT, 'plugin-ca.json'), JSON.stringify(pluginCa, null, 2) + '\n');
rmSync(tmp, { recursive: true, force: true });
console.log(`wrote ${csrs.length} CSRs, ${Object.keys(jwtKeys).length} JWT keys and a plug-in CA to ${OUT}`);
