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

/** Maps anything thrown to an ApiError without leaking internals. */
export function toApiError(err: unknown): ApiError {
  if (err instanceof ApiError) return err;
  const e = err as { type?: string; status?: number; statusCode?: number; message?: string };
  // body-parser's errors carry `type` and `status`.
  if (e?.type === "entity.too.large") return new PayloadTooLargeError("Request body too large", "body_too_large");
  if (e?.type === "entity.parse.failed") return new BadRequestError("Malformed JSON in request body", "invalid_json");
  if (e?.type === "encoding.unsupported" || e?.type === "charset.unsupported") {
    return new BadRequestError(e.message ?? "Unsupported body encoding", "unsupported_encoding");
  }
  return new ApiError("Internal server error", "internal_error");
}
