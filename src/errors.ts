/**
 * The base of every meshca error, in the style of jose's error classes: a stable `code` that
 * transports map to a status (grpc/status.ts, admin/errors.ts) and the CLI to an exit code, and
 * `retryable` when the failure is ours and trying again later may succeed. Messages speak of the
 * domain; the CLI and the API each add how to take the next step.
 */
export class MeshcaError<Code extends string = string> extends Error {
  readonly retryable: boolean;

  constructor(
    readonly code: Code,
    message: string,
    options: { readonly cause?: unknown; readonly retryable?: boolean } = {},
  ) {
    super(message, options.cause === undefined ? undefined : { cause: options.cause });
    this.retryable = options.retryable ?? false;
  }
}

/** A flag, argument or configuration value is wrong; the message names it and says what is accepted. The CLI exits 2. */
export class UsageError extends MeshcaError<'ERR_USAGE'> {
  override readonly name = 'UsageError';
  constructor(message: string) {
    super('ERR_USAGE', message);
  }
}
