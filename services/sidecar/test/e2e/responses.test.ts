/**
 * `POST /v1/responses` end to end with the official `openai` client (its Responses API and
 * stream helper) → sidecar → real opencode → the scripted model.
 */
import { randomUUID } from "node:crypto";
import OpenAI from "openai";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { say, script, startScriptedModel, type ScriptedModel } from "../fixtures/scripted-model.js";
import { readSse, scriptedEnv, spawnSidecar, startSidecar, type InProcessSidecar } from "../helpers/harness.js";

let model: ScriptedModel;
let sidecar: InProcessSidecar;
let client: OpenAI;

beforeAll(async () => {
  model = await startScriptedModel();
  sidecar = await startSidecar(scriptedEnv(model.baseURL));
  client = new OpenAI({ baseURL: `${sidecar.url}/v1`, apiKey: "unused-on-loopback" });
});
afterAll(async () => {
  await sidecar?.close();
  await model?.close();
});

describe("responses.create", () => {
  it("answers whole: a message with output_text, the tool run as an mcp_call item, real usage", async () => {
    const r = await client.responses.create({ model: "open-persona/build", input: say.write("r.txt", "from responses", "wrote it") });
    expect(r.object).toBe("response");
    expect(r.status).toBe("completed");
    expect(r.output_text).toBe("wrote it");
    const call = r.output.find((i) => i.type === "mcp_call");
    expect(call).toMatchObject({ type: "mcp_call", name: "write", status: "completed", server_label: "opencode" });
    expect(JSON.parse((call as { arguments: string }).arguments)).toMatchObject({ content: "from responses" });
    expect(r.output.some((i) => i.type === ("function_call" as string))).toBe(false);
    expect(r.usage!.input_tokens).toBeGreaterThan(0);
    expect(r.usage!.total_tokens).toBe(r.usage!.input_tokens + r.usage!.output_tokens);
  });

  it("streams the events the SDK's helper expects, in order, with sequence numbers; reasoning as a reasoning item", async () => {
    const stream = client.responses.stream({ model: "open-persona/build", input: script({ reasoning: "let me think", text: "streamed answer" }) });
    const types: string[] = [];
    const seqs: number[] = [];
    let text = "";
    for await (const e of stream) {
      types.push(e.type);
      seqs.push(e.sequence_number);
      if (e.type === "response.output_text.delta") text += e.delta;
    }
    const final = await stream.finalResponse();
    expect(text).toBe("streamed answer");
    expect(final.output_text).toBe("streamed answer");
    expect(seqs).toEqual(seqs.map((_, i) => i));
    expect(types[0]).toBe("response.created");
    expect(types.at(-1)).toBe("response.completed");
    expect(types).toContain("response.reasoning_summary_text.delta");
    expect(types.indexOf("response.content_part.added")).toBeLessThan(types.indexOf("response.output_text.delta"));
    const reasoning = final.output.find((i) => i.type === "reasoning") as { summary: Array<{ text: string }> };
    expect(reasoning.summary[0]!.text).toBe("let me think");
  });

  it("continues the same agent session with previous_response_id, and with conversation", async () => {
    const first = await client.responses.create({ model: "open-persona/build", input: say.countTurns() });
    expect(first.output_text).toBe("turns=1");
    const second = await client.responses.create({ model: "open-persona/build", input: say.countTurns(), previous_response_id: first.id });
    expect(second.output_text).toBe("turns=2");
    const conversation = `conv-${randomUUID()}`;
    expect((await client.responses.create({ model: "open-persona/build", input: say.countTurns(), conversation })).output_text).toBe("turns=1");
    expect((await client.responses.create({ model: "open-persona/build", input: say.countTurns(), conversation })).output_text).toBe("turns=2");
  });

  it("refuses an unknown previous_response_id (404) and a malformed input (400) in the API's error shape", async () => {
    const missing = await client.responses.create({ model: "open-persona/build", input: "hi", previous_response_id: "resp_nope" }).catch((e: unknown) => e);
    expect(missing).toBeInstanceOf(OpenAI.NotFoundError);
    expect((missing as InstanceType<typeof OpenAI.NotFoundError>).code).toBe("previous_response_not_found");
    const bad = await client.responses.create({ model: "open-persona/build", input: [{ role: "user", content: [{ type: "input_image" } as never] }] }).catch((e: unknown) => e);
    expect(bad).toBeInstanceOf(OpenAI.BadRequestError);
  });
});

