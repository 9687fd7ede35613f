import { X509Certificate } from 'node:crypto';
import { join } from 'node:path';
import { status } from '@grpc/grpc-js';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { openDevTokenIssuer, type DevTokenIssuer } from '../src/authn/index.js';
import { KubeApiSimulator } from './support/kube-api.js';
import { csrFor, removeDir, startTestServer, tempDir, type TestServer } from './support/server.js';

/**
 * One meshca validating local-cluster ("Kubernetes") tokens offline with the dev JWKS and, for every
 * other issuer, by TokenReview on API server "east"; remote cluster "west" by TokenReview on its own
 * API server; ztunnel (istio-system/ztunnel) trusted to impersonate pods on its node.
 */
const id = (ns: string, sa: string, td = 'cluster.local') => `spiffe://${td}/ns/${ns}/sa/${sa}`;
const REVIEWS = /^\/apis\/authentication\.k8s\.io\/v1\/tokenreviews$/;
const OK = 'OK' as const;
type Outcome = status | typeof OK;

let dir: string;
let east: KubeApiSimulator;
let west: KubeApiSimulator;
let t: TestServer;
let dev: DevTokenIssuer;

beforeAll(async () => {
  dir = tempDir();
  [east, west] = await Promise.all([KubeApiSimulator.start(join(dir, 'east'), 'east'), KubeApiSimulator.start(join(dir, 'west'), 'west')]);
  t = await startTestServer(join(dir, 'data'), [
    '--dev',
    '--token-review',
    '--kubeconfig',
    east.kubeconfig('token-file'),
    '--cluster',
    `west=${west.kubeconfig('client-cert')}`,
    '--trusted-node-accounts',
    'istio-system/ztunnel',
  ]);
  dev = await openDevTokenIssuer(join(dir, 'data'));
});

afterAll(async () => {
  await t?.close();
  await Promise.all([east?.close(), west?.close()]);
  removeDir(dir);
});

interface Call {
  readonly token: string;
  /** The identity the CSR asks for. */
  readonly identity: string;
  readonly clusterId?: string;
  readonly impersonate?: string;
}

async function request(c: Call): Promise<{ code: Outcome; details?: string; chain?: string[] }> {
  try {
    const chain = await t
      .client()
      .createCertificate({ csrPem: await csrFor(c.identity), token: c.token, clusterId: c.clusterId, impersonatedIdentity: c.impersonate });
    return { code: OK, chain };
  } catch (error) {
    const e = error as { code: status; details: string };
    return { code: e.code, details: e.details };
  }
}

async function record(chain: readonly string[]) {
  const serial = new X509Certificate(chain[0]!).serialNumber.toLowerCase().replace(/^0+/, '');
  return t.server.store.getCertificate(serial, new Date());
}

