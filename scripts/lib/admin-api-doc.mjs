// @ts-check
// docs/admin-api.md's route reference, rendered from the OpenAPI document a real `meshca serve --dev`
// serves at GET /v1/openapi.json. Shared by scripts/docs-admin-api.mjs (writes) and
// test/docs.test.ts (checks the committed file matches).
import { execFile } from 'node:child_process';
import { mkdtempSync, readFileSync, rmSync } from 'node:fs';
import { request } from 'node:https';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { promisify } from 'node:util';
import { CLI, spawnMeshca } from './meshca-process.mjs';

export const DOC_PATH = new URL('../../docs/admin-api.md', import.meta.url);
const BEGIN = '<!-- openapi:routes -->';
const END = '<!-- /openapi:routes -->';

/**
 * @typedef {{ type?: string | string[], enum?: unknown[], format?: string, pattern?: string, minimum?: number, maximum?: number,
 *   minLength?: number, maxLength?: number, default?: unknown, nullable?: boolean, items?: Schema,
 *   properties?: Record<string, Schema>, required?: string[], description?: string }} Schema
 * @typedef {{ in: string, name: string, required?: boolean, schema?: Schema, description?: string }} Parameter
 * @typedef {{ summary?: string, security?: object[], parameters?: Parameter[],
 *   requestBody?: { content?: Record<string, { schema?: Schema }> },
 *   responses?: Record<string, { description?: string, content?: Record<string, { schema?: Schema }> }> }} Operation
 * @typedef {{ paths: Record<string, Record<string, Operation>> }} OpenApiDocument
 */

/** Starts a throwaway dev server in a temp dir and returns its OpenAPI document. */
export async function fetchOpenApi() {
  const dir = mkdtempSync(join(tmpdir(), 'meshca-openapi-'));
  const loopback = '127.0.0.1:0';
  const server = spawnMeshca([
    'serve',
    '--dev',
    '--data-dir',
    dir,
    '--grpc-listen',
    loopback,
    '--admin-listen',
    loopback,
    '--monitoring-listen',
    loopback,
  ]);
  try {
    const { adminPort } = await server.ready;
    const { stdout: roots } = await promisify(execFile)(process.execPath, [CLI, 'bundle', '--data-dir', dir], { encoding: 'utf8' });
    const token = readFileSync(join(dir, 'admin-token'), 'utf8').trim();
    const body = await new Promise((resolve, reject) => {
      const options = {
        host: '127.0.0.1',
        port: adminPort,
        path: '/v1/openapi.json',
        ca: roots,
        servername: 'localhost',
        headers: { authorization: `Bearer ${token}` },
      };
      request(options, (res) => {
        let text = '';
        res.on('data', (chunk) => (text += chunk));
        res.on('end', () => (res.statusCode === 200 ? resolve(text) : reject(new Error(`GET /v1/openapi.json: HTTP ${res.statusCode}`))));
      })
        .on('error', reject)
        .end();
    });
    return /** @type {OpenApiDocument} */ (JSON.parse(body));
  } finally {
    server.child.kill('SIGTERM');
    await server.exited;
    rmSync(dir, { recursive: true, force: true });
  }
}

/** @param {Schema | undefined} schema a one-line type: `string (ec-p256 \| ec-p384)`, `integer 1..1000, default 100`. */
function typeOf(schema) {
  if (!schema) return '';
  const base = schema.type === 'array' ? `${typeOf(schema.items) || 'any'}[]` : String(schema.type ?? 'any');
  const notes = [];
  if (schema.enum) notes.push(schema.enum.map(String).join(' \\| '));
  if (schema.format) notes.push(schema.format);
  if (schema.minimum !== undefined || schema.maximum !== undefined) notes.push(`${schema.minimum ?? ''}..${schema.maximum ?? ''}`);
  if (schema.maxLength !== undefined) notes.push(`≤ ${schema.maxLength} chars`);
  if (schema.pattern) notes.push(`\`${schema.pattern.replace(/\|/g, '\\|')}\``);
  if (schema.default !== undefined) notes.push(`default ${JSON.stringify(schema.default)}`);
  if (schema.nullable) notes.push('nullable');
  return notes.length > 0 ? `${base} (${notes.join(', ')})` : base;
}

/**
 * @param {string} title
 * @param {Array<{ where?: string, name: string, schema?: Schema, required: boolean }>} rows
 */
function table(title, rows) {
  if (rows.length === 0) return [];
  const where = rows.some((r) => r.where);
  return [
    `${title}:`,
    '',
    where ? '| In | Name | Type | Required |' : '| Field | Type | Required |',
    where ? '|---|---|---|---|' : '|---|---|---|',
    ...rows.map((r) => `| ${where ? `${r.where} | ` : ''}\`${r.name}\` | ${typeOf(r.schema)} | ${r.required ? 'yes' : ''} |`),
    '',
  ];
}

/** @param {Schema | undefined} schema top-level fields of a JSON response, or its content type. */
function shapeOf(schema) {
  if (!schema?.properties) return typeOf(schema);
  const fields = Object.entries(schema.properties).map(
    ([name, s]) => `${name}: ${s.type === 'array' ? `${s.items?.type ?? 'any'}[]` : (s.type ?? 'any')}`,
  );
  return `{ ${fields.join(', ')} }`;
}

/** @param {Operation} op */
function responses(op) {
  const codes = Object.entries(op.responses ?? {});
  const success = codes.some(([code]) => Number(code) < 400) ? [] : ['`200` (body format chosen by the `format` parameter)'];
  return success.concat(
    codes.map(([code, response]) => {
      const json = response.content?.['application/json']?.schema;
      if (Number(code) >= 400) return `\`${code}\``;
      return `\`${code}\` ${json ? `\`${shapeOf(json)}\`` : (response.description ?? '')}`.trimEnd();
    }),
  );
}

/** Markdown for every route in the document, in the order the server registers them. */
export function renderRoutes(/** @type {OpenApiDocument} */ doc) {
  const out = [];
  for (const [path, methods] of Object.entries(doc.paths)) {
    for (const [method, op] of Object.entries(methods)) {
      out.push(`### \`${method.toUpperCase()} ${path}\``, '');
      if (op.summary) out.push(`${op.summary}.`, '');
      out.push(
        `Authentication: ${op.security?.length === 0 ? 'none (public trust data)' : 'bearer token (and a client certificate with `--admin-client-ids`)'}.`,
        '',
      );
      const params = (op.parameters ?? []).map((p) => ({ where: p.in, name: p.name, schema: p.schema, required: p.required === true }));
      out.push(...table('Parameters', params));
      const body = op.requestBody?.content?.['application/json']?.schema;
      const required = new Set(body?.required ?? []);
      out.push(
        ...table(
          'JSON body',
          Object.entries(body?.properties ?? {}).map(([name, schema]) => ({ name, schema, required: required.has(name) })),
        ),
      );
      out.push(`Responses: ${responses(op).join(', ')}. Errors carry \`{code, message, details?}\` (see [errors.md](errors.md)).`, '');
    }
  }
  return out.join('\n');
}

/** `markdown` with the generated section replaced by `routes`. */
export function spliceRoutes(/** @type {string} */ markdown, /** @type {string} */ routes) {
  const start = markdown.indexOf(BEGIN);
  const end = markdown.indexOf(END);
  if (start === -1 || end < start) throw new Error(`docs/admin-api.md lacks the ${BEGIN} … ${END} markers`);
  return `${markdown.slice(0, start + BEGIN.length)}\n${routes}${markdown.slice(end)}`;
}
