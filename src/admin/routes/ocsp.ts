import type { FastifyInstance, FastifyReply } from 'fastify';
import type { OcspReply, OcspResponder } from '../../authority/ocsp.js';
import { errorReply } from '../schemas.js';

/** An OCSPRequest for a handful of certificates is a few hundred bytes; larger bodies are refused unread. */
export const MAX_OCSP_REQUEST_BYTES = 4096;
/** base64 of the largest request, URL-encoded. */
const MAX_OCSP_GET_CHARS = 3 * MAX_OCSP_REQUEST_BYTES;
const BASE64 = /^[A-Za-z0-9+/_-]+={0,2}$/;

/**
 * Public, like the CRLs: the OCSP responder (RFC 6960 appendix A) over POST
 * (application/ocsp-request) and GET /v1/ocsp/{url-encoded base64 request}.
 */
export async function ocspRoutes(app: FastifyInstance, responder: OcspResponder): Promise<void> {
  await app.register(async (ocsp) => {
    ocsp.addContentTypeParser(
      'application/ocsp-request',
      { parseAs: 'buffer', bodyLimit: MAX_OCSP_REQUEST_BYTES },
      (_request, body, done) => done(null, body),
    );
    ocsp.post<{ Body: Buffer }>(
      '/v1/ocsp',
      {
        bodyLimit: MAX_OCSP_REQUEST_BYTES,
        schema: {
          summary: 'OCSP responder, POST (public)',
          security: [],
          consumes: ['application/ocsp-request'],
          response: { 413: errorReply, 415: errorReply },
        },
      },
      async (request, reply) => send(reply, await responder.respond(request.body), false),
    );
    ocsp.get<{ Params: { '*': string } }>(
      '/v1/ocsp/*',
      {
        schema: {
          summary: 'OCSP responder, GET with the URL-encoded base64 DER request (public)',
          security: [],
          response: { 414: errorReply },
        },
      },
      async (request, reply) => {
        const encoded = request.params['*'];
        if (encoded.length > MAX_OCSP_GET_CHARS) {
          const message = `OCSP GET requests are limited to ${MAX_OCSP_GET_CHARS} characters; POST instead`;
          return reply.code(414).send({ code: 'ERR_OCSP_TOO_LARGE', message });
        }
        const der = BASE64.test(encoded) ? Buffer.from(encoded.replace(/-/g, '+').replace(/_/g, '/'), 'base64') : Buffer.alloc(0);
        return send(reply, await responder.respond(der), true);
      },
    );
  });
}

function send(reply: FastifyReply, answer: OcspReply, cacheable: boolean): FastifyReply {
  const cache = cacheable && answer.maxAgeSeconds > 0 ? `public, max-age=${answer.maxAgeSeconds}` : 'no-store';
  return reply.type('application/ocsp-response').header('cache-control', cache).send(answer.der);
}
