import { randomBytes } from 'node:crypto';
import { readFileSync } from 'node:fs';
import { join } from 'node:path';
import { Federation } from '../federation/federation.js';
import { startBundleEndpoint, type BundleEndpoint } from '../federation/bundle-endpoint.js';
import type { Logger } from 'pino';
import { startAdminServer, type AdminServer } from '../admin/server.js';
import {
  createJwksAuthenticator,
  createMeshAuthenticator,
  createTokenReviewAuthenticator,
  DEV_TOKEN_ISSUER,
  openDevTokenIssuer,
  type JwksAuthenticator,
} from '../authn/index.js';
import { startAutoRotation, type AutoRotator } from '../authority/auto-rotation.js';
import { startHousekeeping, type Housekeeping } from '../authority/housekeeping.js';
import { Inventory } from '../authority/inventory.js';
import { IssuanceService } from '../authority/issuance.js';
import { issueIstiodCertificate } from '../authority/istiod-profile.js';
import { CertificateAuthority } from '../authority/lifecycle.js';
import { IssuancePolicy } from '../authority/policy.js';
import { OcspResponder } from '../authority/ocsp.js';
import { RevocationService } from '../authority/revocation.js';
import { ServingIdentity } from '../authority/serving.js';
import type { TrustSnapshot } from '../authority/snapshot.js';
import type { EcdsaVerifierChoice, ServerConfig } from '../config.js';
import { certificateServiceHandlers } from '../grpc/certificate-service.js';
import { IdentityRateLimiter } from '../grpc/rate-limit.js';
import { startGrpcServer, type GrpcServer } from '../grpc/server.js';
import { startKubernetesIntegration, type KubernetesIntegration } from '../kubernetes/integration.js';
import { formatAddress, type ListenAddress } from '../net.js';
import { Metrics } from '../observability/metrics.js';
import { startMonitoringServer, type MonitoringServer } from '../observability/monitoring.js';
import { type EcdsaVerifierKind, nativeEcdsaUnavailable } from '../pki/native-ecdsa.js';
import { CsrVerifierPool } from '../pki/verify-pool.js';
import { meshcaId } from '../spiffe/id.js';
import type { Store } from '../store/types.js';
import { openServerStore } from './context.js';
import { ensureSecretFile, loadKek, prepareDataDir, readSecretFile } from './data-dir.js';
import { checkListeners } from './listeners.js';
import { MIN_ADMIN_TOKEN_LENGTH } from '../admin/auth.js';
import { UpstreamRenewer } from '../authority/upstream-renewal.js';
import { createUpstreamSigner } from '../upstream/index.js';
import { KubeClient } from '../kubernetes/client.js';
import { loadKubeConnection } from '../kubernetes/connection.js';
import { jwtSvidServiceHandlers, trustBundleServiceHandlers } from '../grpc/spiffe-service.js';
import { meshcaSpiffeServices } from '../grpc/proto.js';
import { JwtAuthority } from '../authority/jwt-authority.js';
import { JwtSvidIssuance } from '../authority/jwt-svid-issuance.js';
import { TrustBundles } from '../authority/trust-bundles.js';
import { UsageError } from '../errors.js';
import { DataDirError } from './data-dir.js';
import type { SingletonGate } from '../store/fence.js';
import { clusterMetricsSource, isWorkerProcess, workerIndex } from './cluster.js';

/** How often workers sharing a SQLite file re-read the authorities (two small queries). */
const SQLITE_WORKER_SYNC_MS = 1_000;

/** Workers other than 0 sharing a SQLite file run no singleton job. */
const notThisWorker: SingletonGate = Object.assign(async () => undefined, { held: () => false });

/** How often /metrics' store gauges are refreshed. */
const STORE_SAMPLE_MS = 5_000;

export interface RunningServer {
  readonly grpcAddress: ListenAddress;
  readonly monitoringAddress: ListenAddress;
  readonly adminAddress: ListenAddress;
  /** The https_spiffe bundle endpoint, when --bundle-endpoint-listen is set. */
  readonly bundleEndpointAddress: ListenAddress | undefined;
  readonly ca: CertificateAuthority;
  readonly jwt: JwtAuthority;
  readonly bundles: TrustBundles;
  readonly store: Store;
  readonly metrics: Metrics;
  /** SIGHUP: re-read the JWKS and re-issue the serving certificate. */
  reload(): Promise<void>;
  /** SIGTERM: drain in-flight calls, commit, close the database. */
  close(): Promise<void>;
}

