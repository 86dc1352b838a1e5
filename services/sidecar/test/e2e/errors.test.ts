/**
 * Every error case answers in OpenAI's shape with the right status, and loses nothing.
 */
import net from "node:net";
import { randomUUID } from "node:crypto";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { startBrokenRunner } from "../fixtures/broken-runner.js";
import { say, startScriptedModel, type ScriptedModel } from "../fixtures/scripted-model.js";
import { readSse, scriptedEnv, startSidecar, tempDir, type InProcessSidecar } from "../helpers/harness.js";

let model: ScriptedModel;
let sidecar: InProcessSidecar;

/** OpenAI's error body: exactly these four keys (`param` may be null). */
function expectErrorShape(json: { error?: Record<string, unknown> }) {
  expect(Object.keys(json.error ?? {}).sort()).toEqual(["code", "message", "param", "type"]);
  expect(json.error).toMatchObject({ message: expect.any(String), type: expect.any(String), code: expect.any(String) });
}

async function post(base: string, body: unknown, headers: Record<string, string> = {}) {
  return fetch(`${base}/v1/chat/completions`, {
    method: "POST",
    headers: { "content-type": "application/json", ...headers },
    body: typeof body === "string" ? body : JSON.stringify(body),
  });
}

beforeAll(async () => {
  model = await startScriptedModel();
  sidecar = await startSidecar(scriptedEnv(model.baseURL, { MAX_BODY_BYTES: "4096", MAX_CONCURRENT_RUNS_PER_USER: "1" }));
});
afterAll(async () => {
  await sidecar?.close();
  await model?.close();
});

describe("request validation", () => {
  it.each([
    ["malformed JSON", "{not json", 400, "invalid_json", null],
    ["no messages", { model: "open-persona/build" }, 400, "invalid_request", "messages"],
    ["empty messages", { model: "open-persona/build", messages: [] }, 400, "invalid_request", "messages"],
    ["bad role", { model: "open-persona/build", messages: [{ role: "wizard", content: "x" }] }, 400, "invalid_request", "messages[0].role"],
    ["stream not boolean", { model: "open-persona/build", stream: "yes", messages: [{ role: "user", content: "x" }] }, 400, "invalid_request", "stream"],
    ["no user message", { model: "open-persona/build", messages: [{ role: "system", content: "x" }] }, 400, "invalid_request", "messages"],
    ["unknown part type", { model: "open-persona/build", messages: [{ role: "user", content: [{ type: "video", x: 1 }] }] }, 400, "unsupported_content", "messages"],
    ["unknown model", { model: "gpt-4o", messages: [{ role: "user", content: "x" }] }, 404, "model_not_found", "model"],
  ])("%s → %s", async (_name, body, status, code, param) => {
    const res = await post(sidecar.url, body);
    expect(res.status).toBe(status);
    const json = await res.json();
    expectErrorShape(json);
    expect(json.error.code).toBe(code);
    expect(json.error.param).toBe(param);
  });

  it("oversized body → 413", async () => {
    const res = await post(sidecar.url, { model: "open-persona/build", messages: [{ role: "user", content: "x".repeat(10_000) }] });
    expect(res.status).toBe(413);
    expectErrorShape(await res.json());
  });

  it("unknown route → 404 in the same shape", async () => {
    const res = await fetch(`${sidecar.url}/v1/embeddings`, { method: "POST" });
    expect(res.status).toBe(404);
    expectErrorShape(await res.json());
  });

  it("attachments reach the agent as file parts", async () => {
    const png = "data:image/png;base64,iVBORw0KGgoAAAANSUhEUgAAAAEAAAABCAYAAAAfFcSJAAAADUlEQVR42mNk+M9QDwADhgGAWjR9awAAAABJRU5ErkJggg==";
    const res = await post(sidecar.url, {
      model: "open-persona/build",
      messages: [{ role: "user", content: [{ type: "text", text: say.text("seen") }, { type: "image_url", image_url: { url: png } }] }],
    }, { "X-Session-Id": randomUUID() });
    expect(res.status).toBe(200);
    const req = model.requests.at(-1)!;
    const user = req.body.messages.findLast((m) => m.role === "user")!;
    // opencode hands images to the model as image parts.
    expect(JSON.stringify(user.content)).toContain("data:image/png;base64");
  });
});

describe("per-user concurrency cap", () => {
  it("answers 429 while the user's slot is busy, and frees it afterwards", async () => {
    const slow = post(sidecar.url, { model: "open-persona/build", stream: true, messages: [{ role: "user", content: say.slow(10, 100) }] }, { "X-Session-Id": randomUUID() });
    const first = await slow;
    const reader = readSse(first);
    await new Promise((r) => setTimeout(r, 300));
    const second = await post(sidecar.url, { model: "open-persona/build", messages: [{ role: "user", content: "x" }] }, { "X-Session-Id": randomUUID() });
    expect(second.status).toBe(429);
    expect((await second.json()).error).toMatchObject({ type: "rate_limit_error", code: "concurrency_limit" });
    await reader;
    const third = await post(sidecar.url, { model: "open-persona/build", messages: [{ role: "user", content: say.text("free again") }] }, { "X-Session-Id": randomUUID() });
    expect(third.status).toBe(200);
  });
});

describe("runner failures (shared mode)", () => {
  it("503 when the runner is unreachable, and /readyz says so", async () => {
    const port = await new Promise<number>((resolve) => {
      const s = net.createServer().listen(0, "127.0.0.1", () => {
        const p = (s.address() as net.AddressInfo).port;
        s.close(() => resolve(p));
      });
    });
    const down = await startSidecar({
      ...scriptedEnv(model.baseURL),
      RUNNER_MODE: "shared",
      OPENCODE_BASE_URL: `http://127.0.0.1:${port}`,
      RUNNER_START_TIMEOUT_MS: "1500",
    });
    try {
      const res = await post(down.url, { model: "open-persona/build", messages: [{ role: "user", content: "hi" }] });
      expect(res.status).toBe(503);
      expect((await res.json()).error.message).toMatch(/runner/i);
      const ready = await fetch(`${down.url}/readyz`);
      expect(ready.status).toBe(503);
      expect((await fetch(`${down.url}/healthz`)).status).toBe(200);
    } finally {
      await down.close();
    }
  });

  it("502 when the runner answers with a server error", async () => {
    // A server that is healthy and streams events but fails every session call.
    const broken = await startBrokenRunner({ contentType: "application/json", body: '{"name":"UnknownError"}' });
    const root = tempDir();
    const bad = await startSidecar({
      WORKSPACE_ROOT: `${root}/w`,
      STATE_ROOT: `${root}/s`,
      RUNNER_MODE: "shared",
      OPENCODE_BASE_URL: broken.url,
    });
    try {
      const res = await post(bad.url, { model: "open-persona/build", messages: [{ role: "user", content: "hi" }] });
      expect(res.status).toBe(502);
      expect((await res.json()).error.code).toBe("runner_bad_status");
    } finally {
      await bad.close();
      broken.close();
    }
  });
});
