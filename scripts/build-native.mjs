#!/usr/bin/env node
// @ts-check
// Builds native/ (the ECDSA verifier addon) with node-gyp against the running Node's own headers.
// Run by `npm ci` / `npm install` (the "install" script) and by `npm run build:native`.
// Without a C toolchain the build is skipped with a warning and meshca verifies CSR signatures
// through node:crypto instead; MESHCA_REQUIRE_NATIVE=1 (set by .ci/run) turns that into a failure.
import { spawnSync } from 'node:child_process';
import { existsSync } from 'node:fs';
import { dirname, join, resolve } from 'node:path';
import { fileURLToPath } from 'node:url';

const root = resolve(dirname(fileURLToPath(import.meta.url)), '..');
const required = process.env.MESHCA_REQUIRE_NATIVE === '1';

/** npm passes its bundled node-gyp to lifecycle scripts; outside npm, look beside the node binary. */
function nodeGyp() {
  const candidates = [
    process.env.npm_config_node_gyp,
    join(dirname(process.execPath), '..', 'lib', 'node_modules', 'npm', 'node_modules', 'node-gyp', 'bin', 'node-gyp.js'),
  ];
  return candidates.find((path) => path && existsSync(path));
}

/** The installed Node's headers, so the build works offline (node-gyp would otherwise download them). */
function nodeDir() {
  const prefix = resolve(dirname(process.execPath), '..');
  return existsSync(join(prefix, 'include', 'node', 'node_api.h')) ? prefix : undefined;
}

function fail(message) {
  const advice = 'install python3, make and g++ (Debian: apt-get install python3 make g++) and run "npm run build:native"';
  if (required) {
    console.error(`meshca native build failed: ${message}; ${advice}`);
    process.exit(1);
  }
  console.warn(`meshca native build skipped: ${message}. CSR signatures will be verified through node:crypto (slower); ${advice}`);
  process.exit(0);
}

const gyp = nodeGyp();
if (!gyp) fail('node-gyp was not found (it ships with npm)');
const dir = nodeDir();
const args = [gyp ?? '', 'rebuild', '--directory', join(root, 'native'), ...(dir ? [`--nodedir=${dir}`] : [])];
const build = spawnSync(process.execPath, args, { stdio: ['ignore', 'pipe', 'pipe'], encoding: 'utf8' });
if (build.status !== 0) {
  process.stderr.write(build.stdout.slice(-2000) + build.stderr.slice(-4000));
  fail(`node-gyp exited with ${build.status ?? build.signal}`);
}
console.log('meshca native ECDSA verifier built: native/build/Release/meshca_native.node');