/** The composition root of `meshca serve`: wires every concern from one validated config. */
export async function startServer(config: ServerConfig, logger: Logger, env: NodeJS.ProcessEnv = process.env): Promise<RunningServer> {
  if (config.dev) logger.warn('DEVELOPMENT MODE: generated secrets and a local token issuer; never use --dev in production');
  // Before anything is created on disk: a port in use (or a missing native verifier) must not leave a
  // half-made data dir behind.
  // Not in a worker of serve --workers: the primary checked, and a worker's probe would listen on the
  // shared socket, where it could take (and drop) a client's connection.
  if (!isWorkerProcess()) await checkListeners(config);
  const ecdsa = ecdsaVerifier(config.grpc.ecdsaVerifier, logger);
  prepareDataDir(config.dataDir, config.dev);
  const kek = loadKek({ kekFile: config.kekFile, env, dataDir: config.dataDir, dev: config.dev });
  if (kek.generated)
    logger.warn({ path: kek.origin }, 'generated a development key-encryption key; production must use --kek-file or MESHCA_KEK');
  const metrics = new Metrics();
  const { store, description } = await openServerStore(config.store, config.dataDir, {
    logger,
    onCommit: (rows: number, seconds: number) => {
      metrics.storeCommitDuration.observe(seconds);
      metrics.storeCommitRows.observe(rows);
    },
    minFreeDisk: { minFreeRatio: config.grpc.minFreeDiskRatio, onSample: diskReporter(metrics, logger, config) },
  });
  logger.info({ store: description }, 'store opened');
  let ready = false;
  // Not ready while a shared store is unreachable: requests would only get UNAVAILABLE.
  const scraped = isWorkerProcess() ? { registry: clusterMetricsSource(metrics.registry) } : metrics;
  const monitoring = await startMonitoringServer(config.monitoringListen, scraped, () => ready && (store.healthy?.() ?? true));
  let kubernetes: KubernetesIntegration | undefined;
  const parts: { jwt?: JwtAuthority; federation?: Federation; polling?: NodeJS.Timeout; sampler?: NodeJS.Timeout } = {};
  try {
    const upstream = createUpstreamSigner(config.upstream, { logger, kubeClient: () => kubeClient(config, logger, env) });
    const ca = await CertificateAuthority.open({
      store,
      kek: kek.kek,
      logger,
      trustDomain: config.trustDomain,
      ocspUrl: config.ocspUrl,
      ...config.ca,
      minIntermediateLifetimeMs: config.issuance.maxTtlMs,
      bootstrapSigner: upstream,
    });
    updateAuthorityMetrics(metrics, ca.current());
    ca.onChange((snapshot) => updateAuthorityMetrics(metrics, snapshot));
    // On a shared store, CRL re-signing, pruning, rotation (CA and JWT keys), upstream renewal and
    // pending-CSR expiry run on the one replica holding this lease; workers sharing a SQLite file
    // leave them to worker 0.
    const singleton = store.singleton?.('singleton-jobs') ?? (workerIndex() > 0 ? notThisWorker : undefined);
    const jwt = await JwtAuthority.open({
      store,
      kek: kek.kek,
      logger,
      keyType: config.jwtSvid.keyType,
      keyTtlMs: config.jwtSvid.keyTtlMs,
      checkIntervalMs: Math.min(60_000, config.jwtSvid.keyTtlMs / 12),
      singleton,
    });
    // JWT key changes bump the shared bundle sequence: the CA's view re-reads it.
    if (jwt.current().bundleSequence !== ca.current().bundleSequence) await ca.reload();
    jwt.onChange(
      () =>
        void ca.reload().catch((error: unknown) => logger.error({ err: error }, 'reloading the authorities after a JWT key change failed')),
    );
    jwt.start();
    parts.jwt = jwt;
    // Other replicas' authority and JWT key changes (prepare, activate, remove, import, rotate, KEK
    // re-seal): announced by a shared store, polled by workers sharing a SQLite file.
    const sync = () =>
      void Promise.all([ca.syncFromStore(), jwt.reload()]).catch((error: unknown) =>
        logger.warn({ err: error }, 'could not re-read the authorities'),
      );
    store.watch?.((event) => (event === 'authorities' || event === 'resync') && sync());
    // Sampled for /metrics: is the store reachable, and does this process run the singleton jobs.
    const sampleStore = () => {
      metrics.storeUp.set((store.healthy?.() ?? true) ? 1 : 0);
      metrics.singletonLeaseHeld.set(singleton === undefined || singleton.held?.() ? 1 : 0);
    };
    sampleStore();
    parts.sampler = setInterval(sampleStore, STORE_SAMPLE_MS);
    parts.sampler.unref();
    parts.polling = !store.watch && config.workers > 1 ? setInterval(sync, SQLITE_WORKER_SYNC_MS) : undefined;
    parts.polling?.unref();
    const federation = await Federation.start({
      peers: config.federation.peers,
      store,
      logger,
      caPem: config.federation.caFile ? readFileSync(config.federation.caFile, 'utf8') : undefined,
    });
    parts.federation = federation;
    const bundles = new TrustBundles(ca, jwt, config.trustDomain, config.bundleRefreshHintSeconds, federation);
    const jwks = await tokenAuthenticator(config, logger, metrics);
    const verifiers = new CsrVerifierPool(config.grpc.verifyThreads, ecdsa);
    const issuance = new IssuanceService(ca, store, new IssuancePolicy(config.issuance), verifiers);
    kubernetes = await startKubernetesIntegration(
      { ...config.kubernetes, trustDomain: config.trustDomain, clusterId: config.clusterId, selfId: meshcaId(config.trustDomain) },
      {
        bundle: { rootsPem: () => ca.current().rootsPem, onChange: (listener) => ca.onChange(() => listener()) },
        issueIstiodCertificate: (request) => issueIstiodCertificate(ca, issuance, request),
        logger,
        env,
      },
    );
    const review = (reviewer: Parameters<typeof createTokenReviewAuthenticator>[0]['reviewer']) =>
      createTokenReviewAuthenticator({ trustDomain: config.trustDomain, audiences: config.jwt.audiences, reviewer });
    const authenticator = createMeshAuthenticator({
      localClusterId: config.clusterId,
      jwks: jwks && { authenticator: jwks, issuer: config.jwt.jwksFile || config.jwt.jwksUrl ? config.jwt.issuer! : DEV_TOKEN_ISSUER },
      localReview: kubernetes.localReviewer && review(kubernetes.localReviewer),
      remotes: new Map([...kubernetes.remoteReviewers].map(([name, reviewer]) => [name, review(reviewer)])),
    });
    const serving = await ServingIdentity.start(ca, issuance, {
      dnsNames: config.serverDnsNames,
      spiffeId: meshcaId(config.trustDomain),
      ttlMs: Math.min(config.issuance.defaultTtlMs, 3_600_000), // short: superseded serving certs must not hold up root removal for long
      logger,
    });
    const grpc = await startGrpcServer({
      listen: config.grpc.listen,
      plaintext: config.grpc.plaintext,
      serving,
      limits: config.grpc,
      metrics,
      logger,
      handlers: certificateServiceHandlers({
        authenticator,
        impersonation: kubernetes.impersonation,
        issuance,
        metrics,
        logger,
        maxInFlight: config.grpc.maxInFlight,
        maxActive: config.grpc.maxActive,
        maxCsrBytes: 16 * 1024,
        rateLimiter: identityRateLimiter(config),
      }),
      services: [
        {
          definition: meshcaSpiffeServices().JwtSvidService.service,
          handlers: jwtSvidServiceHandlers({
            authenticator,
            jwtSvids: new JwtSvidIssuance(jwt, store, config.jwtSvid),
            metrics,
            logger,
            rateLimiter: identityRateLimiter(config),
          }),
        },
        {
          definition: meshcaSpiffeServices().TrustBundleService.service,
          handlers: trustBundleServiceHandlers(() => ({ trust_domain: config.trustDomain, bundles: bundles.all() })),
        },
      ],
    });
    const revocation = new RevocationService(ca, store, kek.kek, {
      crlValidityMs: config.crlValidityMs,
      onCrl: (crl) => {
        metrics.crlNumber.set({ authority: crl.authorityId }, crl.crlNumber);
        metrics.crlNextUpdate.set({ authority: crl.authorityId }, crl.nextUpdate.getTime() / 1000);
      },
    });
    const housekeeping = startHousekeeping({
      store,
      revocation,
      logger,
      retentionMs: config.retentionMs,
      auditRetentionMs: config.auditRetentionMs,
      crlValidityMs: config.crlValidityMs,
      singleton,
      expirePending: () => ca.expirePending('housekeeping'),
    });
    const admin = await startAdminServer(
      config.admin.listen,
      {
        ca,
        inventory: new Inventory(store),
        revocation,
        adminToken: adminToken(config, logger, env),
        clientIds: config.admin.clientIds,
        maxAuthFailuresPerMinute: config.admin.maxAuthFailuresPerMinute,
        logger,
        metrics,
        bodyLimitBytes: config.admin.bodyLimitBytes,
        requestTimeoutMs: config.admin.requestTimeoutMs,
        refreshHintSeconds: config.bundleRefreshHintSeconds,
        bundles,
        reissueServing: () => serving.reload('authority revoked'),
        ocsp: new OcspResponder(ca, store, kek.kek, logger.child({ component: 'ocsp' })),
        // issueProfile never goes beyond --default-ttl, so that is the ceiling the route reports.
        istiod: {
          ca,
          issuance,
          trustDomain: config.trustDomain,
          clusterId: config.clusterId,
          defaultTtlMs: config.kubernetes.istiodCertTtlMs,
          maxTtlMs: config.issuance.maxTtlMs,
        },
      },
      serving,
    );
    const bundleEndpoint = config.federation.bundleEndpointListen
      ? await startBundleEndpoint({
          listen: config.federation.bundleEndpointListen,
          bundle: () => JSON.stringify(bundles.own()),
          credentials: () => serving.current(),
          onRenew: (listener) => serving.onRenew(listener),
        })
      : undefined;
    const autoRotation = config.autoRotate.enabled
      ? startAutoRotation({
          ca,
          store,
          logger,
          intermediateTtlMs: config.ca.intermediateTtlMs,
          keyType: config.ca.keyType,
          checkIntervalMs: config.autoRotate.checkIntervalMs,
          singleton,
        })
      : undefined;
    const upstreamRenewal =
      upstream && config.upstream.kind !== 'none'
        ? new UpstreamRenewer({
            ca,
            store,
            signer: upstream,
            logger,
            intermediateTtlMs: config.ca.intermediateTtlMs,
            checkIntervalMs: config.upstream.renewal.checkIntervalMs,
            retry: { initialMs: config.upstream.renewal.retryInitialMs, maxMs: config.upstream.renewal.retryMaxMs },
            singleton,
            onAttempt: (result, overdue) => {
              metrics.upstreamRequests.inc({ upstream: upstream.kind, result });
              metrics.upstreamRenewalOverdue.set(overdue ? 1 : 0);
            },
          }).start()
        : undefined;
    if (upstreamRenewal)
      logger.info(
        { upstream: upstream!.kind },
        `upstream CA: ${upstream!.kind} signs the intermediate; a new one is requested at 2/3 of its lifetime and activated at 5/6`,
      );
    ready = true;
    logger.info(
      {
        grpc: formatAddress(grpc.address),
        tls: !config.grpc.plaintext,
        admin: `https://${formatAddress(admin.address)}`,
        monitoring: formatAddress(monitoring.address),
        trustDomain: config.trustDomain,
        bundle: `https://${formatAddress(admin.address)}/v1/bundle`,
      },
      'meshca is serving',
    );
    return {
      grpcAddress: grpc.address,
      monitoringAddress: monitoring.address,
      adminAddress: admin.address,
      bundleEndpointAddress: bundleEndpoint?.address,
      ca,
      jwt,
      bundles,
      store,
      metrics,
      reload: async () => {
        await jwks?.reload();
        await ca.reload();
        await serving.reload('SIGHUP');
      },
      close: () => {
        clearInterval(parts.polling);
        clearInterval(parts.sampler);
        return shutdown(
          config,
          {
            grpc,
            admin,
            serving,
            store,
            monitoring,
            housekeeping,
            verifiers,
            kubernetes: kubernetes!,
            autoRotation,
            jwt,
            federation,
            bundleEndpoint,
            upstreamRenewal,
            jwks,
          },
          () => (ready = false),
        );
      },
    };
  } catch (error) {
    clearInterval(parts.polling);
    clearInterval(parts.sampler);
    await parts.jwt?.stop();
    parts.federation?.stop();
    await kubernetes?.close().catch(() => undefined);
    await store.close().catch(() => undefined);
    await monitoring.close();
    throw error;
  }
}

