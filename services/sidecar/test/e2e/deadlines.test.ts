/**
 * Every failure of the model or the agent ends the turn fast and clearly: a stalled model or
 * tool (idle deadline), a turn that runs too long (turn deadline), a provider that keeps
 * failing (429 with and without Retry-After, 500, 503, a refused connection), and a first run
 * with no model configured. Each time the chat's lock and the user's slot are freed.
 */
import { randomUUID } from "node:crypto";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { freePort } from "../../src/runners/free-port.js";
import { say, startScriptedModel, type ScriptedModel } from "../fixtures/scripted-model.js";
import { readSse, scriptedEnv, startSidecar, waitFor, type InProcessSidecar } from "../helpers/harness.js";

let model: ScriptedModel;
let sidecar: InProcessSidecar;

beforeAll(async () => {
  model = await startScriptedModel();
  sidecar = await startSidecar(
    scriptedEnv(model.baseURL, {
      TURN_IDLE_TIMEOUT_MS: "2500",
      TURN_MAX_MS: "9000",
      AGENT_MAX_RETRIES: "2",
      // Keep-alives flow all through a stall: they must not count as the agent's activity.
      SSE_KEEPALIVE_MS: "300",
      MAX_CONCURRENT_RUNS_PER_USER: "1",
    }),
  );
  // The user's first turn starts their opencode, whose first prompt may go quiet for longer
  // than this suite's 2.5 s idle deadline on a loaded machine (a 504 then): paid here, so
  // that the deadlines below measure the model alone.
  let warm = 0;
  for (let i = 0; i < 3 && warm !== 200; i++) warm = (await ask(sidecar.url, say.text("warm"), { stream: false })).status;
  expect(warm).toBe(200);
});
afterAll(async () => {
  await sidecar?.close();
  await model?.close();
});

interface Streamed {
  text: string;
  statuses: string[];
  error?: { message: string; type: string; code: string; param: null };
  done: boolean;
  keepAlives: number;
  ms: number;
}

async function ask(base: string, content: string, opts: { stream: boolean; chat?: string }): Promise<Response> {
  return fetch(`${base}/v1/chat/completions`, {
    method: "POST",
    headers: { "content-type": "application/json", "x-session-id": opts.chat ?? randomUUID() },
    body: JSON.stringify({ model: "open-persona/build", stream: opts.stream, messages: [{ role: "user", content }] }),
  });
}

async function stream(base: string, content: string, chat?: string): Promise<Streamed> {
  const started = Date.now();
  const res = await ask(base, content, { stream: true, chat });
  expect(res.status).toBe(200);
  const events = await readSse(res);
  const out: Streamed = { text: "", statuses: [], done: events.at(-1)?.data === "[DONE]", keepAlives: 0, ms: Date.now() - started };
  for (const e of events) {
    if (e.comment === "keep-alive") out.keepAlives++;
    if (!e.data || e.data === "[DONE]") continue;
    const json = JSON.parse(e.data);
    if (json.error) out.error = json.error;
    if (json.event?.type === "status") out.statuses.push(json.event.data.description);
    out.text += json.choices?.[0]?.delta?.content ?? "";
  }
  return out;
}

/** The scripted model's requests for one script (a retry is a second request). */
const callsFor = (m: ScriptedModel, marker: string) => m.requests.filter((r) => r.lastUserText.includes(marker)).length;

describe("deadlines", () => {
  it("ends a stream whose model stalls mid-reply with agent_timeout, aborts the model call, and frees lock and slot", async () => {
    const chat = randomUUID();
    const r = await stream(sidecar.url, say.stall("thinking about it "), chat);
    expect(r.text).toContain("thinking about it");
    expect(r.error).toMatchObject({ code: "agent_timeout", type: "agent_error" });
    expect(r.error!.message).toContain("TURN_IDLE_TIMEOUT_MS");
    expect(r.done).toBe(true);
    // Keep-alives were sent while the model was silent, and did not keep the turn alive.
    expect(r.keepAlives).toBeGreaterThan(2);
    // opencode was told to stop: the stalled request to the model is closed.
    await waitFor(() => model.open() === 0, 10_000, "the stalled model request to be closed");
    // The chat's lock and the user's only slot are free: the same chat answers at once.
    const next = await stream(sidecar.url, say.text("back again"), chat);
    expect(next.error).toBeUndefined();
    expect(next.text).toBe("back again");
  });

  it("answers a non-streaming client 504 agent_timeout when the model stalls", async () => {
    const res = await ask(sidecar.url, say.stall(), { stream: false });
    expect(res.status).toBe(504);
    const body = await res.json();
    expect(body.error).toMatchObject({ code: "agent_timeout", type: "agent_error", param: null });
  });

  it("caps a turn's total time (TURN_MAX_MS) even while tokens keep coming", async () => {
    // 120 tokens 150 ms apart: never idle for 2.5 s, but 18 s in all (the cap leaves room for a
    // slow first token on a loaded machine).
    const r = await stream(sidecar.url, say.slow(120, 150));
    expect(r.error).toMatchObject({ code: "agent_timeout" });
    expect(r.error!.message).toContain("TURN_MAX_MS");
    expect(r.text.length).toBeGreaterThan(0);
    expect(r.text.length).toBeLessThan("tok ".repeat(120).length);
    expect(r.done).toBe(true);
  });
});

