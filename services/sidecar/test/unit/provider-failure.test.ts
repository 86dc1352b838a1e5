import { describe, expect, it } from "vitest";
import { failureKind, providerFailure, retryAfterFromHeaders, retryStatus } from "../../src/chat/provider-failure.js";

describe("failureKind", () => {
  it.each([
    ["Rate limit reached for gpt-4o in organization org-x on requests per min", undefined, "rate_limited"],
    ["Too Many Requests", undefined, "rate_limited"],
    ["anything", 429, "rate_limited"],
    ["Cannot connect to API: Unable to connect. Is the computer able to access the url?", undefined, "unreachable"],
    ["fetch failed", undefined, "unreachable"],
    ["Internal server error", undefined, "failed"],
    ["Overloaded", 529, "failed"],
    // A status code means the provider answered: it was reachable, whatever the text says.
    ["connection error upstream", 502, "failed"],
  ] as const)("%s (%s) → %s", (message, status, kind) => {
    expect(failureKind(message, status)).toBe(kind);
  });
});

describe("retryAfterFromHeaders", () => {
  const now = Date.parse("2026-11-30T12:00:00Z");
  it.each([
    [{ "retry-after": "7" }, 7],
    [{ "retry-after": "1.2" }, 2],
    [{ "retry-after-ms": "1500" }, 2],
    [{ "retry-after": "Mon, 30 Nov 2026 12:00:30 GMT" }, 30],
    [{ "retry-after": "soon" }, undefined],
    [{ "retry-after": "" }, undefined],
    [{}, undefined],
    [undefined, undefined],
  ])("%j → %s", (headers, seconds) => {
    expect(retryAfterFromHeaders(headers as Record<string, unknown> | undefined, now)).toBe(seconds);
  });
});

describe("messages", () => {
  const model = { providerID: "local", modelID: "qwen" };
  it("status lines say what happened and when opencode tries again", () => {
    expect(retryStatus("unreachable", { id: "local", url: "http://gpu:11434/v1" }, model, "Cannot connect", 4)).toBe(
      "cannot reach local at http://gpu:11434/v1, retrying in 4 s",
    );
    expect(retryStatus("rate_limited", undefined, model, "Too Many Requests", 30)).toBe("local rate limited, retrying in 30 s");
    expect(retryStatus("failed", undefined, undefined, "boom")).toBe("the model provider failed (boom), retrying");
  });

  it("the final error names provider and model, and how to configure one when none was chosen", () => {
    const rl = providerFailure("rate_limited", { id: "local", name: "Local GPU" }, model, "Too Many Requests", { retryAfterS: 5, modelConfigured: true });
    expect(rl).toEqual({
      code: "rate_limit_exceeded",
      retryAfterS: 5,
      message: "Local GPU (local) is rate limiting requests (model local/qwen): Too Many Requests. Try again in 5 s.",
    });
    const first = providerFailure("unreachable", { id: "opencode", url: "https://opencode.ai/zen/v1" }, { providerID: "opencode", modelID: "big-pickle" }, "Cannot connect", {
      modelConfigured: false,
    });
    expect(first.code).toBe("provider_unreachable");
    expect(first.message).toContain("at https://opencode.ai/zen/v1 (model opencode/big-pickle)");
    expect(first.message).toContain("No model is configured");
    expect(first.message).toContain("OPENCODE_CONFIG_CONTENT");
  });
});
