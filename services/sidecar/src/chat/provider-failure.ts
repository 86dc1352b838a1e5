/**
 * What a model provider's failure means for the client. opencode reports a failing provider
 * call as `session.status {type:"retry", attempt, message, next}` — the provider's message and
 * the next attempt's time, no status code — and retries five times (~65 s) before giving up.
 * So the kind of failure is read from the message, with the patterns opencode itself uses to
 * decide what is retryable (session/retry.ts); a final `session.error` carries the status.
 */

export type FailureKind = "rate_limited" | "unreachable" | "failed";

/** The model a turn ran on, from its assistant message. */
export interface ModelRef {
  providerID: string;
  modelID: string;
}

/** A provider as the runner's opencode knows it (name and URL when it has them). */
export interface ProviderRef {
  id: string;
  name?: string;
  url?: string;
}

/** How a failed turn is told to the client (`code` is the OpenAI-shaped error's code). */
export interface TurnFailure {
  message: string;
  code: string;
  /** Seconds until the provider may be asked again, when known. */
  retryAfterS?: number;
}

const RATE_LIMITED = /\b429\b|rate.?limit|too many requests|quota|resource.?exhausted|usage limit/i;
const UNREACHABLE =
  /cannot connect|unable to connect|fetch failed|failed to fetch|connection (?:refused|error|lost)|econnrefused|econnreset|etimedout|enotfound|eai_again|getaddrinfo|socket hang up|network.?error|typo in the url/i;

export function failureKind(message: string, statusCode?: number): FailureKind {
  if (statusCode === 429 || RATE_LIMITED.test(message)) return "rate_limited";
  if (statusCode === undefined && UNREACHABLE.test(message)) return "unreachable";
  return "failed";
}

function providerName(provider: ProviderRef | undefined, model: ModelRef | undefined): string {
  return provider?.name && provider.name !== provider.id ? `${provider.name} (${provider.id})` : (provider?.id ?? model?.providerID ?? "the model provider");
}

const modelName = (model: ModelRef | undefined) => (model ? `${model.providerID}/${model.modelID}` : "the configured model");

/** The status line shown while opencode waits to retry. */
export function retryStatus(kind: FailureKind, provider: ProviderRef | undefined, model: ModelRef | undefined, message: string, delayS?: number): string {
  const name = provider?.id ?? model?.providerID ?? "the model provider";
  const when = delayS !== undefined ? `retrying in ${delayS} s` : "retrying";
  switch (kind) {
    case "rate_limited":
      return `${name} rate limited, ${when}`;
    case "unreachable":
      return `cannot reach ${name}${provider?.url ? ` at ${provider.url}` : ""}, ${when}`;
    case "failed":
      return `${name} failed (${message}), ${when}`;
  }
}

/** How to fix it, when the failing model is not one the operator chose. */
const CONFIGURE_HINT =
  "Configure a model for opencode, e.g. OPENCODE_CONFIG_CONTENT='{\"model\":\"<provider>/<model>\",…}' (README: \"Choosing a model\").";

/**
 * The error a turn ends with when its provider keeps failing. `modelConfigured` is false when
 * the operator set no model and opencode fell back to its own default (the first-run case).
 */
export function providerFailure(
  kind: FailureKind,
  provider: ProviderRef | undefined,
  model: ModelRef | undefined,
  message: string,
  opts: { retryAfterS?: number; modelConfigured: boolean; statusCode?: number },
): TurnFailure {
  const who = providerName(provider, model);
  const on = `model ${modelName(model)}`;
  const hint = opts.modelConfigured ? "" : ` No model is configured, so opencode used its default. ${CONFIGURE_HINT}`;
  switch (kind) {
    case "rate_limited":
      return {
        code: "rate_limit_exceeded",
        retryAfterS: opts.retryAfterS,
        message: `${who} is rate limiting requests (${on}): ${message}.${opts.retryAfterS !== undefined ? ` Try again in ${opts.retryAfterS} s.` : ""}${hint}`,
      };
    case "unreachable":
      return {
        code: "provider_unreachable",
        message: `Cannot reach the model provider ${who}${provider?.url ? ` at ${provider.url}` : ""} (${on}): ${message}.${hint}`,
      };
    case "failed":
      return {
        code: "provider_error",
        message: `The model provider ${who} failed${opts.statusCode ? ` with HTTP ${opts.statusCode}` : ""} (${on}): ${message}.${hint}`,
      };
  }
}

/** `Retry-After` from a provider's response headers (seconds or an HTTP date). */
export function retryAfterFromHeaders(headers: Record<string, unknown> | undefined, now = Date.now()): number | undefined {
  const rawMs = headers?.["retry-after-ms"];
  const ms = typeof rawMs === "string" && rawMs.trim() ? Number(rawMs) : NaN;
  if (Number.isFinite(ms) && ms >= 0) return Math.ceil(ms / 1000);
  const raw = headers?.["retry-after"];
  if (typeof raw !== "string" || !raw.trim()) return undefined;
  const s = Number(raw);
  if (Number.isFinite(s) && s >= 0) return Math.ceil(s);
  const at = Date.parse(raw);
  return Number.isNaN(at) ? undefined : Math.max(0, Math.ceil((at - now) / 1000));
}