describe("a failing model provider (AGENT_MAX_RETRIES=2)", () => {
  // Deadlines far off: opencode's own backoff between retries (2 s, then 4 s without
  // Retry-After) must not race the idle deadline of the suite above on a loaded machine.
  let sidecar: InProcessSidecar;
  beforeAll(async () => {
    sidecar = await startSidecar(
      scriptedEnv(model.baseURL, { TURN_IDLE_TIMEOUT_MS: "60000", TURN_MAX_MS: "120000", AGENT_MAX_RETRIES: "2" }),
    );
  });
  afterAll(async () => {
    await sidecar?.close();
  });

  it("429 with Retry-After → HTTP 429 rate_limit_exceeded with Retry-After, naming provider and model", async () => {
    const marker = `rl-${randomUUID()}`;
    const res = await ask(sidecar.url, `${marker} ${say.fail(429, "Rate limit reached for requests", 1)}`, { stream: false });
    expect(res.status).toBe(429);
    expect(res.headers.get("retry-after")).toBe("1");
    const body = await res.json();
    expect(body.error).toMatchObject({ code: "rate_limit_exceeded", type: "rate_limit_error" });
    expect(body.error.message).toContain("scripted/m1");
    expect(body.error.message).toContain("Rate limit reached for requests");
    // Given up after the second failure, not opencode's five retries (~65 s).
    expect(callsFor(model, marker)).toBe(2);
  });

  it("429 without Retry-After, streaming → status line, then in-band rate_limit_exceeded", async () => {
    const marker = `rl-${randomUUID()}`;
    const r = await stream(sidecar.url, `${marker} ${say.fail(429, "Too Many Requests")}`);
    expect(r.statuses.some((s) => /^scripted rate limited, retrying in \d+ s$/.test(s))).toBe(true);
    expect(r.error).toMatchObject({ code: "rate_limit_exceeded", type: "rate_limit_error" });
    expect(r.error!.message).toContain("scripted/m1");
    expect(r.done).toBe(true);
    expect(callsFor(model, marker)).toBe(2);
  });

  it.each([
    [500, undefined, "internal failure"],
    [503, 1, "overloaded, come back later"],
  ])("HTTP %s (Retry-After %s) → provider_error with the provider's message", async (status, retryAfter, message) => {
    const marker = `p-${randomUUID()}`;
    const r = await stream(sidecar.url, `${marker} ${say.fail(status, message, retryAfter)}`);
    const wait = retryAfter === undefined ? "\\d+" : String(retryAfter);
    expect(r.statuses).toContainEqual(expect.stringMatching(new RegExp(`^scripted failed \\(${message}\\), retrying in ${wait} s$`)));
    expect(r.error).toMatchObject({ code: "provider_error", type: "agent_error" });
    expect(r.error!.message).toContain(message);
    expect(r.error!.message).toContain("scripted/m1");
    expect(callsFor(model, marker)).toBe(2);

    const res = await ask(sidecar.url, `${marker}-sync ${say.fail(status, message, retryAfter)}`, { stream: false });
    expect(res.status).toBe(502);
    expect((await res.json()).error.code).toBe("provider_error");
  });

  it("logs at boot which model opencode uses and that its provider answers", () => {
    expect(sidecar.logs.some((l) => l.includes('"model provider answers"') && l.includes("scripted/m1"))).toBe(true);
  });
});

describe("a provider that refuses connections", () => {
  let refused: InProcessSidecar;
  let url: string;
  beforeAll(async () => {
    // A port nobody listens on.
    url = `http://127.0.0.1:${await freePort()}/v1`;
    refused = await startSidecar(scriptedEnv(url, { AGENT_MAX_RETRIES: "2" }));
  });
  afterAll(async () => refused?.close());

  it('says "cannot reach <provider> at <url>" while retrying, then fails with provider_unreachable', async () => {
    const r = await stream(refused.url, say.text("never"));
    expect(r.statuses).toContainEqual(expect.stringMatching(new RegExp(`^cannot reach scripted at ${url.replace(/[./]/g, "\\$&")}, retrying in \\d+ s$`)));
    expect(r.error).toMatchObject({ code: "provider_unreachable" });
    expect(r.error!.message).toContain(url);
    expect(r.error!.message).toContain("scripted/m1");
    expect(r.done).toBe(true);
    // The boot check saw it too.
    expect(refused.logs.some((l) => l.includes("model provider does not answer"))).toBe(true);
  });
});

describe("first run with no model configured", () => {
  let bare: InProcessSidecar;
  beforeAll(async () => {
    bare = await startSidecar(scriptedEnv("http://unused.invalid/v1", { OPENCODE_CONFIG_CONTENT: "{}" }));
  });
  afterAll(async () => bare?.close());

  it("fails fast naming the model opencode tried and how to configure one", async () => {
    const started = Date.now();
    const res = await ask(bare.url, "Write hello.py that prints hi, then run it", { stream: false });
    const ms = Date.now() - started;
    expect(res.status).toBeGreaterThanOrEqual(500);
    const body = await res.json();
    // opencode falls back to its own provider (not reachable offline), and we say so.
    expect(body.error.code).toBe("provider_unreachable");
    expect(body.error.message).toMatch(/model opencode\/\S+/);
    expect(body.error.message).toContain("No model is configured");
    expect(body.error.message).toContain("Choosing a model");
    // Two failed calls, not opencode's five retries (~65 s); the time is measured by the bench.
    expect(ms).toBeLessThan(30_000);
    expect(bare.logs.some((l) => l.includes("no model configured"))).toBe(true);
  });
});
