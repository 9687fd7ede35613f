// @ts-check
// The project modules the fuzz targets exercise, by path under src/ (tests, through vitest) or
// dist/ (the CLI runner, plain node). One flat namespace; a name exported by two modules with
// different values is an error rather than a silent pick.

export const MODULE_PATHS = [
  'pki/csr',
  'pki/errors',
  'pki/x509',
  'authority/policy',
  'authority/errors',
  'authority/lifecycle',
  'authority/inventory',
  'authority/revocation',
  'authority/issuance',
  'authn/index',
  'spiffe/id',
  'store/sqlite',
  'observability/metrics',
  'admin/server',
  'config',
  'flags',
  'app/server',
  'client/ca-client',
  'grpc/h2/connection',
  'grpc/h2/hpack',
];

/**
 * @param {(path: string) => Promise<Record<string, unknown>>} importProject imports 'pki/csr' & co.
 * @param {{ pino: unknown, grpcStatus: unknown }} extra third-party pieces, imported by the caller
 *   so they resolve from the repository's node_modules.
 */
export async function loadModules(importProject, extra) {
  const mods = { ...extra };
  for (const path of MODULE_PATHS) {
    for (const [name, value] of Object.entries(await importProject(path))) {
      if (name in mods && mods[name] !== value) throw new Error(`fuzz modules: ${name} is exported by two modules (second: ${path})`);
      mods[name] = value;
    }
  }
  return mods;
}
