// @ts-check
// Everything the fuzz suite shares, for test/support/fuzz.ts (which binds it to src/) and for
// fuzz/run.mjs (which binds it to dist/).
export { caseSeed, hashString, Rng } from './lib/rng.mjs';
export { deepJsonText, mutateBytes, mutateJsonObject, mutateString, NASTY_CHARS, weirdJsonValue } from './lib/mutate.mjs';
export { deepNesting, encodeTree, lieAboutLength, mutateTree, oidContent, parseTree, tlv, tlvHeaders } from './lib/der.mjs';
export { formatViolations, runFuzz } from './lib/engine.mjs';
export { loadModules, MODULE_PATHS } from './lib/modules.mjs';
export { KNOWN_ISSUES } from './known-issues.mjs';
export { ADMIN_STATUSES, ADMIN_TOKEN, adminTarget } from './targets/admin.mjs';
export { csrTarget } from './targets/csr.mjs';
export { grpcTarget } from './targets/grpc.mjs';
export { h2Target } from './targets/h2.mjs';
export { spiffeTarget, SPIFFE_ID_ORACLE } from './targets/spiffe.mjs';
export { tokenTarget, TOKEN_NOW } from './targets/token.mjs';
