/** Where a JSON Web Key Set comes from (file, URL or inline), and validation of what was loaded. */

import { createPublicKey, type JsonWebKey as NodeJsonWebKey } from 'node:crypto';
import { once } from 'node:events';
import { readFile } from 'node:fs/promises';
import * as http from 'node:http';
import * as https from 'node:https';
import type { JSONWebKeySet, JWK } from 'jose';
import { AuthenticationError } from './errors.js';

export type JwksSource = { readonly file: string } | { readonly url: string; readonly caFile?: string } | { readonly keys: JSONWebKeySet };

/** Loads and validates the key set; rejects with ERR_JWKS_UNAVAILABLE and a message naming the source. */
export interface JwksLoader {
  readonly description: string;
  /** False for inline keys: nothing to re-read. */
  readonly refreshable: boolean;
  load(): Promise<JSONWebKeySet>;
}

const FETCH_TIMEOUT_MS = 5_000;
// A hostile or broken issuer must not be able to make us buffer an unbounded body.
const MAX_JWKS_BYTES = 1024 * 1024;
const PRIVATE_MEMBERS = ['d', 'p', 'q', 'dp', 'dq', 'qi', 'k'] as const;
const MIN_RSA_BITS = 2048;

export async function createJwksLoader(source: JwksSource): Promise<JwksLoader> {
  if ('keys' in source) return inlineLoader(source.keys);
  if ('file' in source) return fileLoader(source.file);
  return urlLoader(source.url, source.caFile === undefined ? undefined : await readCaFile(source.caFile));
}

function inlineLoader(keys: JSONWebKeySet): JwksLoader {
  const description = 'inline JWKS';
  return { description, refreshable: false, load: async () => validateJwks(structuredClone(keys), description) };
}

function fileLoader(file: string): JwksLoader {
  const description = `JWKS file ${file}`;
  const load = async (): Promise<JSONWebKeySet> => {
    const text = await readFile(file, 'utf8').catch((cause: unknown) => {
      throw unavailable(`cannot read ${description}: ${errorText(cause)}`, cause);
    });
    return validateJwks(parseJson(text, description), description);
  };
  return { description, refreshable: true, load };
}

function urlLoader(rawUrl: string, ca: string | undefined): JwksLoader {
  const url = new URL(rawUrl);
  if (url.protocol !== 'https:' && url.protocol !== 'http:') {
    throw new TypeError(`JWKS URL must be http(s), got ${url.protocol}`);
  }
  // Never echo userinfo or query strings into messages.
  const description = `JWKS URL ${url.origin}${url.pathname}`;
  const load = async (): Promise<JSONWebKeySet> => {
    const text = await fetchText(url, ca).catch((cause: unknown) => {
      throw unavailable(`cannot fetch ${description}: ${errorText(cause)}`, cause);
    });
    return validateJwks(parseJson(text, description), description);
  };
  return { description, refreshable: true, load };
}

async function readCaFile(caFile: string): Promise<string> {
  return readFile(caFile, 'utf8').catch((cause: unknown) => {
    throw unavailable(`cannot read JWKS CA file ${caFile}: ${errorText(cause)}`, cause);
  });
}

/** GET with a deadline, no redirects and a body cap. `ca` replaces the default roots when set. */
async function fetchText(url: URL, ca: string | undefined): Promise<string> {
  const headers = { accept: 'application/json, application/jwk-set+json' };
  const signal = AbortSignal.timeout(FETCH_TIMEOUT_MS);
  const req = url.protocol === 'https:' ? https.get(url, { ca, headers, signal }) : http.get(url, { headers, signal });
  // Errors after the response arrive through the body stream; this keeps a late 'error' from crashing us.
  req.on('error', () => undefined);
  const [res] = (await once(req, 'response')) as [http.IncomingMessage];
  if (res.statusCode !== 200) {
    res.resume();
    throw new Error(`HTTP ${res.statusCode ?? 'no status'}`);
  }
  const chunks: Buffer[] = [];
  let size = 0;
  for await (const chunk of res as AsyncIterable<Buffer>) {
    size += chunk.length;
    if (size > MAX_JWKS_BYTES) {
      req.destroy();
      throw new Error(`response exceeds ${MAX_JWKS_BYTES} bytes`);
    }
    chunks.push(chunk);
  }
  return Buffer.concat(chunks).toString('utf8');
}

function parseJson(text: string, description: string): unknown {
  try {
    return JSON.parse(text) as unknown;
  } catch (cause) {
    throw unavailable(`${description} is not valid JSON`, cause);
  }
}

/**
 * Rejects sets jose would only fail on later, per request: no usable key, private or symmetric
 * members, bad key material, short RSA moduli. Other key types (OKP, ...) are kept but unused.
 */
export function validateJwks(value: unknown, description: string): JSONWebKeySet {
  if (!isRecord(value) || !Array.isArray(value.keys) || !value.keys.every(isRecord)) {
    throw unavailable(`${description} is not a JSON Web Key Set ({"keys": [...]})`);
  }
  const keys = value.keys as JWK[];
  keys.forEach((jwk, index) => checkKey(jwk, `${description}: key #${index}`));
  if (!keys.some((jwk) => jwk.kty === 'RSA' || jwk.kty === 'EC')) {
    throw unavailable(`${description} has no RSA or EC key`);
  }
  return { keys };
}

function checkKey(jwk: JWK, where: string): void {
  if (jwk.kty === 'oct' || PRIVATE_MEMBERS.some((member) => member in jwk)) {
    throw unavailable(`${where} is not a public key; a JWKS must hold public keys only`);
  }
  if (jwk.kty !== 'RSA' && jwk.kty !== 'EC') return;
  let bits: number | undefined;
  try {
    bits = createPublicKey({ key: jwk as NodeJsonWebKey, format: 'jwk' }).asymmetricKeyDetails?.modulusLength;
  } catch (cause) {
    throw unavailable(`${where} has invalid key material`, cause);
  }
  if (jwk.kty === 'RSA' && (bits ?? 0) < MIN_RSA_BITS) {
    throw unavailable(`${where} is an RSA key shorter than ${MIN_RSA_BITS} bits`);
  }
}

function isRecord(value: unknown): value is Record<string, unknown> {
  return typeof value === 'object' && value !== null && !Array.isArray(value);
}

function unavailable(message: string, cause?: unknown): AuthenticationError {
  return new AuthenticationError('ERR_JWKS_UNAVAILABLE', message, cause === undefined ? undefined : { cause });
}

function errorText(error: unknown): string {
  if (!(error instanceof Error)) return String(error);
  const code = (error as NodeJS.ErrnoException).code;
  return code !== undefined ? `${code} (${error.message})` : error.message;
}
