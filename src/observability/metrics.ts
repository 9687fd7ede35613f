import { type Aggregator, Counter, Gauge, Histogram, Registry, collectDefaultMetrics } from 'prom-client';

/**
 * Every metric meshca exports, on a registry of its own (no prom-client global), so several
 * servers in one test process do not collide. Names follow istiod's (docs/architecture.md).
 * Under serve --workers, /metrics sums counters and histograms over the workers; every gauge says
 * how it combines (an expiry is the earliest, a count of connections the sum).
 */
export class Metrics {
  readonly registry = new Registry();
  readonly csrCount = this.counter('citadel_server_csr_count', 'Number of certificate signing requests received.');
  readonly authenticationFailures = this.counter(
    'citadel_server_authentication_failure_count',
    'Number of requests rejected because the caller could not be authenticated.',
  );
  readonly csrParsingErrors = this.counter('citadel_server_csr_parsing_err_count', 'Number of CSRs that could not be parsed.');
  readonly idExtractionErrors = this.counter(
    'citadel_server_id_extraction_err_count',
    'Number of CSRs whose identity did not match the caller.',
  );
  readonly signErrors = new Counter({
    name: 'citadel_server_csr_sign_err_count',
    help: 'Number of CSRs that could not be signed, by error.',
    labelNames: ['error'] as const,
    registers: [this.registry],
  });
  readonly issued = this.counter('citadel_server_success_cert_issuance_count', 'Number of certificates issued.');
  readonly rootExpiry = this.gauge('citadel_server_root_cert_expiry_timestamp', 'Unix time (s) the earliest trusted root expires.', 'min');
  readonly chainExpiry = this.gauge('citadel_server_cert_chain_expiry_timestamp', 'Unix time (s) the active signing chain expires.', 'min');
  readonly issuanceDuration = new Histogram({
    name: 'meshca_issuance_duration_seconds',
    help: 'Time from receiving a CreateCertificate call to answering it, by gRPC status.',
    labelNames: ['code'] as const,
    buckets: [0.0005, 0.001, 0.002, 0.005, 0.01, 0.02, 0.05, 0.1, 0.25, 0.5, 1, 2.5],
    registers: [this.registry],
  });
  readonly storeCommitDuration = new Histogram({
    name: 'meshca_store_commit_duration_seconds',
    help: 'Time to durably commit one batch of issuance records.',
    buckets: [0.0005, 0.001, 0.002, 0.005, 0.01, 0.02, 0.05, 0.1, 0.5],
    registers: [this.registry],
  });
  readonly storeCommitRows = new Histogram({
    name: 'meshca_store_commit_rows',
    help: 'Issuance records per committed batch (group commit).',
    buckets: [1, 2, 4, 8, 16, 32, 64, 128, 256],
    registers: [this.registry],
  });
  readonly bundleSequence = this.gauge('meshca_bundle_sequence', 'Current trust bundle sequence number.', 'max');
  readonly upstreamRequests = new Counter({
    name: 'meshca_upstream_requests_total',
    help: 'Requests to the upstream CA for a new intermediate, by upstream and result.',
    labelNames: ['upstream', 'result'] as const,
    registers: [this.registry],
  });
  readonly upstreamRenewalOverdue = this.gauge(
    'meshca_upstream_renewal_overdue',
    '1 while the active intermediate is past 5/6 of its lifetime and the upstream CA has not signed its successor: alert on it.',
    'max',
  );
  readonly authorityState = new Gauge({
    name: 'meshca_authority_state',
    help: '1 for the state each authority is in.',
    labelNames: ['id', 'kind', 'state'] as const,
    aggregator: 'max',
    registers: [this.registry],
  });
  readonly authorityExpiry = new Gauge({
    name: 'meshca_authority_expiry_timestamp_seconds',
    help: 'Unix time (s) each non-removed authority certificate expires.',
    labelNames: ['id', 'kind', 'state'] as const,
    aggregator: 'min',
    registers: [this.registry],
  });
  readonly inFlight = this.gauge('meshca_grpc_in_flight_requests', 'CreateCertificate calls being processed.', 'sum');
  readonly shed = this.counter('meshca_grpc_shed_requests_total', 'Calls refused with RESOURCE_EXHAUSTED by the in-flight limit.');
  readonly grpcConnections = this.gauge('meshca_grpc_connections', 'Open gRPC (TCP) connections.', 'sum');
  readonly grpcRefusedConnections = new Counter({
    name: 'meshca_grpc_refused_connections_total',
    help: 'gRPC connections refused by --max-connections (reason="total") or --max-connections-per-peer (reason="per_peer").',
    labelNames: ['reason'] as const,
    registers: [this.registry],
  });
  readonly requestReadTimeouts = this.counter(
    'meshca_grpc_request_read_timeouts_total',
    'Calls cancelled because their request message did not arrive within --request-read-timeout.',
  );
  readonly dataVolumeFreeRatio = this.gauge(
    'meshca_data_volume_free_ratio',
    'Share (0..1) of the data volume that is free, sampled at issuance.',
    'min',
  );
  readonly diskLow = this.gauge(
    'meshca_data_volume_low',
    '1 while new certificates are refused because free space is under --min-free-disk.',
    'max',
  );
  readonly tokenCacheHits = this.counter('meshca_token_cache_hits_total', 'Token verifications answered from the cache.');
  readonly revoked = this.counter('meshca_revoked_certificates_total', 'Certificates revoked.');
  readonly denied = this.counter('meshca_denied_requests_total', 'Requests refused because the identity is on the deny-list.');
  readonly crlNumber = new Gauge({
    name: 'meshca_crl_number',
    help: 'Current CRL number per authority.',
    labelNames: ['authority'] as const,
    aggregator: 'max',
    registers: [this.registry],
  });
  readonly crlNextUpdate = new Gauge({
    name: 'meshca_crl_next_update_timestamp_seconds',
    help: 'Unix time (s) of the nextUpdate of the current CRL per authority.',
    labelNames: ['authority'] as const,
    aggregator: 'min',
    registers: [this.registry],
  });
  readonly storeUp = this.gauge(
    'meshca_store_up',
    '1 while the store answers (a shared PostgreSQL can become unreachable; SQLite is always 1).',
    'min',
  );
  readonly singletonLeaseHeld = this.gauge(
    'meshca_singleton_lease_held',
    '1 on the process that runs the singleton jobs (rotation, CRL re-signing, pruning, upstream renewal): the lease holder on a shared store.',
    'sum',
  );
  readonly jwtSvidsMinted = this.counter('meshca_jwt_svids_minted_total', 'JWT-SVIDs minted (MintJwtSvid).');
  readonly adminAuthFailures = this.counter(
    'meshca_admin_authentication_failures_total',
    'Admin API requests with a missing or wrong token.',
  );

  constructor(options: { readonly processMetrics?: boolean } = {}) {
    if (options.processMetrics ?? true) collectDefaultMetrics({ register: this.registry });
  }

  private counter(name: string, help: string): Counter {
    return new Counter({ name, help, registers: [this.registry] });
  }

  private gauge(name: string, help: string, aggregator: Aggregator): Gauge {
    return new Gauge({ name, help, aggregator, registers: [this.registry] });
  }
}