describe("background responses", () => {
  const waitDone = async (id: string) => {
    for (let i = 0; i < 200; i++) {
      const r = await client.responses.retrieve(id);
      if (r.status !== "in_progress" && r.status !== "queued") return r;
      await new Promise((r) => setTimeout(r, 100));
    }
    throw new Error(`response ${id} did not end`);
  };

  it("runs detached: answers at once, then GET shows its state and output", async () => {
    const started = await client.responses.create({ model: "open-persona/build", input: say.slow(10, 100), background: true });
    expect(started.status).toBe("in_progress");
    expect(started.background).toBe(true);
    const done = await waitDone(started.id);
    expect(done.status).toBe("completed");
    expect(done.output_text).toBe("tok ".repeat(10));
  });

  it("resumes its event stream from any sequence number, live and after the end", async () => {
    const started = await client.responses.create({ model: "open-persona/build", input: say.slow(8, 150), background: true });
    const live = await client.responses.retrieve(started.id, { stream: true, starting_after: 1 });
    const seen: number[] = [];
    let text = "";
    for await (const e of live) {
      seen.push(e.sequence_number);
      if (e.type === "response.output_text.delta") text += e.delta;
    }
    expect(seen[0]).toBe(2);
    expect(seen).toEqual(seen.map((_, i) => i + 2));
    expect(text).toBe("tok ".repeat(8));
    // Over: the whole log is still there, from any point.
    const again = await client.responses.retrieve(started.id, { stream: true, starting_after: seen.at(-3)! });
    const tail: string[] = [];
    for await (const e of again) tail.push(e.type);
    expect(tail.at(-1)).toBe("response.completed");
    expect(tail).toHaveLength(2);
  });

  it("is cancelled on request: the agent's model call ends and the state says so", async () => {
    const started = await client.responses.create({ model: "open-persona/build", input: say.slow(200, 100), background: true });
    await new Promise((r) => setTimeout(r, 1500));
    const cancelled = await client.responses.cancel(started.id);
    expect(cancelled.status).toBe("cancelled");
    expect((await client.responses.retrieve(started.id)).status).toBe("cancelled");
    const text = cancelled.output.flatMap((i) => (i.type === "message" ? i.content.map((c) => (c.type === "output_text" ? c.text : "")) : [])).join("");
    expect(text.length).toBeGreaterThan(0);
    expect(text.length).toBeLessThan("tok ".repeat(200).length);
    // The agent's run was aborted in opencode: its model request is closed.
    for (let i = 0; i < 50 && model.open() > 0; i++) await new Promise((r) => setTimeout(r, 100));
    expect(model.open()).toBe(0);
  });

  it("is the caller's own: an unknown id is a 404", async () => {
    const err = await client.responses.retrieve("resp_000000000000000000000000").catch((e: unknown) => e);
    expect(err).toBeInstanceOf(OpenAI.NotFoundError);
  });
});

describe("sessions and failures", () => {
  it("keeps one session for a client that resends its history without ids", async () => {
    const first = `${randomUUID()} ${say.countTurns()}`;
    const r1 = await client.responses.create({ model: "open-persona/build", input: first });
    expect(r1.output_text).toBe("turns=1");
    const r2 = await client.responses.create({
      model: "open-persona/build",
      input: [
        { role: "user", content: first },
        { role: "assistant", content: r1.output_text },
        { role: "user", content: say.countTurns() },
      ],
    });
    expect(r2.output_text).toBe("turns=2");
  });

  it("answers Open WebUI's background tasks outside the chat's session", async () => {
    const conversation = `conv-${randomUUID()}`;
    const ask = (headers: Record<string, string> = {}) =>
      client.responses.create({ model: "open-persona/build", input: say.countTurns(), conversation }, { headers });
    expect((await ask()).output_text).toBe("turns=1");
    expect((await ask({ "X-OpenWebUI-Task": "title_generation" })).output_text).toBe("turns=1");
    expect((await ask()).output_text).toBe("turns=2");
  });

  it("ends a failing turn's stream with an error event and response.failed, which the SDK raises", async () => {
    const res = await fetch(`${sidecar.url}/v1/responses`, {
      method: "POST",
      headers: { "content-type": "application/json" },
      body: JSON.stringify({ model: "open-persona/build", stream: true, input: say.fail(400, "model says no") }),
    });
    const events = (await readSse(res)).filter((e) => e.data).map((e) => JSON.parse(e.data!) as { type: string; error?: { code: string; message: string }; response?: { status: string } });
    expect(events.at(-2)).toMatchObject({ type: "error", error: { message: expect.stringContaining("model says no") } });
    expect(events.at(-1)).toMatchObject({ type: "response.failed", response: { status: "failed" } });
    const viaSdk = await (async () => {
      const s = client.responses.stream({ model: "open-persona/build", input: say.fail(400, "model says no") });
      for await (const _ of s) void _;
      return s.finalResponse();
    })().catch((e: unknown) => e);
    expect(viaSdk).toBeInstanceOf(Error);
  });
});

describe("a background response across a sidecar restart", () => {
  it("keeps a finished response and its events; one cut off by a crash reads as failed, its events so far kept", async () => {
    const env = scriptedEnv(model.baseURL);
    let child = await spawnSidecar(env);
    const sdk = (url: string) => new OpenAI({ baseURL: `${url}/v1`, apiKey: "unused-on-loopback" });
    try {
      const done = await sdk(child.url).responses.create({ model: "open-persona/build", input: say.text("kept"), background: true });
      for (let i = 0; i < 100 && (await sdk(child.url).responses.retrieve(done.id)).status === "in_progress"; i++) await new Promise((r) => setTimeout(r, 100));
      const cut = await sdk(child.url).responses.create({ model: "open-persona/build", input: say.slow(300, 100), background: true });
      await new Promise((r) => setTimeout(r, 2000));
      await child.stop("SIGKILL");
      child = await spawnSidecar(env);
      const c = sdk(child.url);
      expect((await c.responses.retrieve(done.id)).output_text).toBe("kept");
      const types: string[] = [];
      for await (const e of await c.responses.retrieve(done.id, { stream: true })) types.push(e.type);
      expect(types[0]).toBe("response.created");
      expect(types.at(-1)).toBe("response.completed");
      const after = await c.responses.retrieve(cut.id);
      expect(after.status).toBe("failed");
      expect(after.error?.code).toBe("sidecar_restarted");
      let deltas = 0;
      for await (const e of await c.responses.retrieve(cut.id, { stream: true })) if (e.type === "response.output_text.delta") deltas++;
      expect(deltas).toBeGreaterThan(0);
    } finally {
      await child.stop();
    }
  }, 120_000);
});
