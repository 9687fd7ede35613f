#!/usr/bin/env node
// @ts-check
// Regenerates the route reference in docs/admin-api.md from the OpenAPI document of a throwaway
// `meshca serve --dev` (run after `npm run build`; test/docs.test.ts checks the file is current).
import { readFileSync, writeFileSync } from 'node:fs';
import { DOC_PATH, fetchOpenApi, renderRoutes, spliceRoutes } from './lib/admin-api-doc.mjs';

const doc = await fetchOpenApi();
writeFileSync(DOC_PATH, spliceRoutes(readFileSync(DOC_PATH, 'utf8'), renderRoutes(doc)));
console.log(`docs/admin-api.md: ${Object.values(doc.paths).flatMap((m) => Object.keys(m)).length} routes`);
