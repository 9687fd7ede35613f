import { readFileSync } from 'node:fs';
import { describe, expect, it } from 'vitest';
import { parse } from 'yaml';
import pkg from '../package.json' with { type: 'json' };

/** docker-compose.yml and the Dockerfile, checked the way a reviewer would (no Docker engine needed). */
const root = new URL('../', import.meta.url);
const compose = parse(readFileSync(new URL('docker-compose.yml', root), 'utf8')) as {
  services: Record<
    string,
    { build?: { context: string; dockerfile: string }; ports: string[]; volumes: string[]; healthcheck: Record<string, unknown> }
  >;
  volumes: Record<string, unknown>;
};
const service = compose.services.meshca;
const dockerfile = readFileSync(new URL('Dockerfile', root), 'utf8');
const stages = dockerfile.split(/^FROM /m).slice(1);
const runtime = stages.at(-1) ?? '';

describe('docker-compose.yml', () => {
  it('builds the image from the repository Dockerfile instead of running npm in a stock image', () => {
    expect(service?.build).toEqual({ context: '.', dockerfile: 'Dockerfile' });
    expect(JSON.stringify(service)).not.toMatch(/npm (ci|install)/);
  });

  it('keeps data in a named volume and bind-mounts nothing from the host', () => {
    for (const volume of service?.volumes ?? []) {
      const source = volume.split(':')[0] ?? '';
      expect(source, volume).not.toMatch(/^[./~]/);
      expect(compose.volumes).toHaveProperty(source);
    }
    expect(service?.volumes).toContain('meshca-data:/var/lib/meshca');
  });

  it.each([
    ['admin API', 8443],
    ['monitoring', 15014],
  ])('publishes the %s port (%i) on 127.0.0.1 only', (_what, port) => {
    const mapping = service?.ports.find((p) => p.endsWith(`:${port}`));
    expect(mapping).toBe(`127.0.0.1:${port}:${port}`);
  });

  it('has a readiness healthcheck with a start period', () => {
    expect(JSON.stringify(service?.healthcheck.test)).toContain('/readyz');
    expect(service?.healthcheck.start_period).toMatch(/^\d+s$/);
  });
});

describe('Dockerfile', () => {
  it('builds in a stage with the native toolchain and ships only production dependencies', () => {
    expect(stages.length).toBeGreaterThanOrEqual(2);
    expect(stages[0]).toMatch(/apt-get install[^\n]*python3 make g\+\+/);
    expect(stages[0]).toMatch(/npm ci/);
    expect(stages[0]).toMatch(/npm prune --omit=dev/);
    expect(runtime).not.toMatch(/npm (ci|install)|apt-get install/);
    for (const dir of ['node_modules', 'dist', 'proto', 'migrations']) expect(runtime).toMatch(new RegExp(`^COPY .*\\b${dir}\\b`, 'm'));
    expect(runtime).not.toMatch(/^COPY .*\bsrc\b/m);
  });

  it('runs as a non-root user with the data dir as a volume, on the Node.js major the engines field allows', () => {
    expect(runtime).toMatch(/^USER (?!0\b|root\b)\S+/m);
    expect(runtime).toMatch(/^VOLUME \["\/var\/lib\/meshca"\]/m);
    const node = Number(/^node:(\d+)/.exec(runtime)?.[1]);
    expect(node).toBeGreaterThanOrEqual(Number(/\d+/.exec(pkg.engines.node)?.[0]));
  });

  it('is not fed the host node_modules or data dir (.dockerignore)', () => {
    const ignored = readFileSync(new URL('.dockerignore', root), 'utf8').split('\n');
    for (const entry of ['node_modules', 'dist', 'data', '.git']) expect(ignored).toContain(entry);
  });
});
