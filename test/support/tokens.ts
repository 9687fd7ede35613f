import { generateKeyPair, exportJWK, SignJWT, type JWK } from 'jose';
import { writeFileSync } from 'node:fs';
import { join } from 'node:path';

export const TEST_ISSUER = 'https://kubernetes.default.svc.cluster.local';

export interface TokenClaims {
  readonly namespace?: string;
  readonly serviceAccount?: string;
  readonly sub?: string;
  readonly iss?: string;
  readonly aud?: string | string[];
  readonly exp?: number;
  readonly nbf?: number;
  readonly extra?: Record<string, unknown>;
}

/** A Kubernetes-like token issuer whose JWKS the server reads from a file. */
export class TestTokenIssuer {
  private constructor(
    private readonly privateKey: CryptoKey,
    readonly publicJwk: JWK,
    readonly jwksPath: string,
  ) {}

  static async create(dir: string): Promise<TestTokenIssuer> {
    const { privateKey, publicKey } = await generateKeyPair('RS256', { extractable: true });
    const publicJwk = { ...(await exportJWK(publicKey)), kid: 'test-key', alg: 'RS256', use: 'sig' };
    const jwksPath = join(dir, 'jwks.json');
    writeFileSync(jwksPath, JSON.stringify({ keys: [publicJwk] }));
    return new TestTokenIssuer(privateKey as CryptoKey, publicJwk, jwksPath);
  }

  async token(claims: TokenClaims = {}): Promise<string> {
    const now = Math.floor(Date.now() / 1000);
    const ns = claims.namespace ?? 'default';
    const sa = claims.serviceAccount ?? 'default';
    const jwt = new SignJWT({ ...(claims.extra ?? {}), 'kubernetes.io': { namespace: ns, serviceaccount: { name: sa, uid: 'uid-1' } } })
      .setProtectedHeader({ alg: 'RS256', kid: 'test-key' })
      .setIssuer(claims.iss ?? TEST_ISSUER)
      .setSubject(claims.sub ?? `system:serviceaccount:${ns}:${sa}`)
      .setAudience(claims.aud ?? 'istio-ca')
      .setIssuedAt(now - 5)
      .setExpirationTime(claims.exp ?? now + 3600);
    if (claims.nbf !== undefined) jwt.setNotBefore(claims.nbf);
    return jwt.sign(this.privateKey);
  }
}
