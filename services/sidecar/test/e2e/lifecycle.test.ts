/**
 * The local runner's lifecycle (one opencode per user): sessions survive a sidecar restart,
 * no opencode process outlives the sidecar however it ends, a user's process that dies (mid-
 * stream or idle) is replaced on the next request, an idle user's process is stopped after
 * RUNNER_IDLE_TIMEOUT (never during a turn) and one that grew too big is recycled between
 * turns, and a client that disconnects aborts the run.
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

const GATEWAY_KEY = "lifecycle-gateway-key";

/** One turn of `chatId` (as `user` through the gateway key when given); the reply counts the chat's turns. */
async function askCount(url: string, chatId: string, user?: string) {
  const sdk = new OpenAI({ baseURL: `${url}/v1`, apiKey: user ? GATEWAY_KEY : "x" });
  const r = await sdk.chat.completions.create(
    { model: "open-persona/build", messages: [{ role: "user", content: say.countTurns() }] },
    { headers: { "X-Session-Id": chatId, ...(user ? { "X-OpenWebUI-User-Id": user } : {}) } },
  );
  return r.choices[0]!.message.content;
}

/** An SSE response read as it arrives: `seen` grows with each `data:` payload. */
function liveSse(res: Response): { seen: string[]; done: ReturnType<typeof readSse> } {
  const [mine, theirs] = res.body!.tee();
  const seen: string[] = [];
  void (async () => {
    const { EventSourceParserStream } = await import("eventsource-parser/stream");
    for await (const m of mine.pipeThrough(new TextDecoderStream()).pipeThrough(new EventSourceParserStream())) seen.push(m.data);
  })();
  return { seen, done: readSse(new Response(theirs)) };
}

