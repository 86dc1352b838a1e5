/**
 * One error hierarchy for everything the API can answer with. Each class fixes its HTTP
 * status and OpenAI `type`; `render` gives OpenAI's body shape. `isRetryable` is read by
 * whatever retries (runner start, event stream reconnects).
 */
export interface OpenAIErrorBody {
  error: { message: string; type: string; param: string | null; code: string | null };
}

export class ApiError extends Error {
  readonly status: number = 500;
  readonly type: string = "server_error";
  readonly isRetryable: boolean = false;
  /** Sent as `Retry-After` (seconds) when set. */
  retryAfterS?: number;

  constructor(
    message: string,
    readonly code: string | null = null,
    readonly param: string | null = null,
  ) {
    super(message);
    this.name = new.target.name;
  }

  render(): OpenAIErrorBody {
    return { error: { message: this.message, type: this.type, param: this.param, code: this.code } };
  }
}

export class BadRequestError extends ApiError {
  override readonly status = 400;
  override readonly type = "invalid_request_error";
}

export class AuthenticationError extends ApiError {
  override readonly status = 401;
  override readonly type = "authentication_error";
  constructor(message = "Invalid or missing API key", code = "invalid_api_key") {
    super(message, code);
  }
}

export class NotFoundError extends ApiError {
  override readonly status = 404;
  override readonly type = "invalid_request_error";
}

/** It existed, and will not again (an expired link). */
export class GoneError extends ApiError {
  override readonly status = 410;
  override readonly type = "invalid_request_error";
}

export class PayloadTooLargeError extends ApiError {
  override readonly status = 413;
  override readonly type = "invalid_request_error";
}

export class RateLimitError extends ApiError {
  override readonly status = 429;
  override readonly type = "rate_limit_error";
  override readonly isRetryable = true;
}

/** The runner answered, but wrongly (5xx, unexpected shape). */
export class RunnerError extends ApiError {
  override readonly status = 502;
  override readonly type = "server_error";
  override readonly isRetryable = true;
}

/** The runner cannot be reached or did not become ready in time. */
export class RunnerUnavailableError extends ApiError {
  override readonly status = 503;
  override readonly type = "server_error";
  override readonly isRetryable = true;
}

/** The agent's run failed (provider error, abort…): reported in-band once streaming began. */
export class AgentRunError extends ApiError {
  override readonly status = 502;
  override readonly type = "agent_error";
}

/** The agent stalled or ran past its time limit. */
export class AgentTimeoutError extends ApiError {
  override readonly status = 504;
  override readonly type = "agent_error";
}

/** The client hung up before its turn began: nobody reads the answer (nginx's 499). */
export class ClientClosedError extends ApiError {
  override readonly status = 499;
  override readonly type = "invalid_request_error";
  constructor() {
    super("The client closed the request", "client_closed");
  }
}

/** The error of a turn that failed, as its HTTP answer (a non-streaming client's). */
export function turnError(failure: { message: string; code: string; retryAfterS?: number }): ApiError {
  let err: ApiError;
  switch (failure.code) {
    case "rate_limit_exceeded":
      err = new RateLimitError(failure.message, failure.code);
      break;
    case "agent_timeout":
      err = new AgentTimeoutError(failure.message, failure.code);
      break;
    case "shutting_down":
    case "database_unavailable":
      err = new RunnerUnavailableError(failure.message, failure.code);
      break;
    default:
      err = new AgentRunError(failure.message, failure.code);
  }
  err.retryAfterS = failure.retryAfterS;
  return err;
}

/**
 * Maps anything thrown to an ApiError without leaking internals: an error that is not an
 * ApiError never lends its message to the client (the error handler logs it instead).
 */
export function toApiError(err: unknown): ApiError {
  if (err instanceof ApiError) return err;
  const e = err as { type?: string; status?: number; code?: unknown; errno?: unknown } | null | undefined;
  // body-parser's errors carry `type` and `status`.
  if (e?.type === "entity.too.large") return new PayloadTooLargeError("Request body too large", "body_too_large");
  if (e?.type === "entity.parse.failed") return new BadRequestError("Malformed JSON in request body", "invalid_json");
  if (e?.type === "encoding.unsupported") {
    return new BadRequestError("Unsupported Content-Encoding (use gzip, deflate or br, or none)", "unsupported_encoding");
  }
  if (e?.type === "charset.unsupported") return new BadRequestError("Unsupported charset (send UTF-8)", "unsupported_encoding");
  // A body that does not decompress: body-parser passes zlib's error on with status 400 and
  // no `type` (codes Z_DATA_ERROR, Z_BUF_ERROR, brotli's ERR__ERROR_FORMAT_…).
  if (e?.status === 400 && typeof e.errno === "number" && typeof e.code === "string" && /^(Z_|ERR_)/.test(e.code)) {
    return new BadRequestError("The request body is not valid for its Content-Encoding", "invalid_body_encoding");
  }
  if (e?.type === "request.aborted" || e?.type === "request.size.invalid") {
    return new BadRequestError("The request body ended early or does not match its Content-Length", "invalid_body");
  }
  return new ApiError("Internal server error", "internal_error");
}
