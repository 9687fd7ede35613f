// @ts-check
// Violations the fuzzer reproduces but that are not fixed yet: counted and printed, but they do not
// fail `npm test` / `npm run fuzz`. Each needs an it.fails reproducer in test/fuzz.test.ts. Empty:
// K1-K3 (docs/fuzzing.md) are fixed and have regression tests.

export const KNOWN_ISSUES = [];