describe('TokenReview authentication (--token-review)', () => {
  const cases: { name: string; token: () => string; code: Outcome }[] = [
    {
      name: 'a service-account token for our audience is accepted',
      token: () => east.serviceAccountToken({ namespace: 'shop', serviceAccount: 'cart' }),
      code: OK,
    },
    {
      name: 'a token the API server does not know is unauthenticated',
      token: () => west.serviceAccountToken({ namespace: 'shop', serviceAccount: 'cart' }),
      code: status.UNAUTHENTICATED,
    },
    {
      name: 'an expired token is unauthenticated',
      token: () => east.serviceAccountToken({ namespace: 'shop', serviceAccount: 'cart', ttlSeconds: -60 }),
      code: status.UNAUTHENTICATED,
    },
    {
      name: 'a token for another audience is unauthenticated',
      token: () => east.serviceAccountToken({ namespace: 'shop', serviceAccount: 'cart', audiences: ['kubernetes'] }),
      code: status.UNAUTHENTICATED,
    },
    {
      name: 'a user outside group system:serviceaccounts is unauthenticated',
      token: () => east.userToken('system:serviceaccount:shop:cart', ['system:authenticated']),
      code: status.UNAUTHENTICATED,
    },
    {
      name: 'a user name that is not a service account is unauthenticated',
      token: () => east.userToken('alice', ['system:serviceaccounts', 'system:authenticated']),
      code: status.UNAUTHENTICATED,
    },
    {
      name: 'a valid token for another service account gets PERMISSION_DENIED',
      token: () => east.serviceAccountToken({ namespace: 'shop', serviceAccount: 'admin' }),
      code: status.PERMISSION_DENIED,
    },
  ];

  it.each(cases)('$name', async ({ token, code }) => {
    const reviews = east.count('POST', REVIEWS);
    const result = await request({ token: token(), identity: id('shop', 'cart') });
    expect(result.code, result.details).toBe(code);
    expect(east.count('POST', REVIEWS)).toBe(reviews + 1);
    const review = JSON.parse(east.requests.filter((r) => REVIEWS.test(r.path)).at(-1)!.body) as {
      apiVersion: string;
      kind: string;
      spec: { audiences: string[] };
    };
    expect(review).toMatchObject({ apiVersion: 'authentication.k8s.io/v1', kind: 'TokenReview', spec: { audiences: ['istio-ca'] } });
    if (result.chain) {
      expect(new X509Certificate(result.chain[0]!).subjectAltName).toBe(`URI:${id('shop', 'cart')}`);
      expect(await record(result.chain)).toMatchObject({
        spiffeId: id('shop', 'cart'),
        callerId: id('shop', 'cart'),
        clusterId: 'Kubernetes',
      });
    }
  });

  it('an API server that ignores audiences (no status.audiences) is not taken as a yes', async () => {
    east.audienceAware = false;
    try {
      const result = await request({
        token: east.serviceAccountToken({ namespace: 'shop', serviceAccount: 'cart', audiences: ['kubernetes'] }),
        identity: id('shop', 'cart'),
      });
      expect(result.code).toBe(status.UNAUTHENTICATED);
    } finally {
      east.audienceAware = true;
    }
  });

  it('caches an accepted token: repeated and concurrent requests cost one review', async () => {
    const token = east.serviceAccountToken({ namespace: 'shop', serviceAccount: 'cart' });
    const reviews = east.count('POST', REVIEWS);
    const results = await Promise.all(Array.from({ length: 5 }, () => request({ token, identity: id('shop', 'cart') })));
    expect((await request({ token, identity: id('shop', 'cart') })).code).toBe(OK);
    expect(results.map((r) => r.code)).toEqual(Array(5).fill(OK));
    expect(east.count('POST', REVIEWS)).toBe(reviews + 1);
  });

  it('caches a rejected token only for a few seconds', async () => {
    const token = east.serviceAccountToken({ namespace: 'shop', serviceAccount: 'cart', audiences: ['kubernetes'] });
    const reviews = east.count('POST', REVIEWS);
    expect((await request({ token, identity: id('shop', 'cart') })).code).toBe(status.UNAUTHENTICATED);
    expect((await request({ token, identity: id('shop', 'cart') })).code).toBe(status.UNAUTHENTICATED);
    expect(east.count('POST', REVIEWS)).toBe(reviews + 1);
    await new Promise((r) => setTimeout(r, 2_100));
    expect((await request({ token, identity: id('shop', 'cart') })).code).toBe(status.UNAUTHENTICATED);
    expect(east.count('POST', REVIEWS)).toBe(reviews + 2);
  });
});

describe('JWKS and TokenReview combined', () => {
  it('a token from the JWKS issuer is verified offline, without a review', async () => {
    const reviews = east.count('POST', REVIEWS);
    const token = await dev.sign({ namespace: 'shop', serviceAccount: 'cart', ttlSeconds: 600 });
    expect((await request({ token, identity: id('shop', 'cart') })).code).toBe(OK);
    expect(east.count('POST', REVIEWS)).toBe(reviews);
  });

  it('a forged token claiming the JWKS issuer is rejected by JWKS, never sent to TokenReview', async () => {
    const reviews = east.count('POST', REVIEWS);
    const [h, p, s] = (await dev.sign({ namespace: 'shop', serviceAccount: 'cart', ttlSeconds: 600 })).split('.');
    const forged = `${h}.${p}.${s!.startsWith('A') ? 'B' : 'A'}${s!.slice(1)}`;
    expect((await request({ token: forged, identity: id('shop', 'cart') })).code).toBe(status.UNAUTHENTICATED);
    expect(east.count('POST', REVIEWS)).toBe(reviews);
  });
});

