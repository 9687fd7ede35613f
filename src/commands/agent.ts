import { AGENT_FLAGS, buildAgentConfig } from '../agent/options.js';
import type { FlagValues } from '../flags.js';
import { createLogger } from '../observability/logger.js';
import { stopOnSignals } from './signals.js';
import type { Command } from './types.js';

async function runAgent(values: FlagValues): Promise<void> {
  const config = buildAgentConfig(values);
  const logger = createLogger({ level: config.logLevel });
  // Loaded on use: every other command stays free of gRPC code (test/cli.test.ts).
  const { startAgent } = await import('../agent/agent.js');
  const agent = await startAgent(config, logger);
  stopOnSignals(logger, 'meshca agent', { close: () => agent.close(), reload: async () => void (await agent.renew()) });
}

export const agentCommand: Command = {
  usage: 'meshca agent --server HOST:PORT --root FILE --token-file FILE --socket PATH [--sds-socket PATH] [--write-dir DIR] [--svid-ttl D]',
  description:
    'Run the node agent: get an X509-SVID from meshca and serve the SPIFFE Workload API (X509-SVIDs, JWT-SVIDs, bundles) on a Unix socket, optionally Envoy SDS and certificate files.',
  flags: AGENT_FLAGS,
  run: runAgent,
};
