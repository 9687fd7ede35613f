import { readFileSync } from 'node:fs';
import { describe, expect, it } from 'vitest';
import { SERVE_FLAGS } from '../src/config.js';
import { envName } from '../src/flags.js';

const readme = readFileSync(new URL('../README.md', import.meta.url), 'utf8');
const configuration = readFileSync(new URL('../docs/configuration.md', import.meta.url), 'utf8');

describe('README', () => {
  it('has the two copy-paste commands: start the CA and run the tests', () => {
    expect(readme).toContain('npm ci && npm start');
    expect(readme).toContain('npm ci && npm test');
  });

  it('stays a short front door that links into docs/', () => {
    expect(readme.split('\n').length).toBeLessThanOrEqual(250);
    expect(readme).toContain('docs/architecture.md');
  });

  it.each(SERVE_FLAGS.map((f) => f.name))('docs/configuration.md documents --%s and its environment variable', (name) => {
    expect(configuration).toContain(`--${name}`);
    expect(configuration).toContain(envName(name));
  });
});