/**
 * serve --workers: what the primary does once before forking, so that workers never race to create
 * the dev secrets or (on an empty store) the first CA: each worker then finds them.
 */
export async function prepareSharedState(config: ServerConfig, logger: Logger, env: NodeJS.ProcessEnv = process.env): Promise<void> {
  await checkListeners(config);
  ecdsaVerifier(config.grpc.ecdsaVerifier, logger); // refuse here, not in every worker
  prepareDataDir(config.dataDir, config.dev);
  const kek = loadKek({ kekFile: config.kekFile, env, dataDir: config.dataDir, dev: config.dev });
  adminToken(config, logger, env);
  if (config.dev && !config.jwt.jwksFile && !config.jwt.jwksUrl) await openDevTokenIssuer(config.dataDir);
  const { store } = await openServerStore(config.store, config.dataDir, { logger, onCommit: () => undefined });
  try {
    const upstream = createUpstreamSigner(config.upstream, { logger, kubeClient: () => kubeClient(config, logger, env) });
    await CertificateAuthority.open({
      store,
      kek: kek.kek,
      logger,
      trustDomain: config.trustDomain,
      ...config.ca,
      minIntermediateLifetimeMs: config.issuance.maxTtlMs,
      bootstrapSigner: upstream,
    });
    await (
      await JwtAuthority.open({ store, kek: kek.kek, logger, keyType: config.jwtSvid.keyType, keyTtlMs: config.jwtSvid.keyTtlMs })
    ).stop();
  } finally {
    await store.close();
  }
}