describe('multi-cluster: the clusterid header picks the API server that validates the token', () => {
  const cases: { name: string; token: () => string; clusterId: string; code: Outcome; reviewedBy?: 'east' | 'west' }[] = [
    {
      name: "west's token with clusterid west",
      token: () => west.serviceAccountToken({ namespace: 'shop', serviceAccount: 'cart' }),
      clusterId: 'west',
      code: OK,
      reviewedBy: 'west',
    },
    {
      name: "east's token with clusterid Kubernetes (local)",
      token: () => east.serviceAccountToken({ namespace: 'shop', serviceAccount: 'cart' }),
      clusterId: 'Kubernetes',
      code: OK,
      reviewedBy: 'east',
    },
    {
      name: "west's token with the local clusterid",
      token: () => west.serviceAccountToken({ namespace: 'shop', serviceAccount: 'cart' }),
      clusterId: 'Kubernetes',
      code: status.UNAUTHENTICATED,
      reviewedBy: 'east',
    },
    {
      name: "east's token with clusterid west",
      token: () => east.serviceAccountToken({ namespace: 'shop', serviceAccount: 'cart' }),
      clusterId: 'west',
      code: status.UNAUTHENTICATED,
      reviewedBy: 'west',
    },
    {
      name: 'an unknown clusterid',
      token: () => west.serviceAccountToken({ namespace: 'shop', serviceAccount: 'cart' }),
      clusterId: 'north',
      code: status.UNAUTHENTICATED,
    },
  ];

  it.each(cases)('$name → $code', async ({ token, clusterId, code, reviewedBy }) => {
    const before = { east: east.count('POST', REVIEWS), west: west.count('POST', REVIEWS) };
    const result = await request({ token: token(), identity: id('shop', 'cart'), clusterId });
    expect(result.code, result.details).toBe(code);
    expect({ east: east.count('POST', REVIEWS) - before.east, west: west.count('POST', REVIEWS) - before.west }).toEqual({
      east: reviewedBy === 'east' ? 1 : 0,
      west: reviewedBy === 'west' ? 1 : 0,
    });
    if (result.chain) expect(await record(result.chain)).toMatchObject({ spiffeId: id('shop', 'cart'), clusterId });
  });

  it("one cluster's API being down leaves the others working", async () => {
    await west.stop();
    try {
      expect(
        (
          await request({
            token: west.serviceAccountToken({ namespace: 'shop', serviceAccount: 'cart' }),
            identity: id('shop', 'cart'),
            clusterId: 'west',
          })
        ).code,
      ).toBe(status.UNAVAILABLE);
      expect(
        (await request({ token: east.serviceAccountToken({ namespace: 'shop', serviceAccount: 'cart' }), identity: id('shop', 'cart') }))
          .code,
      ).toBe(OK);
    } finally {
      await west.resume();
    }
    expect(
      (
        await request({
          token: west.serviceAccountToken({ namespace: 'shop', serviceAccount: 'cart' }),
          identity: id('shop', 'cart'),
          clusterId: 'west',
        })
      ).code,
    ).toBe(OK);
  });
});

