import { spawn } from 'node:child_process';
import { existsSync } from 'node:fs';
import { join } from 'node:path';
import { describe, expect, it } from 'vitest';

const ROOT = join(import.meta.dirname, '..');

/** What `npm run demo` runs after building (dist/ is built by the vitest global setup). */
function runDemo(): Promise<{ code: number | null; stdout: string; stderr: string }> {
  return new Promise((resolve) => {
    const child = spawn(process.execPath, [join(ROOT, 'scripts', 'demo.mjs')], { cwd: ROOT, stdio: ['ignore', 'pipe', 'pipe'] });
    let stdout = '';
    let stderr = '';
    child.stdout.on('data', (d: Buffer) => (stdout += d.toString()));
    child.stderr.on('data', (d: Buffer) => (stderr += d.toString()));
    child.on('exit', (code) => resolve({ code, stdout, stderr }));
  });
}

describe('npm run demo', () => {
  it('rotates the root with a live mTLS connection and a fresh handshake at every step, then cleans up', async () => {
    const { code, stdout, stderr } = await runDemo();
    expect(code, `${stdout}\n${stderr}`).toBe(0);
    expect(stdout).toContain('meshca demo: OK');
    for (const n of [1, 2, 3, 4, 5, 6, 7, 8]) expect(stdout).toMatch(new RegExp(`^\\[${n}\\] `, 'm'));
    expect(stdout).toMatch(/\$ meshca authorities prepare /);
    expect(stdout).toMatch(/\$ meshca authorities activate root-[0-9a-f]{16} /);
    expect(stdout).toMatch(/\$ meshca authorities remove root-[0-9a-f]{16} --force /);
    expect(stdout).toMatch(/refused, as it should be: \d+ unexpired certificates still chain to root-/);
    expect(stdout).toMatch(/trust bundle: sequence (\d+) → (\d+), roots \[root-[0-9a-f]{16}, root-[0-9a-f]{16}\]/);
    expect(stdout).toMatch(/trust bundle: sequence (\d+) → (\d+), roots \[root-[0-9a-f]{16}\]$/m);
    expect(stdout).toContain('FORCES the removal');
    // a message on the same long-lived connection and a fresh handshake at each of the five stages
    expect(stdout.match(/✓ long-lived connection \(same TLS session since step 3\): "ping \d" → "pong \d /g)).toHaveLength(5);
    expect(stdout.match(/✓ fresh handshake: frontend \(root-/g)).toHaveLength(5);
    expect(stdout).toMatch(/✓ fresh handshake: frontend \((root-[0-9a-f]{16})\) ⇄ backend \((?!\1)root-[0-9a-f]{16}\).*\(across roots\)/);
    expect(stdout).toContain('backend saw spiffe://cluster.local/ns/demo/sa/frontend');
    expect(stdout).toContain('frontend saw spiffe://cluster.local/ns/demo/sa/backend');
    expect(stdout).toMatch(/superseded certificate from root-[0-9a-f]{16} is now rejected/);
    const tempDir = /temp dir: (\S+)/.exec(stdout)?.[1];
    expect(tempDir).toBeDefined();
    expect(existsSync(tempDir!)).toBe(false);
  }, 30_000);
});
