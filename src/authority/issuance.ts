import type { CallerIdentity } from '../authn/index.js';
import type { ExpectedRecord, Store } from '../store/types.js';
import { parseCsr, type CertificationRequest } from '../pki/csr.js';
import { PkiError } from '../pki/errors.js';
import type { TbsSigner } from '../pki/leaf.js';
import { threadPoolCsrVerifier, type CsrVerifier } from '../pki/verify-pool.js';
import { StoreError } from '../store/errors.js';
import { pemEncode } from '../pki/pem.js';
import { serialToHex, timeOrderedSerial } from '../pki/serial.js';
import type { CertificateAuthority } from './lifecycle.js';
import { IssuanceError, identityDenied } from './errors.js';
import type { IssuancePolicy } from './policy.js';
import type { TrustSnapshot } from './snapshot.js';

export interface IssuanceRequest {
  readonly csrPem: string;
  /** Requested lifetime in seconds; ≤ 0 means the default. */
  readonly validitySeconds: number;
  readonly caller: CallerIdentity;
  /** The identity to issue for when it is not the caller's own (ztunnel impersonation, already authorized). */
  readonly identity?: string;
}

export interface IssuedCertificate {
  readonly serialHex: string;
  readonly spiffeId: string;
  readonly authorityId: string;
  readonly notAfter: Date;
  /** [leaf, intermediate(s)..., all trusted roots in one PEM string] — Istio's cert_chain. */
  readonly chain: readonly string[];
}

/** A certificate meshca issues for a key it holds itself (serving certificates, istiod). */
export interface ProfileIssuanceRequest {
  readonly spkiDer: Buffer;
  readonly uris: readonly string[];
  readonly dnsNames: readonly string[];
  readonly ttlMs: number;
  readonly callerId: string;
  readonly rsaKey: boolean;
  /** Workload issuance: refused if the identity is on the deny-list when the record commits. */
  readonly refuseIfDenied?: boolean;
}

/** What a workload issuance adds to a profile one: its announcement, its proof of possession, the disk check. */
interface WorkloadIssuance {
  readonly announced?: ExpectedRecord;
  /** Signs only once the CSR's own signature holds (CsrVerifier.signerFor). */
  readonly proof?: TbsSigner;
  readonly freeSpace?: Promise<void>;
}

/**
 * The compact pipeline of istio-csr's pkg/server: CSR check → policy → sign → record → respond.
 * The caller is already authenticated; the transport maps IssuanceError codes to statuses.
 */
export class IssuanceService {
  private readonly now: () => Date;

  constructor(
    private readonly ca: CertificateAuthority,
    private readonly store: Store,
    private readonly policy: IssuancePolicy,
    private readonly verifier: CsrVerifier = threadPoolCsrVerifier,
    now?: () => Date,
  ) {
    this.now = now ?? (() => new Date());
  }

  async issue(request: IssuanceRequest): Promise<IssuedCertificate> {
    const spiffeId = request.identity ?? request.caller.spiffeId;
    const csr = parseRequest(request.csrPem);
    this.policy.checkCsr(csr, { uris: [spiffeId], dnsNames: [] });
    // The deny-list is checked by the store as it records the certificate (refuseIfDenied), atomically
    // with the insert: a check up here could pass just before a deny-and-revoke sweep commits.
    // Announced before the slow part (CSR check, signing), so a group commit about to go out
    // waits a moment for this record instead of committing without it.
    const announced = this.store.expectIssued();
    try {
      // Checked while the leaf is signed: a full disk refuses before anything is recorded.
      const freeSpace = this.store.checkFreeSpace().catch(diskVerdict);
      freeSpace.catch(() => undefined); // observed below; until then it must not count as unhandled
      return await this.signAndRecord(
        {
          spkiDer: csr.spkiDer,
          uris: [spiffeId],
          dnsNames: [],
          rsaKey: csr.keyAlgorithm === 'rsa',
          callerId: request.caller.spiffeId,
          refuseIfDenied: true,
        },
        request.validitySeconds,
        request.caller.clusterId,
        { announced, proof: this.verifier.signerFor(csr), freeSpace },
      );
    } finally {
      announced.cancel(); // a no-op once the record was queued
    }
  }

  /** Issues a named-profile certificate for a key meshca generated itself. */
  issueProfile(request: ProfileIssuanceRequest, clusterId = ''): Promise<IssuedCertificate> {
    return this.signAndRecord(request, Math.ceil(request.ttlMs / 1000), clusterId);
  }

