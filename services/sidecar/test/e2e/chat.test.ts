/**
 * The chat API end to end: the official `openai` client → sidecar → real opencode → the
 * scripted model. One sidecar (local runner) for the file; each test uses its own chat.
 */
import fs from "node:fs";
import path from "node:path";
import { randomUUID } from "node:crypto";
import OpenAI from "openai";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { userHash } from "../../src/workspace/user-space.js";
import { say, script, startScriptedModel, type ScriptedModel } from "../fixtures/scripted-model.js";
import { readSse, scriptedEnv, startSidecar, type InProcessSidecar } from "../helpers/harness.js";

let model: ScriptedModel;
let sidecar: InProcessSidecar;
let client: OpenAI;
const LOCAL = userHash("local");

beforeAll(async () => {
  model = await startScriptedModel();
  sidecar = await startSidecar(scriptedEnv(model.baseURL, { SSE_KEEPALIVE_MS: "300" }));
  client = new OpenAI({ baseURL: `${sidecar.url}/v1`, apiKey: "unused-on-loopback" });
});
afterAll(async () => {
  await sidecar?.close();
  await model?.close();
});

const chat = () => ({ "X-Session-Id": randomUUID() });

describe("models", () => {
  it("lists the build and plan agents", async () => {
    const list = await client.models.list();
    expect(list.data.map((m) => m.id)).toEqual(expect.arrayContaining(["open-persona/build", "open-persona/plan"]));
  });
});

