import { readdirSync, readFileSync } from 'node:fs';
import { join, relative } from 'node:path';
import { describe, expect, it } from 'vitest';

const SRC = join(import.meta.dirname, '..', 'src');

function sources(dir: string): string[] {
  return readdirSync(dir, { withFileTypes: true }).flatMap((e) =>
    e.isDirectory() ? sources(join(dir, e.name)) : e.name.endsWith('.ts') ? [join(dir, e.name)] : [],
  );
}

/** Every relative import of src/, as [importing file, imported file], both relative to src/. */
const imports = sources(SRC).flatMap((file) =>
  [...readFileSync(file, 'utf8').matchAll(/from '(\.{1,2}\/[^']+)\.js'/g)].map(
    ([, spec]) => [relative(SRC, file), relative(SRC, join(file, '..', `${spec}.ts`))] as const,
  ),
);

// The layering of docs/architecture.md: no arrow from a lower layer up.
const RULES: { from: RegExp; mayNotImport: RegExp; why: string }[] = [
  {
    from: /^(kubernetes|upstream|federation)\//,
    mayNotImport: /^(config|flags|cli|app|grpc|admin|commands)[/.]/,
    why: 'integrations get their config slice and ports',
  },
  {
    from: /^(spiffe|pki|store|authn|authority)\//,
    mayNotImport: /^(config|flags|cli|app|grpc|admin|commands|kubernetes|observability)[/.]/,
    why: 'the core knows no transport, integration or configuration',
  },
  {
    from: /^(grpc|admin)\//,
    mayNotImport: /^(config|flags|cli|app|commands|kubernetes)[/.]/,
    why: 'transports get ports from the application context',
  },
  {
    // A separate process: it shares the proto definitions (grpc/proto.ts) and flag parsing, nothing of the server.
    from: /^agent\//,
    mayNotImport: /^(config|cli|app|admin|commands)[/.]|^grpc\/(?!proto\.)/,
    why: 'the node agent reaches meshca only as a gRPC client',
  },
  { from: /^commands\//, mayNotImport: /^(app\/server|grpc\/|admin\/)/, why: 'commands do not depend on the server' },
];

describe('import graph', () => {
  it.each(RULES)('$from imports nothing from $mayNotImport ($why)', ({ from, mayNotImport }) => {
    expect(imports.filter(([a, b]) => from.test(a) && mayNotImport.test(b))).toEqual([]);
  });

  it('has no workers written as strings (eval: true)', () => {
    expect(
      sources(SRC)
        .filter((f) => /eval:\s*true/.test(readFileSync(f, 'utf8')))
        .map((f) => relative(SRC, f)),
    ).toEqual([]);
  });
});
