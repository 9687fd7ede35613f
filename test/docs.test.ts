import { existsSync, readdirSync, readFileSync } from 'node:fs';
import { dirname, join, resolve } from 'node:path';
import { describe, expect, it } from 'vitest';
import { DOC_PATH, fetchOpenApi, renderRoutes, spliceRoutes } from '../scripts/lib/admin-api-doc.mjs';

describe('docs/admin-api.md', () => {
  it('holds the route reference generated from the served OpenAPI document', async () => {
    const committed = readFileSync(DOC_PATH, 'utf8');
    const doc = await fetchOpenApi();
    expect(committed, 'run "npm run build && node scripts/docs-admin-api.mjs"').toBe(spliceRoutes(committed, renderRoutes(doc)));
    expect(committed).toContain('### `POST /v1/authorities/prepare`');
    expect(committed).toMatch(/### `GET \/v1\/bundle`\n\n[^\n]+\n\nAuthentication: none/);
  }, 60_000);
});

const ROOT = join(import.meta.dirname, '..');

/** The repository's own Markdown: README, docs/, bench/, fuzz/ (not dependencies or results). */
function markdownFiles(dir = ROOT): string[] {
  return readdirSync(dir, { withFileTypes: true }).flatMap((e) => {
    if (e.isDirectory())
      return ['node_modules', '.git', 'dist', 'results', '.variants'].includes(e.name) ? [] : markdownFiles(join(dir, e.name));
    return e.name.endsWith('.md') ? [join(dir, e.name)] : [];
  });
}

describe('Markdown links', () => {
  it('every relative link points at a file or folder of the repository', () => {
    const broken = markdownFiles().flatMap((file) =>
      [...readFileSync(file, 'utf8').matchAll(/\]\(([^)\s]+)\)/g)]
        .map(([, target]) => target!)
        // URLs, anchors, and bracketed regular expressions in the route reference are not links to files.
        .filter((target) => !/^(https?:|mailto:|#)/.test(target) && !/[[\]*]/.test(target))
        .filter((target) => !existsSync(resolve(dirname(file), target.split('#')[0]!)))
        .map((target) => `${file.slice(ROOT.length + 1)} → ${target}`),
    );
    expect(broken).toEqual([]);
  });
});