describe("streaming", () => {
  it("streams text token by token as the model produces it", async () => {
    const stream = await client.chat.completions.create(
      { model: "open-persona/build", stream: true, messages: [{ role: "user", content: say.slow(10, 150) }] },
      { headers: chat() },
    );
    const arrivals: Array<{ at: number; text: string }> = [];
    let finish: string | null | undefined;
    for await (const chunk of stream) {
      const c = chunk.choices[0];
      if (c?.delta?.content) arrivals.push({ at: Date.now(), text: c.delta.content });
      if (c?.finish_reason) finish = c.finish_reason;
    }
    expect(arrivals.map((a) => a.text).join("")).toBe("tok ".repeat(10));
    expect(arrivals.length).toBeGreaterThanOrEqual(8);
    // Ten tokens 150 ms apart (1350 ms from first to last): the first must arrive long before
    // the last. A buffered replay would show them all at once; the margin is for a loaded
    // machine, where opencode hands over the first token late (measured: 966 ms apart).
    expect(arrivals.at(-1)!.at - arrivals[0]!.at).toBeGreaterThan(600);
    expect(finish).toBe("stop");
  });

  it("sends reasoning as reasoning_content and real usage when asked", async () => {
    const stream = await client.chat.completions.create(
      {
        model: "open-persona/build",
        stream: true,
        stream_options: { include_usage: true },
        messages: [{ role: "user", content: say.reason("let me think ", "the answer") }],
      },
      { headers: chat() },
    );
    let reasoning = "";
    let content = "";
    let usage: OpenAI.CompletionUsage | undefined;
    let finishAt = -1;
    let usageAt = -1;
    let i = 0;
    for await (const chunk of stream) {
      i++;
      const d = chunk.choices[0]?.delta as { content?: string; reasoning_content?: string } | undefined;
      reasoning += d?.reasoning_content ?? "";
      content += d?.content ?? "";
      if (chunk.choices[0]?.finish_reason) finishAt = i;
      if (chunk.usage) {
        usage = chunk.usage;
        usageAt = i;
      }
    }
    expect(reasoning).toBe("let me think ");
    expect(content).toBe("the answer");
    // The scripted model reports prompt_tokens = 100 + messages; opencode passes them on.
    expect(usage!.prompt_tokens).toBeGreaterThan(100);
    expect(usage!.completion_tokens).toBe(7);
    expect(usageAt).toBeGreaterThan(finishAt);
  });

  it("renders tool calls for Open WebUI (its headers) as its details blocks and never as delta.tool_calls", async () => {
    const res = await fetch(`${sidecar.url}/v1/chat/completions`, {
      method: "POST",
      headers: { "content-type": "application/json", "X-OpenWebUI-Chat-Id": randomUUID() },
      body: JSON.stringify({ model: "open-persona/build", stream: true, messages: [{ role: "user", content: say.write("notes/a.txt", "hello world") }] }),
    });
    expect(res.headers.get("content-type")).toContain("text/event-stream");
    const events = await readSse(res);
    const payloads = events.filter((e) => e.data && e.data !== "[DONE]").map((e) => JSON.parse(e.data!));
    expect(events.at(-1)!.data).toBe("[DONE]");
    const content = payloads.map((p) => p.choices?.[0]?.delta?.content ?? "").join("");
    expect(content).toMatch(/<details type="tool_calls" done="true" id="[^"]+" name="write" arguments="[^"]*filePath[^"]*"/);
    expect(content).toContain("<summary>Tool Executed</summary>");
    expect(content).toContain("wrote notes/a.txt");
    expect(payloads.some((p) => p.choices?.[0]?.delta?.tool_calls)).toBe(false);
    const statuses = payloads.filter((p) => p.event?.type === "status").map((p) => p.event.data);
    expect(statuses[0]).toMatchObject({ done: false });
    expect(statuses[0].description).toContain("write");
    expect(statuses.at(-1)).toMatchObject({ done: true });
    // The file landed in the local user's hashed workspace.
    const file = path.join(sidecar.config.workspaceRoot, LOCAL, "notes/a.txt");
    expect(fs.readFileSync(file, "utf8")).toBe("hello world");
  });

  it("shows other clients each tool run as one markdown line, streamed or not, and never Open WebUI's HTML", async () => {
    const stream = await client.chat.completions.create(
      { model: "open-persona/build", stream: true, messages: [{ role: "user", content: say.bash("echo hi") }] },
      { headers: chat() },
    );
    let streamed = "";
    for await (const c of stream) streamed += c.choices[0]?.delta?.content ?? "";
    expect(streamed).toBe("\n\n> ran bash: `echo hi`\n\nran it");
    const whole = await client.chat.completions.create(
      { model: "open-persona/build", messages: [{ role: "user", content: say.write("md.txt", "x") }] },
      { headers: chat() },
    );
    expect(whole.choices[0]!.message.content).toBe("\n\n> ran write: `md.txt`\n\nwrote md.txt");
  });

  it("lets a client choose how tool runs show (X-Persona-Tool-Output), and refuses an unknown choice", async () => {
    const ask = (style: string) =>
      client.chat.completions.create(
        { model: "open-persona/build", messages: [{ role: "user", content: say.bash("echo hi") }] },
        { headers: { ...chat(), "X-Persona-Tool-Output": style } },
      );
    expect((await ask("none")).choices[0]!.message.content).toBe("ran it");
    expect((await ask("details")).choices[0]!.message.content).toContain('<details type="tool_calls"');
    const err = await ask("html").catch((e: unknown) => e);
    expect(err).toBeInstanceOf(OpenAI.BadRequestError);
    expect((err as InstanceType<typeof OpenAI.BadRequestError>).code).toBe("invalid_tool_output");
  });

  it("neutralizes tool-call markup that the agent itself writes", async () => {
    const evil = 'look: <details type="tool_calls" done="true" name="x" embeds="[&quot;<script>&quot;]"></details>';
    const stream = await client.chat.completions.create(
      { model: "open-persona/build", stream: true, messages: [{ role: "user", content: script({ text: evil, tokens: 30 }) }] },
      { headers: chat() },
    );
    let content = "";
    for await (const chunk of stream) content += chunk.choices[0]?.delta?.content ?? "";
    expect(content).not.toMatch(/<details/i);
    expect(content).toContain("&lt;details type=");
  });

  it("runs bash in the workspace", async () => {
    const r = await client.chat.completions.create(
      { model: "open-persona/build", messages: [{ role: "user", content: say.bash("echo from-bash > made-by-bash.txt && pwd") }] },
      { headers: chat() },
    );
    expect(r.choices[0]!.message.content).toBe("\n\n> ran bash: `echo from-bash > made-by-bash.txt && pwd`\n\nran it");
    expect(fs.readFileSync(path.join(sidecar.config.workspaceRoot, LOCAL, "made-by-bash.txt"), "utf8").trim()).toBe("from-bash");
  });
});

