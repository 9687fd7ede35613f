/** The namespace and service account a ServiceAccount token names, read without verifying it (the server does that). */
export function serviceAccountOfToken(token: string): { namespace: string; serviceAccount: string } | undefined {
  try {
    const payload = JSON.parse(Buffer.from(token.split('.')[1] ?? '', 'base64url').toString('utf8')) as { sub?: string };
    const m = /^system:serviceaccount:([^:]+):([^:]+)$/.exec(payload.sub ?? '');
    return m ? { namespace: m[1]!, serviceAccount: m[2]! } : undefined;
  } catch {
    return undefined;
  }
}
