import { execFile } from 'node:child_process';
import { readFileSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { promisify } from 'node:util';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import type { DevTokenIssuer } from '../src/authn/index.js';
import { buildServerConfig, SERVE_FLAGS } from '../src/config.js';
import { parseFlags } from '../src/flags.js';
import { adminCall } from './support/admin.js';
import { workloadCredentials } from './support/mtls.js';
import { openssl, opensslStatus } from './support/openssl.js';
import { leafAndIssuer, serialOf } from './support/revocation.js';
import { type DevServer, startDevServer, type TestServer } from './support/server.js';

let dir: string;
let t: TestServer;
let devIssuer: DevTokenIssuer;
let token: string;
let n = 0;
const OCSP_URL = 'http://meshca.example.test:8443/v1/ocsp';

const target = () => ({ port: t.server.adminAddress.port, roots: t.server.ca.current().rootsPem, token });
let dev: DevServer;
const call = (...args: Parameters<DevServer['call']>) => dev.call(...args);
const post = (raw: Buffer, contentType = 'application/ocsp-request') =>
  adminCall(target(), 'POST', '/v1/ocsp', { raw, token: null, headers: { 'content-type': contentType } });
const get = (raw: Buffer) => adminCall(target(), 'GET', `/v1/ocsp/${encodeURIComponent(raw.toString('base64'))}`, { token: null });
const file = (text: string | Buffer) => {
  const path = join(dir, `f${n++}`);
  writeFileSync(path, text);
  return path;
};
const issue = async (sa: string) => {
  const w = await workloadCredentials(
    t.client(),
    `spiffe://cluster.local/ns/ocsp/sa/${sa}`,
    await devIssuer.sign({ namespace: 'ocsp', serviceAccount: sa, ttlSeconds: 600 }),
  );
  const [leaf, issuer] = leafAndIssuer(w.cert);
  return { leaf, issuer, serial: serialOf(leaf) };
};

/** Asks meshca about `cert` the way openssl does (-issuer/-cert), then lets openssl judge the response. */
async function ask(issuer: string, cert: string, options: { nonce?: boolean; via?: 'POST' | 'GET' } = {}) {
  const [issuerFile, certFile, reqFile, respFile] = [file(issuer), file(cert), file(''), file('')];
  openssl(['ocsp', '-issuer', issuerFile, '-cert', certFile, '-reqout', reqFile, ...(options.nonce ? [] : ['-no_nonce'])]);
  const request = readFileSync(reqFile);
  const res = options.via === 'GET' ? await get(request) : await post(request);
  expect(res.status).toBe(200);
  expect(res.headers['content-type']).toBe('application/ocsp-response');
  writeFileSync(respFile, res.body);
  const roots = file(t.server.ca.current().rootsPem);
  const judged = options.nonce
    ? opensslStatus(['ocsp', '-respin', respFile, '-reqin', reqFile, '-CAfile', roots, '-resp_text'])
    : opensslStatus(['ocsp', '-respin', respFile, '-issuer', issuerFile, '-cert', certFile, '-CAfile', roots, '-no_nonce']);
  return { ...judged, headers: res.headers };
}

beforeAll(async () => {
  dev = await startDevServer(['--ocsp-url', OCSP_URL]);
  ({ t, dir, devIssuer, adminToken: token } = dev);
});

afterAll(() => dev?.close());

describe('OCSP responder (openssl ocsp as judge)', () => {
  it('answers good, then revoked with time and reason, over POST and GET; the response verifies against the bundle', async () => {
    const w = await issue('one');
    for (const via of ['POST', 'GET'] as const) {
      const good = await ask(w.issuer, w.leaf, { via });
      expect(good.output).toContain('Response verify OK');
      expect(good.output).toMatch(/: good/);
    }
    expect((await call('POST', `/v1/certificates/${w.serial}/revoke`, { reason: 'keyCompromise' })).status).toBe(200);
    for (const via of ['POST', 'GET'] as const) {
      const revoked = await ask(w.issuer, w.leaf, { via }); // a revocation drops the cached "good" at once
      expect(revoked.output).toMatch(/: revoked/);
      expect(revoked.output).toContain('Reason: keyCompromise');
      expect(revoked.output).toMatch(/Revocation Time: \w+ +\d+ [\d:]+ \d{4} GMT/);
    }
    expect((await ask(w.issuer, w.leaf, { via: 'GET' })).headers['cache-control']).toMatch(/^public, max-age=\d+$/);
    // openssl as the client too: it sends the request to the real listener over HTTPS (async: the server runs in this process).
    const url = `https://localhost:${t.server.adminAddress.port}/v1/ocsp`;
    const { stdout, stderr } = await promisify(execFile)('openssl', [
      'ocsp',
      '-issuer',
      file(w.issuer),
      '-cert',
      file(w.leaf),
      '-url',
      url,
      '-CAfile',
      file(t.server.ca.current().rootsPem),
    ]);
    expect(`${stdout}${stderr}`).toContain('Response verify OK');
    expect(stdout).toContain('Reason: keyCompromise');
  });

  it('echoes the nonce (openssl checks it) and signs with SHA-256 by the issuing CA', async () => {
    const w = await issue('nonce');
    const answer = await ask(w.issuer, w.leaf, { nonce: true });
    expect(answer.ok, answer.output).toBe(true);
    expect(answer.output).toContain('Response verify OK');
    expect(answer.output).toContain('OCSP Nonce');
    expect(answer.output).not.toMatch(/nonce verify error|no nonce in response/i);
    expect(answer.output).toContain('Signature Algorithm: ecdsa-with-SHA256');
    expect(answer.headers['cache-control']).toBe('no-store');
  });

  it('answers for intermediates from their root, and reports the leaves of a tainted intermediate as cACompromise', async () => {
    const w = await issue('tainted');
    const roots = t.server.ca.current().rootsPem;
    expect((await ask(roots, w.issuer)).output).toMatch(/: good/);
    const revoke = await call('POST', `/v1/authorities/${t.server.ca.current().signer.id}/revoke`, { reason: 'keyCompromise' });
    expect(revoke.status).toBe(200);
    const intermediate = await ask(roots, w.issuer);
    expect(intermediate.output).toMatch(/: revoked/);
    expect(intermediate.output).toContain('Reason: keyCompromise');
    const leaf = await ask(w.issuer, w.leaf);
    expect(leaf.output).toMatch(/: revoked/);
    expect(leaf.output).toContain('Reason: cACompromise');
    const fresh = await issue('fresh');
    expect((await ask(fresh.issuer, fresh.leaf)).output).toMatch(/: good/);
  });

  it('says unknown for a serial it never issued, and unauthorized for an issuer it does not hold', async () => {
    const w = await issue('other');
    const [issuerFile, reqFile] = [file(w.issuer), file('')];
    openssl(['ocsp', '-issuer', issuerFile, '-serial', '0x1234567890abcdef', '-reqout', reqFile, '-no_nonce']);
    const unknown = await post(readFileSync(reqFile));
    const respFile = file(unknown.body);
    expect(
      openssl([
        'ocsp',
        '-respin',
        respFile,
        '-issuer',
        issuerFile,
        '-serial',
        '0x1234567890abcdef',
        '-CAfile',
        file(t.server.ca.current().rootsPem),
        '-no_nonce',
      ]),
    ).toMatch(/: unknown/);

    const key = file(openssl(['genpkey', '-algorithm', 'EC', '-pkeyopt', 'ec_paramgen_curve:P-256']));
    const stranger = file(openssl(['req', '-x509', '-new', '-key', key, '-subj', '/CN=stranger', '-days', '1']));
    openssl(['ocsp', '-issuer', stranger, '-serial', '0x01', '-reqout', reqFile, '-no_nonce']);
    const refused = await post(readFileSync(reqFile));
    expect(opensslStatus(['ocsp', '-respin', file(refused.body), '-resp_text', '-noverify']).output).toContain('unauthorized (6)');
  });

  it('puts the --ocsp-url responder into issued leaves (AIA) and refuses a URL that is not one', async () => {
    const w = await issue('aia');
    expect(openssl(['x509', '-noout', '-ocsp_uri'], w.leaf).trim()).toBe(OCSP_URL);
    for (const bad of ['ftp://x/ocsp', 'http://a b/ocsp', 'meshca/v1/ocsp']) {
      expect(() => buildServerConfig(parseFlags(SERVE_FLAGS, ['--dev', '--ocsp-url', bad], {}, 'serve').values)).toThrow(
        /--ocsp-url must be an absolute http\(s\) URL/,
      );
    }
  });

  const MALFORMED = Buffer.from([0x30, 0x03, 0x0a, 0x01, 0x01]); // OCSPResponse { malformedRequest }
  it.each([
    ['garbage', () => post(Buffer.from('not an ocsp request at all'))],
    ['an empty body', () => post(Buffer.alloc(0))],
    ['a truncated request', async () => post((await validRequest()).subarray(0, 40))],
    ['trailing bytes', async () => post(Buffer.concat([await validRequest(), Buffer.from([0])]))],
    ['a valid DER SEQUENCE that is not a request', () => post(Buffer.from([0x30, 0x00]))],
    ['bad base64 over GET', () => adminCall(target(), 'GET', '/v1/ocsp/%21%21not-base64', { token: null })],
  ])('answers %s with malformedRequest, never a 500', async (_what, send) => {
    const res = await send();
    expect(res.status).toBe(200);
    expect(res.body).toEqual(MALFORMED);
  });

  it.each([
    ['a body over 4 KiB', 413, () => post(Buffer.alloc(64 * 1024, 0x30))],
    ['another content type', 415, async () => post(await validRequest(), 'application/octet-stream')],
    ['a GET path over the limit', 414, () => adminCall(target(), 'GET', `/v1/ocsp/${'A'.repeat(13000)}`, { token: null })],
  ])('refuses %s cheaply (%i)', async (_what, code, send) => {
    expect((await send()).status).toBe(code);
  });
});

async function validRequest(): Promise<Buffer> {
  const w = await issue('valid');
  const reqFile = file('');
  openssl(['ocsp', '-issuer', file(w.issuer), '-cert', file(w.leaf), '-reqout', reqFile, '-no_nonce']);
  return readFileSync(reqFile);
}