  /**
   * A revoked signer stops signing at once: an issuance that raced the revocation (signed with the
   * old snapshot) is redone with the replacement, so once the revocation has returned, no
   * certificate from the tainted intermediate is handed out. The stray record stays on file.
   */
  private async signAndRecord(
    request: Omit<ProfileIssuanceRequest, 'ttlMs'>,
    validitySeconds: number,
    clusterId: string,
    workload: WorkloadIssuance = {},
  ): Promise<IssuedCertificate> {
    for (let attempt = 1; ; attempt++) {
      const snapshot = this.ca.current();
      // The CSR's signature is checked once, with the first signature; a redo only re-signs.
      const issued = await this.signOnce(
        snapshot,
        request,
        validitySeconds,
        clusterId,
        attempt === 1 ? workload : { ...workload, proof: undefined },
      );
      const latest = this.ca.current();
      const tainted = latest !== snapshot && latest.authorities.some((a) => a.id === issued.authorityId && a.state === 'tainted');
      if (!tainted) return issued;
      if (attempt >= 3) throw new IssuanceError('ERR_CA_NOT_READY', 'the signing authority was revoked during issuance; retry');
    }
  }

  private async signOnce(
    snapshot: TrustSnapshot,
    request: Omit<ProfileIssuanceRequest, 'ttlMs'>,
    validitySeconds: number,
    clusterId: string,
    { announced, proof, freeSpace }: WorkloadIssuance,
  ): Promise<IssuedCertificate> {
    // One snapshot for the whole issuance: the lifetime is clamped to the intermediate that signs.
    const signer = snapshot.signer;
    const validity = this.policy.validity(validitySeconds, this.now(), signer.notAfter);
    const serial = timeOrderedSerial();
    const der = await signer
      .sign(
        {
          serial,
          ...validity,
          spkiDer: request.spkiDer,
          uris: request.uris,
          dnsNames: request.dnsNames,
          keyEncipherment: request.rsaKey,
        },
        proof,
      )
      .catch((error: unknown) => {
        throw signingFailure(error);
      });
    await freeSpace;
    const serialHex = serialToHex(serial);
    const spiffeId = request.uris[0] ?? `dns:${request.dnsNames[0]}`;
    await this.store
      .recordIssued(
        {
          serialHex,
          spiffeId,
          callerId: request.callerId,
          clusterId,
          authorityId: signer.id,
          notBefore: validity.notBefore,
          notAfter: validity.notAfter,
          issuedAt: this.now(),
          der,
          refuseIfDenied: request.refuseIfDenied,
        },
        announced,
      )
      .catch((error: unknown) => {
        if (error instanceof StoreError && error.code === 'ERR_STORE_DENIED') throw identityDenied(spiffeId);
        throw storeFailure(error, 'could not record the certificate');
      });
    return {
      serialHex,
      spiffeId,
      authorityId: signer.id,
      notAfter: validity.notAfter,
      chain: [pemEncode(der, 'CERTIFICATE'), ...snapshot.chainTail],
    };
  }
}

/** An unreachable store is UNAVAILABLE (istio-agent retries); anything else about the record is a failed issuance. */
function storeFailure(error: unknown, what: string): IssuanceError {
  const unavailable = error instanceof StoreError && error.code === 'ERR_STORE_UNAVAILABLE';
  return new IssuanceError(unavailable ? 'ERR_STORE_UNAVAILABLE' : 'ERR_ISSUANCE_FAILED', `${what}: ${(error as Error).message}`);
}

/** Workload issuance stops on a nearly full volume; meshca's own certificates (a few a day) still go through. */
function diskVerdict(error: unknown): never {
  if (error instanceof StoreError && error.code === 'ERR_STORE_DISK_LOW') throw new IssuanceError('ERR_DISK_LOW', error.message);
  throw error;
}

/** A CSR whose signature fails or whose key is unusable is the client's fault; a dead verifier or a failed signature is ours. */
function signingFailure(error: unknown): IssuanceError {
  const code = error instanceof PkiError ? error.code : undefined;
  if (code === 'ERR_CSR_SIGNATURE_INVALID' || code === 'ERR_CSR_UNSUPPORTED_KEY')
    return new IssuanceError('ERR_CSR_SIGNATURE', 'CSR signature does not verify: the CSR was altered or not signed by its key');
  if (code === 'ERR_VERIFIER_UNAVAILABLE') return new IssuanceError('ERR_VERIFIER_UNAVAILABLE', `${(error as Error).message}; retry later`);
  return new IssuanceError('ERR_ISSUANCE_FAILED', `signing failed: ${(error as Error).message}`);
}

function parseRequest(pem: string): CertificationRequest {
  try {
    return parseCsr(pem);
  } catch (error) {
    if (error instanceof PkiError) throw new IssuanceError('ERR_CSR_REJECTED', `invalid CSR: ${error.message}`);
    throw error;
  }
}