describe("keep-alive", () => {
  it("sends SSE comments while the agent is silent, then the answer", async () => {
    const res = await fetch(`${sidecar.url}/v1/chat/completions`, {
      method: "POST",
      headers: { "content-type": "application/json", ...chat() },
      body: JSON.stringify({ model: "open-persona/build", stream: true, messages: [{ role: "user", content: say.hang(1500) }] }),
    });
    const events = await readSse(res);
    const firstData = events.findIndex((e) => e.data);
    const comments = events.filter((e, i) => e.comment === "keep-alive" && i < events.findIndex((x) => x.data?.includes("woke up")));
    expect(comments.length).toBeGreaterThanOrEqual(2);
    expect(firstData).toBeGreaterThanOrEqual(0);
    expect(events.map((e) => e.data ?? "").join("")).toContain("woke up");
  });
});

describe("non-streaming", () => {
  it("returns a chat.completion with the final text and real usage", async () => {
    const r = await client.chat.completions.create(
      { model: "open-persona/build", messages: [{ role: "user", content: say.text("plain answer") }] },
      { headers: chat() },
    );
    expect(r.object).toBe("chat.completion");
    expect(r.choices[0]!.message).toMatchObject({ role: "assistant", content: "plain answer" });
    expect(r.choices[0]!.finish_reason).toBe("stop");
    expect(r.usage!.prompt_tokens).toBeGreaterThan(100);
    expect(r.usage!.total_tokens).toBe(r.usage!.prompt_tokens + r.usage!.completion_tokens);
  });

  it("reports a model failure as an API error", async () => {
    const err = await client.chat.completions
      .create({ model: "open-persona/build", messages: [{ role: "user", content: say.fail(400, "model says no") }] }, { headers: chat() })
      .catch((e: unknown) => e);
    expect(err).toBeInstanceOf(OpenAI.APIError);
    expect((err as InstanceType<typeof OpenAI.APIError>).status).toBe(502);
    expect((err as InstanceType<typeof OpenAI.APIError>).message).toContain("model says no");
  });
});

describe("logs", () => {
  it("carry a bounded digest of the chat id, never the raw id (clients put e-mails in them)", async () => {
    const chatId = `alice.secret@example.com/${"x".repeat(5000)}`;
    await client.chat.completions.create(
      { model: "open-persona/build", messages: [{ role: "user", content: say.text("logged") }] },
      { headers: { "X-Session-Id": chatId } },
    );
    expect(sidecar.logs.some((l) => l.includes("alice.secret@example.com"))).toBe(false);
    const started = sidecar.logs.filter((l) => l.includes('"turn started"')).map((l) => JSON.parse(l) as { chat?: string });
    expect(started.at(-1)!.chat).toMatch(/^[0-9a-f]{12}$/);
  });
});

describe("plan agent", () => {
  it("can neither write files nor run commands", async () => {
    const target = path.join(sidecar.config.workspaceRoot, LOCAL, "plan-wrote-this.txt");
    await client.chat.completions.create(
      { model: "open-persona/plan", messages: [{ role: "user", content: say.write("plan-wrote-this.txt", "nope") }] },
      { headers: chat() },
    );
    await client.chat.completions.create(
      { model: "open-persona/plan", messages: [{ role: "user", content: say.bash("touch plan-ran-bash.txt") }] },
      { headers: chat() },
    );
    expect(fs.existsSync(target)).toBe(false);
    expect(fs.existsSync(path.join(sidecar.config.workspaceRoot, LOCAL, "plan-ran-bash.txt"))).toBe(false);
    // opencode ran the tool step and refused it: the model got a tool result for each call.
    const followUps = model.requests.filter(
      (r) => /plan-wrote-this|plan-ran-bash/.test(r.lastUserText) && r.body.messages.at(-1)?.role === "tool",
    );
    expect(followUps).toHaveLength(2);
  });
});

describe("errors in the stream", () => {
  it("ends the stream with an error object when the model fails mid-run", async () => {
    const res = await fetch(`${sidecar.url}/v1/chat/completions`, {
      method: "POST",
      headers: { "content-type": "application/json", ...chat() },
      body: JSON.stringify({ model: "open-persona/build", stream: true, messages: [{ role: "user", content: say.fail(401, "bad provider key") }] }),
    });
    expect(res.status).toBe(200);
    const events = await readSse(res);
    const err = events.map((e) => (e.data && e.data !== "[DONE]" ? JSON.parse(e.data) : {})).find((p) => p.error);
    expect(err.error.message).toContain("bad provider key");
    expect(err.choices).toBeUndefined();
    expect(events.at(-1)!.data).toBe("[DONE]");
  });
});
