import { startAgent } from '../agent/agent.js';
import { AGENT_FLAGS, buildAgentConfig } from '../agent/options.js';
import type { FlagValues } from '../flags.js';
import { createLogger } from '../observability/logger.js';
import type { Command } from './types.js';

async function runAgent(values: FlagValues): Promise<void> {
  const config = buildAgentConfig(values);
  const logger = createLogger({ level: config.logLevel });
  const agent = await startAgent(config, logger);
  let stopping = false;
  const stop = (signal: string) => {
    if (stopping) return;
    stopping = true;
    logger.info({ signal }, 'meshca agent shutting down');
    agent.close().then(
      () => {
        logger.info('meshca agent stopped cleanly');
        logger.flush();
        process.exit(0);
      },
      (error: unknown) => {
        logger.error({ err: error }, 'unclean agent shutdown');
        process.exit(1);
      },
    );
  };
  process.on('SIGTERM', () => stop('SIGTERM'));
  process.on('SIGINT', () => stop('SIGINT'));
  process.on('SIGHUP', () => void agent.renew());
}

export const agentCommand: Command = {
  usage: 'meshca agent --server HOST:PORT --root FILE --token-file FILE --socket PATH [--sds-socket PATH] [--write-dir DIR] [--svid-ttl D]',
  description:
    'Run the node agent: get an X509-SVID from meshca and serve the SPIFFE Workload API (X509-SVIDs, JWT-SVIDs, bundles) on a Unix socket, optionally Envoy SDS and certificate files.',
  flags: AGENT_FLAGS,
  run: runAgent,
};
