/** The RFC 5280 revocation reasons meshca records and publishes: the one list of them. */
export const REVOCATION_REASONS = Object.freeze([
  'unspecified',
  'keyCompromise',
  'affiliationChanged',
  'superseded',
  'cessationOfOperation',
] as const);
export type CrlReason = (typeof REVOCATION_REASONS)[number];