describe('ztunnel impersonation (--trusted-node-accounts)', () => {
  let ztunnelUid: string;
  let stoppedUid: string;
  const ztunnel = (over: { podName?: string; podUid?: string; nodeName?: string } = {}) =>
    east.serviceAccountToken({
      namespace: 'istio-system',
      serviceAccount: 'ztunnel',
      podName: 'ztunnel-n1',
      podUid: ztunnelUid,
      nodeName: 'n1',
      ...over,
    });

  beforeAll(() => {
    ztunnelUid = east.addPod({ namespace: 'istio-system', name: 'ztunnel-n1', serviceAccount: 'ztunnel', nodeName: 'n1' });
    stoppedUid = east.addPod({
      namespace: 'istio-system',
      name: 'ztunnel-old',
      serviceAccount: 'ztunnel',
      nodeName: 'n1',
      phase: 'Failed',
    });
    east.addPod({ namespace: 'shop', name: 'web-1', serviceAccount: 'web', nodeName: 'n1' });
    east.addPod({ namespace: 'shop', name: 'web-2', serviceAccount: 'web', nodeName: 'n2' });
    east.addPod({ namespace: 'shop', name: 'fresh-1', serviceAccount: 'fresh', nodeName: 'n1', phase: 'Pending' });
    east.addPod({ namespace: 'shop', name: 'db-1', serviceAccount: 'db', nodeName: 'n2' });
    east.addPod({ namespace: 'shop', name: 'job-1', serviceAccount: 'batch', nodeName: 'n1', phase: 'Succeeded' });
    east.addPod({ namespace: 'shop', name: 'crash-1', serviceAccount: 'flaky', nodeName: 'n1', phase: 'Failed' });
  });

  const cases: { name: string; token: () => string | Promise<string>; impersonate: string; csr?: string; why?: RegExp; code: Outcome }[] = [
    {
      name: "allowed: a running pod with that identity is on the caller's node",
      token: () => ztunnel(),
      impersonate: id('shop', 'web'),
      code: OK,
    },
    { name: 'allowed: a pending (scheduled) pod counts', token: () => ztunnel(), impersonate: id('shop', 'fresh'), code: OK },
    {
      name: 'allowed: caller validated offline (JWKS), pod from the kubernetes.io claim',
      token: () =>
        dev.sign({
          namespace: 'istio-system',
          serviceAccount: 'ztunnel',
          ttlSeconds: 600,
          podName: 'ztunnel-n1',
          podUid: ztunnelUid,
          nodeName: 'n1',
        }),
      impersonate: id('shop', 'web'),
      code: OK,
    },
    {
      name: 'denied: the caller is not a trusted node account',
      token: () => east.serviceAccountToken({ namespace: 'shop', serviceAccount: 'web', podName: 'web-1', nodeName: 'n1' }),
      impersonate: id('shop', 'fresh'),
      why: /not a trusted node account/,
      code: status.UNAUTHENTICATED,
    },
    {
      name: "denied: the caller's token is not bound to a pod",
      token: () => east.serviceAccountToken({ namespace: 'istio-system', serviceAccount: 'ztunnel' }),
      impersonate: id('shop', 'web'),
      why: /not bound to a pod/,
      code: status.UNAUTHENTICATED,
    },
    {
      name: "denied: the caller's pod does not exist",
      token: () => ztunnel({ podName: 'ztunnel-gone' }),
      impersonate: id('shop', 'web'),
      why: /of the caller does not exist/,
      code: status.UNAUTHENTICATED,
    },
    {
      name: "denied: the caller's pod has another uid (recreated)",
      token: () => ztunnel({ podUid: '00000000-0000-0000-0000-000000000000' }),
      impersonate: id('shop', 'web'),
      why: /has uid/,
      code: status.UNAUTHENTICATED,
    },
    {
      name: "denied: the caller's pod has terminated",
      token: () => ztunnel({ podName: 'ztunnel-old', podUid: stoppedUid }),
      impersonate: id('shop', 'web'),
      why: /has terminated/,
      code: status.UNAUTHENTICATED,
    },
    {
      name: 'denied: the token names another node than the pod runs on',
      token: () => ztunnel({ nodeName: 'n9' }),
      impersonate: id('shop', 'web'),
      why: /not on the token's node/,
      code: status.UNAUTHENTICATED,
    },
    {
      name: 'denied: the identity runs only on another node',
      token: () => ztunnel(),
      impersonate: id('shop', 'db'),
      why: /no running pod of shop\/db on node n1/,
      code: status.UNAUTHENTICATED,
    },
    {
      name: "denied: the identity's only pod on the node has Succeeded",
      token: () => ztunnel(),
      impersonate: id('shop', 'batch'),
      why: /no running pod of shop\/batch/,
      code: status.UNAUTHENTICATED,
    },
    {
      name: "denied: the identity's only pod on the node has Failed",
      token: () => ztunnel(),
      impersonate: id('shop', 'flaky'),
      why: /no running pod of shop\/flaky/,
      code: status.UNAUTHENTICATED,
    },
    {
      name: 'denied: no pod has the identity',
      token: () => ztunnel(),
      impersonate: id('shop', 'ghost'),
      why: /no running pod of shop\/ghost/,
      code: status.UNAUTHENTICATED,
    },
    {
      name: 'denied: the identity is in another trust domain',
      token: () => ztunnel(),
      impersonate: id('shop', 'web', 'evil.example'),
      why: /outside trust domain/,
      code: status.UNAUTHENTICATED,
    },
    {
      name: 'denied: the identity is not a workload SPIFFE ID',
      token: () => ztunnel(),
      impersonate: 'spiffe://cluster.local/shop/web',
      why: /not a workload SPIFFE ID/,
      code: status.UNAUTHENTICATED,
    },
    {
      name: 'denied: the CSR asks for another identity than the impersonated one',
      token: () => ztunnel(),
      impersonate: id('shop', 'web'),
      csr: id('shop', 'db'),
      why: /CSR must ask for exactly/,
      code: status.PERMISSION_DENIED,
    },
  ];

  it.each(cases)('$name', async ({ token, impersonate, csr, code, why }) => {
    const result = await request({ token: await token(), identity: csr ?? impersonate, impersonate });
    expect(result.code, result.details).toBe(code);
    if (why) expect(result.details).toMatch(why);
    if (result.chain) {
      expect(new X509Certificate(result.chain[0]!).subjectAltName).toBe(`URI:${impersonate}`);
      // The record keeps both identities: whom the certificate is for, and who asked.
      expect(await record(result.chain)).toMatchObject({
        spiffeId: impersonate,
        callerId: id('istio-system', 'ztunnel'),
        clusterId: 'Kubernetes',
      });
    }
  });

  it('pod checks that cannot reach the API are UNAVAILABLE, not a denial', async () => {
    const uid = east.addPod({ namespace: 'istio-system', name: 'ztunnel-n3', serviceAccount: 'ztunnel', nodeName: 'n1' });
    const token = ztunnel({ podName: 'ztunnel-n3', podUid: uid });
    east.fault = { status: 503, match: /\/pods/ };
    try {
      expect((await request({ token, identity: id('shop', 'web'), impersonate: id('shop', 'web') })).code).toBe(status.UNAVAILABLE);
    } finally {
      east.fault = undefined;
    }
    expect((await request({ token, identity: id('shop', 'web'), impersonate: id('shop', 'web') })).code).toBe(OK);
  });
});

