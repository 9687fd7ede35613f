import type { status } from '@grpc/grpc-js';

/**
 * What a unary handler sees of its call. meshca's gRPC port serves only unary methods
 * (CreateCertificate, MintJwtSvid, FetchBundles), so a call is one request and one answer.
 */
export interface CallMetadata {
  /** The first value of a request header (custom metadata), by lower-case name. */
  get(name: string): string | undefined;
}

export interface UnaryCall<Request> {
  readonly request: Request;
  readonly metadata: CallMetadata;
  /** True once the client has gone away or the call's deadline has passed: no answer will be read. */
  readonly cancelled: boolean;
}

/** Resolves with the response, or rejects with a CallFailure (anything else becomes INTERNAL). */
export type UnaryHandler<Request = never, Response = unknown> = (call: UnaryCall<Request>) => Promise<Response>;

/** The status a handler answers with when it refuses a call. */
export class CallFailure extends Error {
  constructor(
    readonly code: status,
    readonly details: string,
  ) {
    super(details);
    this.name = 'CallFailure';
  }
}

/** One method of a service: its HTTP/2 path, codecs and handler. */
export interface UnaryMethod {
  readonly path: string;
  decode(message: Buffer): unknown;
  encode(response: unknown): Buffer;
  readonly handler: UnaryHandler<unknown>;
}

/** A service definition as proto-loader describes it (the parts the server needs). */
export interface ServiceDescription {
  readonly [method: string]: {
    readonly path: string;
    readonly requestStream: boolean;
    readonly responseStream: boolean;
    requestDeserialize(bytes: Buffer): unknown;
    responseSerialize(value: unknown): Buffer;
  };
}

/** Handlers by method name, for one service. */
export type UnaryHandlers = Readonly<Record<string, UnaryHandler<never>>>;

/** Pairs each method of a service with its handler; every method must be unary and handled. */
export function unaryMethods(service: ServiceDescription, handlers: UnaryHandlers): UnaryMethod[] {
  return Object.entries(service).map(([name, method]) => {
    const handler = handlers[name];
    if (!handler) throw new Error(`no handler for ${method.path}`);
    if (method.requestStream || method.responseStream)
      throw new Error(`${method.path} is a streaming method; this server serves unary methods only`);
    return {
      path: method.path,
      decode: (bytes) => method.requestDeserialize(bytes),
      encode: (response) => method.responseSerialize(response),
      handler: handler as UnaryHandler<unknown>,
    };
  });
}
