/** The RFC 5280 reasons a leaf may be revoked for: the one list of them. */
export const REVOCATION_REASONS = Object.freeze([
  'unspecified',
  'keyCompromise',
  'affiliationChanged',
  'superseded',
  'cessationOfOperation',
] as const);
/** A CRL entry's reason: a leaf's, or cACompromise for a CA certificate (RFC 5280 §5.3.1). */
export type CrlReason = (typeof REVOCATION_REASONS)[number] | 'cACompromise';
