import { AuthenticationError } from './errors.js';

/** Upper bound on a bearer token. Kubernetes tokens are ~1 KiB; the cap keeps hostile input cheap. */
export const MAX_TOKEN_BYTES = 16 * 1024;

const BEARER_RE = /^Bearer +(\S+) *$/i;
// A compact JWS: three base64url segments; the signature may be empty (alg "none"), which jose then rejects.
const COMPACT_JWS_RE = /^[A-Za-z0-9_-]+\.[A-Za-z0-9_-]+\.[A-Za-z0-9_-]*$/;

/** Extracts the token from an `Authorization: Bearer <token>` header (scheme is case-insensitive). */
export function bearerToken(authorizationHeader: string | undefined): string {
  if (authorizationHeader === undefined || authorizationHeader.trim() === '') {
    throw new AuthenticationError('ERR_TOKEN_MISSING', 'authorization header is missing');
  }
  // Checked before the regex so an oversized header costs nothing.
  if (authorizationHeader.length > MAX_TOKEN_BYTES + 64) throw tooLarge();
  const token = BEARER_RE.exec(authorizationHeader)?.[1];
  if (token === undefined) {
    throw new AuthenticationError('ERR_TOKEN_MALFORMED', 'authorization header must be "Bearer <token>"');
  }
  return checkTokenShape(token);
}

/** The checks before a token is hashed (for the cache): not empty, not oversized. Returns it unchanged. */
export function checkTokenSize(token: string): string {
  if (token === '') throw new AuthenticationError('ERR_TOKEN_MISSING', 'bearer token is empty');
  if (token.length > MAX_TOKEN_BYTES) throw tooLarge();
  return token;
}

/** Cheap structural checks done before verifying; returns the token unchanged. */
export function checkTokenShape(token: string): string {
  if (!COMPACT_JWS_RE.test(checkTokenSize(token))) {
    throw new AuthenticationError('ERR_TOKEN_MALFORMED', 'bearer token is not a compact JWS');
  }
  return token;
}

function tooLarge(): AuthenticationError {
  return new AuthenticationError('ERR_TOKEN_MALFORMED', `bearer token exceeds ${MAX_TOKEN_BYTES} bytes`);
}
