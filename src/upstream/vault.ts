/**
 * Vault PKI as meshca's upstream CA (docs/operations/upstream.md): meshca's CSR goes to
 * `POST /v1/<mount>/root/sign-intermediate`; the key never leaves meshca. Authentication with a token
 * from a file (renewed with auth/token/renew-self), AppRole or Kubernetes auth.
 */
import { readFileSync } from 'node:fs';
import type { Logger } from 'pino';
import { UpstreamError } from '../authority/errors.js';
import type { IntermediateSigner } from '../authority/lifecycle.js';
import type { UpstreamCertificateFiles } from '../authority/pending.js';
import { requestJson, type JsonResponse } from './https-json.js';

export type VaultAuth =
  | { readonly method: 'token'; readonly tokenFile: string }
  | { readonly method: 'approle'; readonly mount: string; readonly roleIdFile: string; readonly secretIdFile: string }
  | { readonly method: 'kubernetes'; readonly mount: string; readonly role: string; readonly jwtFile: string };

export interface VaultConfig {
  /** e.g. https://vault.example:8200 */
  readonly addr: string;
  /** The PKI secrets engine mount whose issuer signs meshca's intermediate. */
  readonly pkiMount: string;
  /** PEM roots for Vault's TLS certificate; default: Node's. */
  readonly caFile: string | undefined;
  readonly auth: VaultAuth;
  readonly requestTimeoutMs: number;
}

interface VaultAuthReply {
  readonly auth?: { readonly client_token?: string; readonly lease_duration?: number; readonly renewable?: boolean };
}

interface VaultSignReply {
  readonly data?: { readonly certificate?: string; readonly issuing_ca?: string; readonly ca_chain?: readonly string[] };
}

/** Tokens without a lease (root tokens) are re-checked this often. */
const UNLEASED_RECHECK_MS = 3_600_000;

export class VaultSigner implements IntermediateSigner {
  readonly kind = 'vault';
  private readonly ca: string | undefined;
  private token: string | undefined;
  /** When the token is renewed (token file) or a new login is due (AppRole, Kubernetes). */
  private refreshAt = 0;

  constructor(
    private readonly config: VaultConfig,
    private readonly logger: Logger,
    private readonly now: () => number = Date.now,
  ) {
    this.ca = config.caFile ? readFileSync(config.caFile, 'utf8') : undefined;
  }

  async signIntermediate(request: { readonly csrPem: string; readonly ttlMs: number }): Promise<UpstreamCertificateFiles> {
    const body = {
      csr: request.csrPem,
      ttl: `${Math.max(1, Math.round(request.ttlMs / 1000))}s`,
      format: 'pem',
      use_csr_values: true,
      max_path_length: 0,
    };
    const path = `/v1/${this.config.pkiMount}/root/sign-intermediate`;
    let res = await this.call('POST', path, body, await this.currentToken());
    if (res.status === 403) {
      // The token may have been revoked or expired early: authenticate again once.
      this.token = undefined;
      res = await this.call('POST', path, body, await this.currentToken());
    }
    const data = (expectOk(res, `signing the intermediate at ${path}`) as VaultSignReply).data;
    if (typeof data?.certificate !== 'string' || typeof data.issuing_ca !== 'string') {
      throw new UpstreamError('ERR_UPSTREAM_UNAVAILABLE', `Vault answered ${path} without data.certificate and data.issuing_ca`);
    }
    return { certificate: data.certificate, chain: [...(data.ca_chain ?? []), data.issuing_ca].join('\n') };
  }

  /** The token to send, renewed or re-obtained once 2/3 of its lease has passed. */
  private async currentToken(): Promise<string> {
    if (this.token !== undefined && this.now() < this.refreshAt) return this.token;
    const auth = this.config.auth;
    if (auth.method === 'token') {
      this.token = readSecret(auth.tokenFile, 'Vault token file');
      await this.renewSelf(this.token);
    } else {
      const body =
        auth.method === 'approle'
          ? {
              role_id: readSecret(auth.roleIdFile, 'AppRole role_id file'),
              secret_id: readSecret(auth.secretIdFile, 'AppRole secret_id file'),
            }
          : { role: auth.role, jwt: readSecret(auth.jwtFile, 'Kubernetes service account token file') };
      const path = `/v1/auth/${auth.mount}/login`;
      const reply = expectOk(await this.call('POST', path, body), `${auth.method} login at ${path}`) as VaultAuthReply;
      if (typeof reply.auth?.client_token !== 'string')
        throw new UpstreamError('ERR_UPSTREAM_UNAVAILABLE', `Vault answered ${path} without auth.client_token`);
      this.token = reply.auth.client_token;
      this.leased(reply.auth.lease_duration);
    }
    return this.token;
  }

  /** A token that cannot be renewed (a root token, a non-renewable one) is used as it is until Vault refuses it. */
  private async renewSelf(token: string): Promise<void> {
    const res = await this.call('POST', '/v1/auth/token/renew-self', {}, token);
    if (res.status === 200) {
      this.leased((res.body as VaultAuthReply | undefined)?.auth?.lease_duration);
      return;
    }
    this.logger.warn(
      { status: res.status, errors: vaultErrors(res) },
      'Vault token could not be renewed (auth/token/renew-self); using it as it is',
    );
    this.refreshAt = this.now() + UNLEASED_RECHECK_MS;
  }

  private leased(leaseSeconds: number | undefined): void {
    this.refreshAt = this.now() + (leaseSeconds && leaseSeconds > 0 ? (leaseSeconds * 1000 * 2) / 3 : UNLEASED_RECHECK_MS);
  }

  private call(method: 'POST' | 'GET', path: string, body: unknown, token?: string): Promise<JsonResponse> {
    return requestJson({
      method,
      url: new URL(path, this.config.addr),
      headers: token === undefined ? {} : { 'x-vault-token': token },
      body,
      ca: this.ca,
      timeoutMs: this.config.requestTimeoutMs,
    });
  }
}

function expectOk(res: JsonResponse, what: string): unknown {
  if (res.status >= 200 && res.status < 300) return res.body;
  const reason = vaultErrors(res).join('; ') || 'no error message';
  const code = res.status >= 500 || res.status === 429 ? 'ERR_UPSTREAM_UNAVAILABLE' : 'ERR_UPSTREAM_REFUSED';
  throw new UpstreamError(code, `Vault refused ${what}: HTTP ${res.status}: ${reason}`);
}

function vaultErrors(res: JsonResponse): string[] {
  const errors = (res.body as { errors?: unknown } | undefined)?.errors;
  return Array.isArray(errors) ? errors.filter((e): e is string => typeof e === 'string') : [];
}

function readSecret(path: string, what: string): string {
  let text: string;
  try {
    text = readFileSync(path, 'utf8').trim();
  } catch (error) {
    throw new UpstreamError('ERR_UPSTREAM_REFUSED', `cannot read the ${what} ${path}: ${(error as Error).message}`, { cause: error });
  }
  if (text === '') throw new UpstreamError('ERR_UPSTREAM_REFUSED', `the ${what} ${path} is empty`);
  return text;
}
