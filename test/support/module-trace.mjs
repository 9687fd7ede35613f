// Preload (node --import) that records every module URL a meshca process resolves, in the file
// named by MESHCA_MODULE_TRACE: how test/cli.test.ts sees which code an offline command loads.
import { register } from 'node:module';

register('./module-trace-hooks.mjs', import.meta.url);