function kubeClient(config: ServerConfig, logger: Logger, env: NodeJS.ProcessEnv): KubeClient {
  return new KubeClient({
    connection: loadKubeConnection({ kubeconfig: config.kubernetes.kubeconfig, env }),
    qps: config.kubernetes.qps,
    burst: config.kubernetes.burst,
    timeoutMs: config.kubernetes.requestTimeoutMs,
    logger,
  });
}

/** --ecdsa-verifier: the native addon when built (required for `native`), else node:crypto. */
function ecdsaVerifier(choice: EcdsaVerifierChoice, logger: Logger): EcdsaVerifierKind {
  if (choice === 'node') return 'node';
  const unavailable = nativeEcdsaUnavailable();
  if (unavailable === undefined) return 'native';
  if (choice === 'native') throw new UsageError(`--ecdsa-verifier native: the native ECDSA verifier cannot load: ${unavailable}`);
  logger.warn(
    { reason: unavailable },
    'native ECDSA verifier unavailable; CSR signatures are checked through node:crypto (about twice the CPU)',
  );
  return 'node';
}

/** --rate-limit-per-identity (burst 5×); each service gets buckets of its own. */
function identityRateLimiter(config: ServerConfig): IdentityRateLimiter | undefined {
  const rate = config.grpc.rateLimitPerIdentity;
  return rate > 0 ? new IdentityRateLimiter(rate, Math.max(1, rate * 5)) : undefined;
}

