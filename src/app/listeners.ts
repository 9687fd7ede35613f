import type { ServerConfig } from '../config.js';
import { UsageError } from '../errors.js';
import { formatAddress, probeListen, type ListenAddress } from '../net.js';

/**
 * Checks that every listener can bind before the server creates anything, and says which flag
 * moves a listener that cannot (instead of a bind error after the data dir, KEK and database exist).
 */
export async function checkListeners(config: ServerConfig): Promise<void> {
  const listeners: [flag: string, address: ListenAddress][] = [
    ['--grpc-listen', config.grpc.listen],
    ['--monitoring-listen', config.monitoringListen],
    ['--admin-listen', config.admin.listen],
  ];
  for (const [flag, address] of listeners) {
    try {
      await probeListen(address);
    } catch (error) {
      const code = (error as { code?: unknown }).code;
      const what =
        code === 'EADDRINUSE'
          ? 'is in use'
          : code === 'EACCES'
            ? 'needs privileges meshca does not have'
            : `cannot be bound (${(error as Error).message})`;
      const other = `${address.host.includes(':') ? `[${address.host}]` : address.host}:${address.port + 1}`;
      throw new UsageError(
        `${flag} ${formatAddress(address)} ${what}: stop what listens there or pick another address with ${flag}, e.g. ${flag} ${other} (with npm start: npm start -- ${flag} ${other})`,
      );
    }
  }
}
