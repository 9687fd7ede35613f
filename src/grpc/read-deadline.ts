import { constants } from 'node:http2';
import {
  ServerInterceptingCall,
  ServerListenerBuilder,
  status,
  type ServerInterceptingCallInterface,
  type ServerInterceptor,
} from '@grpc/grpc-js';

/**
 * Cancels a call whose request message has not fully arrived within `timeoutMs` of its HEADERS.
 * Without it a peer can open streams, send headers only, and make the server hold them for as long
 * as the connection lives (grpc-js invokes the handler only once the message is complete).
 */
export function requestReadDeadline(timeoutMs: number, onTimeout: () => void): ServerInterceptor {
  return (_method, call) => {
    let timer: NodeJS.Timeout | undefined;
    const settle = () => {
      if (timer) clearTimeout(timer);
      timer = undefined;
    };
    return new ServerInterceptingCall(call, {
      start: (next) => {
        timer = setTimeout(() => {
          timer = undefined;
          onTimeout();
          call.sendStatus({ code: status.DEADLINE_EXCEEDED, details: 'the request message did not arrive within --request-read-timeout' });
          resetStream(call);
        }, timeoutMs);
        timer.unref();
        next(
          new ServerListenerBuilder()
            .withOnReceiveMessage((message, proceed) => {
              settle();
              proceed(message);
            })
            .withOnCancel(settle)
            .build(),
        );
      },
    });
  };
}

/**
 * After the status, the stream is only half-closed: the peer never ended its side, so Node keeps
 * the stream (and its headers) until the connection closes. RST_STREAM(NO_ERROR) after a complete
 * response (RFC 9113 §8.1) frees it now. grpc-js hands the first interceptor its base call, which
 * holds the HTTP/2 stream; if a future grpc-js hides it, the memory test in test/security.test.ts fails.
 */
function resetStream(call: ServerInterceptingCallInterface): void {
  const stream = (call as unknown as { stream?: { close?: (code: number) => void; closed?: boolean } }).stream;
  if (stream && !stream.closed && typeof stream.close === 'function') stream.close(constants.NGHTTP2_NO_ERROR);
}