/** The offline (JWKS) validator; undefined when only --token-review validates tokens. */
async function tokenAuthenticator(config: ServerConfig, logger: Logger, metrics: Metrics): Promise<JwksAuthenticator | undefined> {
  const common = {
    trustDomain: config.trustDomain,
    audiences: config.jwt.audiences,
    clusterId: config.clusterId,
    onCacheHit: () => metrics.tokenCacheHits.inc(),
  };
  if (config.jwt.jwksFile) return createJwksAuthenticator({ ...common, issuer: config.jwt.issuer!, jwks: { file: config.jwt.jwksFile } });
  if (config.jwt.jwksUrl) return createJwksAuthenticator({ ...common, issuer: config.jwt.issuer!, jwks: { url: config.jwt.jwksUrl } });
  if (!config.dev) return undefined;
  const dev = await openDevTokenIssuer(config.dataDir);
  logger.warn(
    { issuer: dev.issuer },
    `accepting development tokens: get one with "meshca dev-token --data-dir ${config.dataDir} --namespace NS --service-account SA"`,
  );
  return createJwksAuthenticator({ ...common, issuer: dev.issuer, jwks: { keys: dev.jwks } });
}

interface Parts {
  readonly grpc: GrpcServer;
  readonly admin: AdminServer;
  readonly serving: ServingIdentity;
  readonly store: Store;
  readonly monitoring: MonitoringServer;
  readonly housekeeping: Housekeeping;
  readonly kubernetes: KubernetesIntegration;
  readonly verifiers: CsrVerifierPool;
  readonly autoRotation: AutoRotator | undefined;
  readonly jwt: JwtAuthority;
  readonly federation: Federation;
  readonly bundleEndpoint: BundleEndpoint | undefined;
  readonly upstreamRenewal: UpstreamRenewer | undefined;
  readonly jwks: JwksAuthenticator | undefined;
}

