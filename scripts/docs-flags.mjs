#!/usr/bin/env node
// @ts-check
// Regenerates the `meshca serve` flag table in docs/configuration.md from the flag specs (run after `npm run build`).
import { readFileSync, writeFileSync } from 'node:fs';
import { SERVE_FLAGS } from '../dist/config.js';
import { envName } from '../dist/flags.js';

const rows = SERVE_FLAGS.map((f) => {
  const def = f.default === undefined || f.default === false ? '' : Array.isArray(f.default) ? f.default.join(',') : String(f.default);
  const flag = `\`--${f.name}${f.kind === 'boolean' ? '' : ` ${f.value ?? 'VALUE'}`}\``;
  return `| ${flag} | \`${envName(f.name)}\` | ${def ? `\`${def}\`` : ''} | ${f.help.replace(/\|/g, '\\|')} |`;
});
const table = ['| Flag | Environment | Default | Meaning |', '|---|---|---|---|', ...rows].join('\n');
const readme = readFileSync('docs/configuration.md', 'utf8');
const updated = readme.replace(
  /<!-- flags:serve -->[\s\S]*<!-- \/flags:serve -->/,
  `<!-- flags:serve -->\n${table}\n<!-- /flags:serve -->`,
);
writeFileSync('docs/configuration.md', updated);
console.log(`docs/configuration.md: ${rows.length} serve flags`);
