/**
 * Turns end cleanly when the sidecar stops or the client leaves early:
 * - SIGTERM lets running streams finish (SHUTDOWN_GRACE_MS), then ends the rest with an
 *   in-band error and `[DONE]` — never a stream cut mid-token;
 * - a client that hangs up while its turn is being prepared gets no agent run at all.
 */
import { randomUUID } from "node:crypto";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { say, startScriptedModel, type ScriptedModel } from "../fixtures/scripted-model.js";
import { alive, opencodePids, scriptedEnv, spawnSidecar, startSidecar, waitFor, type InProcessSidecar } from "../helpers/harness.js";

let model: ScriptedModel;

beforeAll(async () => {
  model = await startScriptedModel();
});
afterAll(async () => {
  await model?.close();
});

interface Progress {
  text: string;
  error?: { code: string; message: string };
  finish?: string;
  done: boolean;
}

/** Streams one turn, calling `onFirstText` once the first text arrives. */
async function streamWith(url: string, content: string, onFirstText: () => void): Promise<Progress> {
  const res = await fetch(`${url}/v1/chat/completions`, {
    method: "POST",
    headers: { "content-type": "application/json", "x-session-id": randomUUID() },
    body: JSON.stringify({ model: "open-persona/build", stream: true, messages: [{ role: "user", content }] }),
  });
  expect(res.status).toBe(200);
  const { EventSourceParserStream } = await import("eventsource-parser/stream");
  const out: Progress = { text: "", done: false };
  const events = res.body!.pipeThrough(new TextDecoderStream()).pipeThrough(new EventSourceParserStream());
  for await (const m of events) {
    if (m.data === "[DONE]") {
      out.done = true;
      continue;
    }
    const json = JSON.parse(m.data);
    if (json.error) out.error = json.error;
    const c = json.choices?.[0];
    if (c?.delta?.content) {
      if (!out.text) onFirstText();
      out.text += c.delta.content;
    }
    if (c?.finish_reason) out.finish = c.finish_reason;
  }
  return out;
}

describe("SIGTERM", () => {
  it("stops accepting at once but lets a running stream finish whole", async () => {
    const sc = await spawnSidecar(scriptedEnv(model.baseURL, { SHUTDOWN_GRACE_MS: "30000" }));
    let exited: Promise<number | null> | undefined;
    const r = await streamWith(sc.url, say.slow(20, 150), () => {
      exited = sc.stop("SIGTERM");
    });
    expect(r.error).toBeUndefined();
    expect(r.text).toBe("tok ".repeat(20));
    expect(r.finish).toBe("stop");
    expect(r.done).toBe(true);
    // New connections were refused while the stream finished.
    expect(await exited).toBe(0);
    await expect(fetch(`${sc.url}/healthz`)).rejects.toThrow();
    expect(sc.logs.some((l) => l.includes("letting running turns finish"))).toBe(true);
  });

  it("after SHUTDOWN_GRACE_MS ends a stream still running with an in-band error and [DONE], and leaves no opencode", async () => {
    const sc = await spawnSidecar(scriptedEnv(model.baseURL, { SHUTDOWN_GRACE_MS: "1000" }));
    let exited: Promise<number | null> | undefined;
    const started = Date.now();
    const r = await streamWith(sc.url, say.stall("working on it "), () => {
      exited = sc.stop("SIGTERM");
    });
    expect(r.text).toBe("working on it ");
    expect(r.error).toMatchObject({ code: "shutting_down" });
    expect(r.error!.message).toContain("shutting down");
    expect(r.done).toBe(true);
    expect(await exited).toBe(0);
    // Well before the model would have answered (never) or any idle deadline (5 min).
    expect(Date.now() - started).toBeLessThan(30_000);
    expect(opencodePids(sc.proc.pid!).filter(alive)).toEqual([]);
    expect(sc.logs.some((l) => l.includes("stopped turns still running after the grace period"))).toBe(true);
  });
});

describe("a client that leaves while its turn is prepared", () => {
  let sidecar: InProcessSidecar;
  beforeAll(async () => {
    sidecar = await startSidecar(scriptedEnv(model.baseURL, { SIDECAR_API_KEYS: "gw-key", MAX_CONCURRENT_RUNS_PER_USER: "1" }));
  });
  afterAll(async () => sidecar?.close());

  it("gets no agent run, and its slot is free again", async () => {
    // A new user: preparing starts that user's opencode (a second or more), like a cold start.
    const user = `leaver-${randomUUID()}`;
    const marker = `never-run-${randomUUID()}`;
    const headers = { "content-type": "application/json", authorization: "Bearer gw-key", "x-openwebui-user-id": user };
    const ctl = new AbortController();
    const pending = fetch(`${sidecar.url}/v1/chat/completions`, {
      method: "POST",
      headers: { ...headers, "x-session-id": randomUUID() },
      body: JSON.stringify({ model: "open-persona/build", stream: true, messages: [{ role: "user", content: `${marker} ${say.text("hi")}` }] }),
      signal: ctl.signal,
    }).catch(() => undefined);
    await new Promise((r) => setTimeout(r, 150));
    ctl.abort();
    await pending;
    // The runner start goes on; once it is ready, nothing may be prompted for the gone client.
    await waitFor(() => sidecar.logs.some((l) => l.includes("client_closed") || l.includes('"turn started"')), 60_000, "the turn's fate");
    await new Promise((r) => setTimeout(r, 1500));
    expect(sidecar.logs.some((l) => l.includes('"turn started"'))).toBe(false);
    expect(model.requests.some((r) => r.lastUserText.includes(marker))).toBe(false);

    // The user's only slot was released: the next request runs.
    const res = await fetch(`${sidecar.url}/v1/chat/completions`, {
      method: "POST",
      headers: { ...headers, "x-session-id": randomUUID() },
      body: JSON.stringify({ model: "open-persona/build", messages: [{ role: "user", content: say.text("still here") }] }),
    });
    expect(res.status).toBe(200);
    expect((await res.json()).choices[0].message.content).toBe("still here");
  });
});
