import { randomBytes } from 'node:crypto';

const SERIAL_BYTES = 16; // 128 bits of randomness (docs/architecture.md)

/**
 * A random positive serial as DER INTEGER content bytes. A leading 0x00 keeps it positive when
 * the high bit is set, because Go >= 1.23 rejects negative serials. Never zero.
 */
export function randomSerial(): Buffer {
  const raw = randomBytes(SERIAL_BYTES);
  if (raw[0] === 0) raw[0] = 1; // keep full 128-bit width and avoid a non-minimal encoding
  return raw.readUInt8(0) & 0x80 ? Buffer.concat([Buffer.from([0]), raw]) : raw;
}

/** Serial as the API shows it: lowercase hex, no separators, no leading zeros. */
export function serialToHex(content: Uint8Array): string {
  const hex = Buffer.from(content.buffer, content.byteOffset, content.byteLength).toString('hex').replace(/^0+/, '');
  return hex === '' ? '0' : hex;
}

const SERIAL_HEX_RE = /^[0-9a-f]{1,80}$/;

/** Normalises user input (any case, optional colons, leading zeros) to the API form, or undefined. */
export function normalizeSerialHex(input: string): string | undefined {
  const hex = input
    .toLowerCase()
    .replace(/:/g, '')
    .replace(/^0+(?=.)/, '');
  return SERIAL_HEX_RE.test(hex) ? hex : undefined;
}