describe("sidecar process (built dist/main.js)", () => {
  it("keeps a chat's context across a restart and leaves no opencode behind on SIGTERM", async () => {
    const env = scriptedEnv(model.baseURL, { SIDECAR_API_KEYS: GATEWAY_KEY });
    const chatId = randomUUID();
    const first = await spawnSidecar(env);
    // Nothing runs before a user asks; then one process per user.
    expect(opencodePids(first.proc.pid!)).toHaveLength(0);
    expect(await askCount(first.url, chatId, "alice")).toBe("turns=1");
    expect(await askCount(first.url, randomUUID(), "bob")).toBe("turns=1");
    const runners = opencodePids(first.proc.pid!);
    expect(runners).toHaveLength(2);
    expect(await first.stop("SIGTERM")).toBe(0);
    await waitFor(() => runners.every((p) => !alive(p)), 10_000, "both opencode processes to exit");

    const second = await spawnSidecar(env);
    try {
      expect(await askCount(second.url, chatId, "alice")).toBe("turns=2");
    } finally {
      await second.stop("SIGINT");
    }
  });

  it("takes every user's opencode down with it when killed with SIGKILL", async () => {
    const sc = await spawnSidecar(scriptedEnv(model.baseURL, { SIDECAR_API_KEYS: GATEWAY_KEY }));
    await Promise.all(["alice", "bob"].map((u) => askCount(sc.url, randomUUID(), u)));
    const runners = opencodePids(sc.proc.pid!);
    expect(runners).toHaveLength(2);
    await sc.stop("SIGKILL");
    await waitFor(() => runners.every((p) => !alive(p)), 15_000, "orphaned opencode processes to exit");
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
    const stream = liveSse(res);
    const [victim] = opencodePids(process.pid);
    expect(victim).toBeDefined();
    // Killed once the client has text: on a busy machine the model's clock says little.
    await waitFor(() => stream.seen.some((d) => d.includes('"content":"tok')), 15_000, "streamed text");
    process.kill(victim!, "SIGKILL");

    const got = await stream.done;
    const payloads = got.filter((e) => e.data && e.data !== "[DONE]").map((e) => JSON.parse(e.data!));
    expect(payloads.some((p) => p.choices?.[0]?.delta?.content)).toBe(true);
    expect(payloads.at(-1).error.message).toMatch(/lost the connection/i);
    expect(got.at(-1)!.data).toBe("[DONE]");

    // The next request started a new opencode for the user; the session survived in its database.
    expect(await askCount(sidecar.url, chatId)).toMatch(/^turns=\d$/);
    const [replacement] = opencodePids(process.pid);
    expect(replacement).toBeDefined();
    expect(replacement).not.toBe(victim);
  });

  it("replaces a user's opencode that died while idle on the next request, same session", async () => {
    const chatId = randomUUID();
    expect(await askCount(sidecar.url, chatId)).toBe("turns=1");
    const [victim] = opencodePids(process.pid);
    expect(victim).toBeDefined();
    const exits = () => sidecar.logs.filter((l) => l.includes("user opencode exited")).length;
    const before = exits();
    process.kill(victim!, "SIGKILL");
    await waitFor(() => exits() > before, 10_000, "the runner to notice the exit");
    expect(await askCount(sidecar.url, chatId)).toBe("turns=2");
    const now = opencodePids(process.pid);
    expect(now).toHaveLength(1);
    expect(now[0]).not.toBe(victim);
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

describe("idle users and memory", () => {
  it("stops an idle user's opencode after RUNNER_IDLE_TIMEOUT, never during a turn; the chat goes on", async () => {
    const sc = await startSidecar(scriptedEnv(model.baseURL, { RUNNER_IDLE_TIMEOUT: "1" }));
    try {
      const chatId = randomUUID();
      expect(await askCount(sc.url, chatId)).toBe("turns=1");
      // A turn three times longer than the timeout keeps its process.
      const res = await fetch(`${sc.url}/v1/chat/completions`, {
        method: "POST",
        headers: { "content-type": "application/json", "X-Session-Id": randomUUID() },
        body: JSON.stringify({ model: "open-persona/build", stream: true, messages: [{ role: "user", content: say.slow(30, 100) }] }),
      });
      const [pid] = opencodePids(process.pid);
      expect(pid).toBeDefined();
      const got = await readSse(res);
      const payloads = got.filter((e) => e.data && e.data !== "[DONE]").map((e) => JSON.parse(e.data!));
      expect(payloads.some((p) => p.error)).toBe(false);
      expect(payloads.map((p) => p.choices?.[0]?.delta?.content ?? "").join("")).toBe("tok ".repeat(30));
      expect(sc.logs.some((l) => l.includes("stopping an idle user's opencode"))).toBe(false);

      // Idle now: stopped within the timeout plus one reaper round.
      await waitFor(() => !alive(pid!), 10_000, "the idle opencode to be stopped");
      expect(sc.logs.some((l) => l.includes("stopping an idle user's opencode"))).toBe(true);
      expect(opencodePids(process.pid)).toHaveLength(0);
      expect((await fetch(`${sc.url}/readyz`)).status).toBe(200);

      expect(await askCount(sc.url, chatId)).toBe("turns=2");
      const [again] = opencodePids(process.pid);
      expect(again).toBeDefined();
      expect(again).not.toBe(pid);
    } finally {
      await sc.close();
    }
  });

  it("recycles an idle opencode that grew past LOCAL_RUNNER_MAX_RSS, keeping the chat's session", async () => {
    const sc = await startSidecar(scriptedEnv(model.baseURL, { LOCAL_RUNNER_MAX_RSS: "64m", LOCAL_RUNNER_RECYCLE_CHECK_MS: "300" }));
    try {
      const chatId = randomUUID();
      // While a turn runs it is never recycled, however big it is (opencode is far above 64m).
      const res = await fetch(`${sc.url}/v1/chat/completions`, {
        method: "POST",
        headers: { "content-type": "application/json", "X-Session-Id": chatId },
        body: JSON.stringify({ model: "open-persona/build", stream: true, messages: [{ role: "user", content: say.slow(15, 100) }] }),
      });
      // Taken while the turn streams: once it has ended, the process may be recycled at once.
      const [before] = opencodePids(process.pid);
      expect(before).toBeDefined();
      const got = await readSse(res);
      const payloads = got.filter((e) => e.data && e.data !== "[DONE]").map((e) => JSON.parse(e.data!));
      expect(payloads.some((p) => p.error)).toBe(false);
      expect(payloads.map((p) => p.choices?.[0]?.delta?.content ?? "").join("")).toBe("tok ".repeat(15));
      await waitFor(() => sc.logs.some((l) => l.includes("recycling a user's opencode")), 15_000, "a recycle");
      await waitFor(() => !alive(before!), 15_000, "the bloated opencode to exit");
      // The same session (no history is resent: a new one would count 1), in a new process
      // (the old one is gone). That one may be recycled in turn as soon as the turn ends (it is
      // above 64m too), so it is counted from the log rather than looked for.
      expect(await askCount(sc.url, chatId)).toBe("turns=2");
      expect(sc.logs.filter((l) => l.includes('"user opencode spawned"')).length).toBe(2);
      expect(opencodePids(process.pid)).not.toContain(before);
    } finally {
      await sc.close();
    }
  });
});