async function shutdown(
  config: ServerConfig,
  {
    grpc,
    admin,
    serving,
    store,
    monitoring,
    housekeeping,
    verifiers,
    kubernetes,
    autoRotation,
    jwt,
    federation,
    bundleEndpoint,
    upstreamRenewal,
    jwks,
  }: Parts,
  notReady: () => void,
): Promise<void> {
  notReady();
  await autoRotation?.stop(); // a step in progress commits before the store closes
  await upstreamRenewal?.stop();
  await jwt.stop();
  federation.stop();
  await bundleEndpoint?.close();
  await kubernetes.close(); // leader tasks stop and the lease is released before the store closes
  housekeeping.stop();
  await Promise.all([grpc.close(config.shutdownTimeoutMs), admin.close()]);
  jwks?.close(); // only after the drain: in-flight calls are still authenticating
  serving.close();
  await verifiers.close();
  await store.close();
  await monitoring.close();
}

/**
 * --admin-token-file, else MESHCA_ADMIN_TOKEN (replicas share it from one Secret, as MESHCA_KEK),
 * else <data-dir>/admin-token generated on first start (0600).
 */
function adminToken(config: ServerConfig, logger: Logger, env: NodeJS.ProcessEnv): string {
  if (config.admin.tokenFile)
    return strongAdminToken(
      readSecretFile(config.admin.tokenFile, (text) => text.trim()),
      config.admin.tokenFile,
    );
  const fromEnv = env.MESHCA_ADMIN_TOKEN?.trim();
  if (fromEnv) return strongAdminToken(fromEnv, 'MESHCA_ADMIN_TOKEN');
  const path = join(config.dataDir, 'admin-token');
  const { value, created } = ensureSecretFile(path, () => randomBytes(32).toString('base64url'));
  logger.info({ path, created }, 'admin API token file (send it as "Authorization: Bearer <token>")');
  return strongAdminToken(value, path);
}

function strongAdminToken(token: string, path: string): string {
  if (token.length >= MIN_ADMIN_TOKEN_LENGTH) return token;
  throw new DataDirError(
    `the admin token in ${path} has ${token.length} characters; at least ${MIN_ADMIN_TOKEN_LENGTH} are required. Generate one with: openssl rand -base64 32 | tr -d '\\n' > ${path} && chmod 600 ${path}`,
  );
}

/** Metrics on every sample; an error line when issuance stops for lack of space (and every minute while it lasts). */
function diskReporter(metrics: Metrics, logger: Logger, config: ServerConfig) {
  let loggedAt = -Infinity;
  return (freeRatio: number, low: boolean, changed: boolean) => {
    metrics.dataVolumeFreeRatio.set(freeRatio);
    metrics.diskLow.set(low ? 1 : 0);
    const fields = {
      dataDir: config.dataDir,
      freePercent: Number((freeRatio * 100).toFixed(2)),
      minFreePercent: config.grpc.minFreeDiskRatio * 100,
    };
    if (low && (changed || performance.now() - loggedAt > 60_000)) {
      loggedAt = performance.now();
      logger.error(fields, 'DATA VOLUME ALMOST FULL: refusing new certificates with UNAVAILABLE until space is freed (--min-free-disk)');
    } else if (!low && changed) logger.warn(fields, 'data volume has room again: issuing certificates');
  };
}

function updateAuthorityMetrics(metrics: Metrics, snapshot: TrustSnapshot): void {
  metrics.bundleSequence.set(snapshot.bundleSequence);
  metrics.authorityState.reset();
  metrics.authorityExpiry.reset();
  for (const a of snapshot.authorities) {
    metrics.authorityState.set({ id: a.id, kind: a.kind, state: a.state }, 1);
    if (a.state !== 'removed') metrics.authorityExpiry.set({ id: a.id, kind: a.kind, state: a.state }, a.notAfter.getTime() / 1000);
    else {
      metrics.crlNumber.remove({ authority: a.id });
      metrics.crlNextUpdate.remove({ authority: a.id });
    }
  }
  const rootExpiries = snapshot.authorities.filter((a) => a.kind === 'root' && a.state !== 'removed').map((a) => a.notAfter.getTime());
  metrics.rootExpiry.set(Math.min(...rootExpiries) / 1000);
  metrics.chainExpiry.set(snapshot.signer.notAfter.getTime() / 1000);
}
