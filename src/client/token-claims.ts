/** The namespace and service account a ServiceAccount token names, read without verifying it (the server does that). */
export function serviceAccountOfToken(token: string): { namespace: string; serviceAccount: string } | undefined {
  try {
    const payload = JSON.parse(Buffer.from(token.split('.')[1] ?? '', 'base64url').toString('utf8')) as { sub?: string };
    const [, namespace, serviceAccount] = /^system:serviceaccount:([^:]+):([^:]+)$/.exec(payload.sub ?? '') ?? [];
    return namespace !== undefined && serviceAccount !== undefined ? { namespace, serviceAccount } : undefined;
  } catch {
    return undefined;
  }
}
