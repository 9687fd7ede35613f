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
  for (const [, label, body] of text.matchAll(BLOCK_RE)) {
    if (label !== undefined && body !== undefined) blocks.push({ label, der: Buffer.from(body.replace(/\s+/g, ''), 'base64') });
  }
  return blocks;
}

/** Exactly one PEM block with one of the given labels; anything else is ERR_PEM_MALFORMED. */
export function pemDecodeOne(text: string, labels: readonly string[]): Buffer {
  const blocks = pemBlocks(text);
  const [block] = blocks;
  if (block === undefined || blocks.length !== 1)
    throw new PkiError('ERR_PEM_MALFORMED', `expected exactly one PEM block, found ${blocks.length}`);
  if (!labels.includes(block.label)) {
    throw new PkiError('ERR_PEM_MALFORMED', `expected PEM label ${labels.join(' or ')}, found ${block.label}`);
  }
  return block.der;
}

/** All blocks labelled CERTIFICATE; throws if there are none. */
export function pemCertificates(text: string): Buffer[] {
  const certs = pemBlocks(text)
    .filter((b) => b.label === 'CERTIFICATE')
    .map((b) => b.der);
  if (certs.length === 0) throw new PkiError('ERR_PEM_MALFORMED', 'no CERTIFICATE PEM block found');
  return certs;
}
