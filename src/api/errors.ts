// The API's error catalog: every error body is {statusCode, code, message}
// with a stable code that clients may switch on. 5xx bodies never carry
// internals (the cause is logged instead).

import { Type } from '@sinclair/typebox';

export interface ApiErrorBody {
  statusCode: number;
  code: string;
  message: string;
}

export const errors = {
  badRequest: { statusCode: 400, code: 'KBP_BAD_REQUEST', message: 'invalid request' },
  badContinue: { statusCode: 400, code: 'KBP_BAD_CONTINUE', message: 'invalid continue token (start again without one)' },
  unauthorized: { statusCode: 401, code: 'KBP_UNAUTHORIZED', message: 'a valid bearer token is required' },
  forbidden: { statusCode: 403, code: 'KBP_FORBIDDEN', message: 'not allowed: needs verb "get" on resource "agents" of group "kbp.io"' },
  notFound: { statusCode: 404, code: 'KBP_NOT_FOUND', message: 'no such route' },
  serviceNotFound: { statusCode: 404, code: 'KBP_SERVICE_NOT_FOUND', message: 'no frontend with this id in the maps' },
  mapNotFound: { statusCode: 404, code: 'KBP_MAP_NOT_FOUND', message: 'no such map' },
  methodNotAllowed: { statusCode: 405, code: 'KBP_METHOD_NOT_ALLOWED', message: 'the API is read-only: GET and HEAD only' },
  payloadTooLarge: { statusCode: 413, code: 'KBP_PAYLOAD_TOO_LARGE', message: 'request body too large' },
  rateLimited: { statusCode: 429, code: 'KBP_RATE_LIMITED', message: 'too many requests, retry later' },
  internal: { statusCode: 500, code: 'KBP_INTERNAL', message: 'internal error' },
  mapsUnavailable: { statusCode: 503, code: 'KBP_MAPS_UNAVAILABLE', message: 'the datapath maps cannot be read' },
  authUnavailable: { statusCode: 503, code: 'KBP_AUTH_UNAVAILABLE', message: 'the token cannot be checked now (API server unreachable)' },
} as const satisfies Record<string, ApiErrorBody>;

export type ErrorName = keyof typeof errors;

export const ErrorBody = Type.Object(
  {
    statusCode: Type.Integer(),
    code: Type.String({ description: 'stable error code (KBP_*)' }),
    message: Type.String(),
  },
  { title: 'Error' },
);

/** An error a route throws on purpose, carrying a catalog entry. */
export class ApiError extends Error {
  constructor(readonly body: ApiErrorBody) {
    super(body.message);
    this.name = 'ApiError';
  }
}
