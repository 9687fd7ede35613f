import { readFileSync } from 'node:fs';
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
