/**
 * The local runner's lifecycle: sessions survive a sidecar restart, no opencode process
 * outlives the sidecar however it ends, a runner crash mid-stream ends that stream with an
 * error and the next request recovers, and a client that disconnects aborts the run.
 */
import { randomUUID } from "node:crypto";
import OpenAI from "openai";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { userHash, userSpace } from "../../src/workspace/user-space.js";
import { say, startScriptedModel, type ScriptedModel } from "../fixtures/scripted-model.js";
import {
  alive,
  opencodePids,
  readSse,
  scriptedEnv,
  spawnSidecar,
  startSidecar,
  waitFor,
  type InProcessSidecar,
} from "../helpers/harness.js";

let model: ScriptedModel;

beforeAll(async () => {
  model = await startScriptedModel();
});
afterAll(async () => model?.close());

async function askCount(url: string, chatId: string) {
  const sdk = new OpenAI({ baseURL: `${url}/v1`, apiKey: "x" });
  const r = await sdk.chat.completions.create(
    { model: "open-persona/build", messages: [{ role: "user", content: say.countTurns() }] },
    { headers: { "X-Session-Id": chatId } },
  );
  return r.choices[0]!.message.content;
}

describe("sidecar process (built dist/main.js)", () => {
  it("keeps a chat's context across a restart and leaves no opencode behind on SIGTERM", async () => {
    const env = scriptedEnv(model.baseURL);
    const chatId = randomUUID();
    const first = await spawnSidecar(env);
    expect(await askCount(first.url, chatId)).toBe("turns=1");
    const runners = opencodePids(first.proc.pid!);
    expect(runners).toHaveLength(1);
    expect(await first.stop("SIGTERM")).toBe(0);
    await waitFor(() => !alive(runners[0]!), 10_000, "opencode to exit");

    const second = await spawnSidecar(env);
    try {
      expect(await askCount(second.url, chatId)).toBe("turns=2");
    } finally {
      await second.stop("SIGINT");
    }
  });

  it("takes its opencode down with it when killed with SIGKILL", async () => {
    const sc = await spawnSidecar(scriptedEnv(model.baseURL));
    const runners = opencodePids(sc.proc.pid!);
    expect(runners).toHaveLength(1);
    await sc.stop("SIGKILL");
    await waitFor(() => !alive(runners[0]!), 15_000, "orphaned opencode to exit");
  });
});

describe("runner crash and client disconnect (in process)", () => {
  let sidecar: InProcessSidecar;
  beforeAll(async () => {
    sidecar = await startSidecar(scriptedEnv(model.baseURL));
  });
  afterAll(async () => sidecar?.close());

  it("ends a stream with an error when the runner dies mid-stream; the next request recovers", async () => {
    const chatId = randomUUID();
    expect(await askCount(sidecar.url, chatId)).toBe("turns=1");
    const res = await fetch(`${sidecar.url}/v1/chat/completions`, {
      method: "POST",
      headers: { "content-type": "application/json", "X-Session-Id": chatId },
      body: JSON.stringify({ model: "open-persona/build", stream: true, messages: [{ role: "user", content: say.slow(40, 100) }] }),
    });
    const events = readSse(res);
    const [victim] = opencodePids(process.pid);
    expect(victim).toBeDefined();
    await waitFor(() => model.requests.some((r) => r.lastUserText.includes('"tokens":40') && Date.now() - r.receivedAt > 300), 10_000, "stream to start");
    process.kill(victim!, "SIGKILL");

    const got = await events;
    const payloads = got.filter((e) => e.data && e.data !== "[DONE]").map((e) => JSON.parse(e.data!));
    expect(payloads.some((p) => p.choices?.[0]?.delta?.content)).toBe(true);
    expect(payloads.at(-1).error.message).toMatch(/lost the connection/i);
    expect(got.at(-1)!.data).toBe("[DONE]");

    // The supervisor restarted opencode; the chat's session survived in its database.
    expect(await askCount(sidecar.url, chatId)).toMatch(/^turns=\d$/);
    const [replacement] = opencodePids(process.pid);
    expect(replacement).toBeDefined();
    expect(replacement).not.toBe(victim);
  });

  it("rides out a transient loss of the event stream: the answer arrives whole, without an error", async () => {
    const ep = await sidecar.runner.ensure(userSpace(sidecar.config.workspaceRoot, sidecar.config.stateRoot, userHash("local")));
    const res = await fetch(`${sidecar.url}/v1/chat/completions`, {
      method: "POST",
      headers: { "content-type": "application/json", "X-Session-Id": randomUUID() },
      body: JSON.stringify({ model: "open-persona/build", stream: true, messages: [{ role: "user", content: say.slow(30, 60) }] }),
    });
    const events = readSse(res);
    await waitFor(() => model.requests.some((r) => r.lastUserText.includes('"tokens":30') && Date.now() - r.receivedAt > 400), 10_000, "stream to start");
    ep.events.reconnect();
    const got = await events;
    const payloads = got.filter((e) => e.data && e.data !== "[DONE]").map((e) => JSON.parse(e.data!));
    expect(payloads.some((p) => p.error)).toBe(false);
    expect(payloads.map((p) => p.choices?.[0]?.delta?.content ?? "").join("")).toBe("tok ".repeat(30));
    expect(payloads.some((p) => p.choices?.[0]?.finish_reason === "stop")).toBe(true);
    expect(sidecar.logs.some((l) => l.includes("caught up from the messages API"))).toBe(true);
  });

  it("aborts the agent's run when the client disconnects", async () => {
    const controller = new AbortController();
    const res = await fetch(`${sidecar.url}/v1/chat/completions`, {
      method: "POST",
      headers: { "content-type": "application/json", "X-Session-Id": randomUUID() },
      body: JSON.stringify({ model: "open-persona/build", stream: true, messages: [{ role: "user", content: say.slow(100, 100) }] }),
      signal: controller.signal,
    });
    const reader = res.body!.getReader();
    await reader.read();
    await waitFor(() => model.requests.some((r) => r.lastUserText.includes('"tokens":100')), 10_000, "model call");
    const call = model.requests.find((r) => r.lastUserText.includes('"tokens":100'))!;
    controller.abort();
    // opencode cancelled its provider request: the model saw the connection close early.
    await waitFor(() => call.aborted, 10_000, "model request to be aborted");
    expect(sidecar.logs.some((l) => l.includes('"aborted":true'))).toBe(true);
  });
});

describe("local runner memory", () => {
  it("recycles an idle opencode that grew past LOCAL_RUNNER_MAX_RSS, keeping the chat's session", async () => {
    const sc = await startSidecar(scriptedEnv(model.baseURL, { LOCAL_RUNNER_MAX_RSS: "64m", LOCAL_RUNNER_RECYCLE_CHECK_MS: "300" }));
    try {
      const chatId = randomUUID();
      // While a turn runs it is never recycled, however big it is.
      expect(await askCount(sc.url, chatId)).toBe("turns=1");
      const [before] = opencodePids(process.pid);
      await waitFor(() => sc.logs.some((l) => l.includes("recycling the local opencode runner")), 15_000, "a recycle");
      await waitFor(() => sc.logs.filter((l) => l.includes("local opencode runner ready")).length >= 2, 15_000, "the new opencode");
      expect(await askCount(sc.url, chatId)).toBe("turns=2");
      const after = opencodePids(process.pid);
      expect(after).not.toContain(before);
    } finally {
      await sc.close();
    }
  });
});
