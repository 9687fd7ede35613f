import { Counter, Gauge, Registry, collectDefaultMetrics } from 'prom-client';

/** The agent's metrics, on a registry of its own (several agents in one test process do not collide). */
export class AgentMetrics {
  readonly registry = new Registry();
  readonly renewals = new Counter({
    name: 'meshca_agent_svid_renewals_total',
    help: 'X509-SVID renewal attempts, by result.',
    labelNames: ['result'] as const,
    registers: [this.registry],
  });
  readonly svidExpiry = new Gauge({
    name: 'meshca_agent_svid_expiry_timestamp_seconds',
    help: 'Unix time (s) the served X509-SVID expires.',
    registers: [this.registry],
  });
  readonly bundleSequence = new Gauge({
    name: 'meshca_agent_bundle_sequence',
    help: 'spiffe_sequence of the own trust domain bundle served.',
    registers: [this.registry],
  });
  readonly workloadCalls = new Counter({
    name: 'meshca_agent_workload_api_calls_total',
    help: 'Workload API and SDS calls, by method and gRPC status.',
    labelNames: ['method', 'code'] as const,
    registers: [this.registry],
  });
  readonly fileUpdates = new Counter({
    name: 'meshca_agent_file_updates_total',
    help: 'Updates of --write-dir, by result.',
    labelNames: ['result'] as const,
    registers: [this.registry],
  });

  constructor(options: { readonly processMetrics?: boolean } = {}) {
    if (options.processMetrics ?? true) collectDefaultMetrics({ register: this.registry });
  }
}
