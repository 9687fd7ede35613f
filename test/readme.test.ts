import { readFileSync } from 'node:fs';
import { describe, expect, it } from 'vitest';
import { SERVE_FLAGS } from '../src/config.js';
import { envName } from '../src/flags.js';

const readme = readFileSync(new URL('../README.md', import.meta.url), 'utf8');

describe('README', () => {
  it('has the two copy-paste commands: start the CA and run the tests', () => {
    expect(readme).toContain('npm ci && npm start');
    expect(readme).toContain('npm ci && npm test');
  });

  it.each(SERVE_FLAGS.map((f) => f.name))('documents --%s and its environment variable', (name) => {
    expect(readme).toContain(`--${name}`);
    expect(readme).toContain(envName(name));
  });
});