describe('an unreachable API server means UNAVAILABLE (istio-agent retries), never a verdict', () => {
  it('5xx answers are retried, then UNAVAILABLE', async () => {
    const reviews = east.count('POST', REVIEWS);
    east.fault = { status: 503, match: REVIEWS };
    try {
      const result = await request({
        token: east.serviceAccountToken({ namespace: 'shop', serviceAccount: 'cart' }),
        identity: id('shop', 'cart'),
      });
      expect(result.code, result.details).toBe(status.UNAVAILABLE);
      expect(east.count('POST', REVIEWS) - reviews).toBe(3);
    } finally {
      east.fault = undefined;
    }
  });

  it('while the API server is down: new tokens UNAVAILABLE; cached and JWKS tokens still work; then it recovers', async () => {
    const cached = east.serviceAccountToken({ namespace: 'shop', serviceAccount: 'cart' });
    expect((await request({ token: cached, identity: id('shop', 'cart') })).code).toBe(OK);
    await east.stop();
    try {
      const fresh = await request({
        token: east.serviceAccountToken({ namespace: 'shop', serviceAccount: 'cart' }),
        identity: id('shop', 'cart'),
      });
      expect(fresh.code, fresh.details).toBe(status.UNAVAILABLE);
      expect(fresh.details).toMatch(/Kubernetes API|TokenReview/);
      expect((await request({ token: cached, identity: id('shop', 'cart') })).code).toBe(OK);
      expect(
        (
          await request({
            token: await dev.sign({ namespace: 'shop', serviceAccount: 'cart', ttlSeconds: 600 }),
            identity: id('shop', 'cart'),
          })
        ).code,
      ).toBe(OK);
    } finally {
      await east.resume();
    }
    expect(
      (await request({ token: east.serviceAccountToken({ namespace: 'shop', serviceAccount: 'cart' }), identity: id('shop', 'cart') }))
        .code,
    ).toBe(OK);
  });
});
