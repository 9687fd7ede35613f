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

const TIME_BYTES = 6; // milliseconds since the epoch; the first byte stays below 0x80 until the year 6429
const SUFFIX_BYTES = 10; // 80 bits from the CSPRNG: more than the 64 the CA/Browser Forum asks of public CAs
const SUFFIXES_PER_DRAW = 256;

/** CSPRNG output drawn 256 suffixes at a time (one OpenSSL call instead of 256); each suffix is zeroed once taken. */
class SuffixPool {
  private pool = Buffer.alloc(0);
  private offset = 0;

  take(target: Buffer, at: number): void {
    if (this.offset + SUFFIX_BYTES > this.pool.length) {
      this.pool = randomBytes(SUFFIX_BYTES * SUFFIXES_PER_DRAW);
      this.offset = 0;
    }
    const end = this.offset + SUFFIX_BYTES;
    this.pool.copy(target, at, this.offset, end);
    this.pool.fill(0, this.offset, end);
    this.offset = end;
  }
}

const suffixes = new SuffixPool();

/**
 * A leaf certificate's serial as DER INTEGER content bytes: 48 bits of issuance time in
 * milliseconds, then 80 random bits. Ascending serials land at the right edge of the store's
 * serial index, so a commit of N certificates dirties one index page instead of N random ones
 * (a quarter of the WAL written per certificate); the random suffix keeps serials unguessable and
 * unique. Positive without a sign byte and never starting with 0x00, so the encoding is minimal.
 */
export function timeOrderedSerial(nowMs: number = Date.now()): Buffer {
  const serial = Buffer.allocUnsafe(TIME_BYTES + SUFFIX_BYTES);
  serial.writeUIntBE(Math.max(0, Math.min(nowMs, 2 ** 47 - 1)), 0, TIME_BYTES);
  suffixes.take(serial, TIME_BYTES);
  if (serial[0] === 0) serial[0] = 1; // a clock before 2004 (tests): keep the full width
  return serial;
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
