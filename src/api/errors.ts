// The API's error catalog: every error body is {statusCode, code, message}
// with a stable code. 5xx bodies never carry internals (they are logged).

export interface ApiErrorBody {
  statusCode: number;
  code: string;
  message: string;
}

export const errors = {
  notFound: { statusCode: 404, code: 'KBP_NOT_FOUND', message: 'no such route' },
  badRequest: { statusCode: 400, code: 'KBP_BAD_REQUEST', message: 'invalid request' },
  mapsUnavailable: { statusCode: 503, code: 'KBP_MAPS_UNAVAILABLE', message: 'the datapath maps cannot be read' },
  internal: { statusCode: 500, code: 'KBP_INTERNAL', message: 'internal error' },
} as const satisfies Record<string, ApiErrorBody>;

export const errorSchema = {
  type: 'object',
  required: ['statusCode', 'code', 'message'],
  properties: {
    statusCode: { type: 'integer' },
    code: { type: 'string' },
    message: { type: 'string' },
  },
} as const;

/** An error a route throws on purpose, carrying a catalog entry. */
export class ApiError extends Error {
  constructor(readonly body: ApiErrorBody) {
    super(body.message);
    this.name = 'ApiError';
  }
}
