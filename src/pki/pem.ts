import { PkiError } from './errors.js';

export interface PemBlock {
  readonly label: string;
  readonly der: Buffer;
}

const BLOCK_RE = /-----BEGIN ([A-Z0-9 ]+)-----\r?\n([A-Za-z0-9+/=\r\n]*?)-----END \1-----/g;

export function pemEncode(der: Uint8Array, label: string): string {
  const b64 = Buffer.from(der.buffer, der.byteOffset, der.byteLength).toString('base64');
  let body = '';
  for (let i = 0; i < b64.length; i += 64) body += b64.slice(i, i + 64) + '\n';
  return `-----BEGIN ${label}-----\n${body}-----END ${label}-----\n`;
}

/** All PEM blocks in `text`, in order. Text outside blocks (comments) is ignored. */
export function pemBlocks(text: string): PemBlock[] {
  const blocks: PemBlock[] = [];
  for (const m of text.matchAll(BLOCK_RE)) {
    blocks.push({ label: m[1]!, der: Buffer.from(m[2]!.replace(/\s+/g, ''), 'base64') });
  }
  return blocks;
}

/** Exactly one PEM block with one of the given labels; anything else is ERR_PEM_MALFORMED. */
export function pemDecodeOne(text: string, labels: readonly string[]): Buffer {
  const blocks = pemBlocks(text);
  if (blocks.length !== 1) throw new PkiError('ERR_PEM_MALFORMED', `expected exactly one PEM block, found ${blocks.length}`);
  const block = blocks[0]!;
  if (!labels.includes(block.label)) {
    throw new PkiError('ERR_PEM_MALFORMED', `expected PEM label ${labels.join(' or ')}, found ${block.label}`);
  }
  return block.der;
}

/** All blocks labelled CERTIFICATE; throws if there are none. */
export function pemCertificates(text: string): Buffer[] {
  const certs = pemBlocks(text).filter((b) => b.label === 'CERTIFICATE').map((b) => b.der);
  if (certs.length === 0) throw new PkiError('ERR_PEM_MALFORMED', 'no CERTIFICATE PEM block found');
  return certs;
}
