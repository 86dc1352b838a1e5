/**
 * One opencode session per (user, chat): kept across requests, created once under
 * concurrency, recreated when opencode lost it, and untouched by Open WebUI's background tasks.
 */
import fs from "node:fs";
import path from "node:path";
import { randomUUID } from "node:crypto";
import OpenAI from "openai";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { userHash, userSpace } from "../../src/workspace/user-space.js";
import { say, startScriptedModel, type ScriptedModel } from "../fixtures/scripted-model.js";
import { scriptedEnv, startSidecar, type InProcessSidecar } from "../helpers/harness.js";

let model: ScriptedModel;
let sidecar: InProcessSidecar;
let client: OpenAI;
const space = () => userSpace(sidecar.config.workspaceRoot, sidecar.config.stateRoot, userHash("local"));
const sessionMap = (): Record<string, { sessionId: string }> =>
  JSON.parse(fs.readFileSync(path.join(space().stateDir, "sessions.json"), "utf8"));

beforeAll(async () => {
  model = await startScriptedModel();
  sidecar = await startSidecar(scriptedEnv(model.baseURL, { MAX_CONCURRENT_RUNS_PER_USER: "10" }));
  client = new OpenAI({ baseURL: `${sidecar.url}/v1`, apiKey: "x" });
});
afterAll(async () => {
  await sidecar?.close();
  await model?.close();
});

async function ask(content: string, headers: Record<string, string>, history: OpenAI.ChatCompletionMessageParam[] = []) {
  const r = await client.chat.completions.create(
    { model: "open-persona/build", messages: [...history, { role: "user", content }] },
    { headers },
  );
  return r.choices[0]!.message.content;
}

describe("chat → session", () => {
  it("keeps the agent's context across requests of one chat (X-Session-Id)", async () => {
    const h = { "X-Session-Id": randomUUID() };
    expect(await ask(say.countTurns(), h)).toBe("turns=1");
    expect(await ask(say.countTurns(), h)).toBe("turns=2");
    expect(await ask(say.countTurns(), { "X-Session-Id": randomUUID() })).toBe("turns=1");
  });

  it("keys Open WebUI chats by X-OpenWebUI-Chat-Id", async () => {
    const h = { "X-OpenWebUI-Chat-Id": randomUUID() };
    await ask(say.text("first"), h);
    expect(await ask(say.countTurns(), h)).toBe("turns=2");
    expect(Object.keys(sessionMap())).toContain(h["X-OpenWebUI-Chat-Id"]);
  });

  it("derives a stable key for clients that send no chat id and resend their history", async () => {
    const first = `${say.text("hello")} ${randomUUID()}`;
    const before = Object.keys(sessionMap()).length;
    const a1 = await ask(first, {});
    await ask(say.countTurns(), {}, [
      { role: "user", content: first },
      { role: "assistant", content: a1 },
    ]);
    const derived = Object.keys(sessionMap()).filter((k) => k.startsWith("derived:"));
    expect(Object.keys(sessionMap()).length).toBe(before + 1);
    expect(derived.length).toBeGreaterThan(0);
    // Only the new turn was sent: the session holds the original first message, not a replay.
    const last = model.requests.at(-1)!.body.messages.filter((m) => m.role === "user");
    expect(last).toHaveLength(2);
    expect(JSON.stringify(last[0]!.content)).toContain(first.slice(-36));
  });

  it("creates exactly one session for concurrent first requests and serializes their prompts", async () => {
    const h = { "X-Session-Id": randomUUID() };
    const answers = await Promise.all(Array.from({ length: 5 }, () => ask(say.countTurns(), h)));
    // Each prompt ran in its own turn of the same session, one after the other.
    expect(answers.sort()).toEqual(["turns=1", "turns=2", "turns=3", "turns=4", "turns=5"]);
    expect(sessionMap()[h["X-Session-Id"]]).toBeDefined();
  });

  it("recreates a session that opencode lost, seeded with the conversation so far", async () => {
    const h = { "X-Session-Id": randomUUID() };
    const a1 = await ask(say.text("remember me"), h);
    const lostId = sessionMap()[h["X-Session-Id"]]!.sessionId;
    const ep = await sidecar.runner.ensure(space());
    await ep.client.deleteSession(lostId, ep.directory);

    const answer = await ask(say.countTurns(), h, [
      { role: "user", content: say.text("remember me") },
      { role: "assistant", content: a1 },
    ]);
    const newId = sessionMap()[h["X-Session-Id"]]!.sessionId;
    expect(newId).not.toBe(lostId);
    // The seed (the transcript) plus the new user turn.
    expect(answer).toBe("turns=2");
    const seeded = model.requests.at(-1)!.body.messages.find((m) => m.role === "user");
    expect(JSON.stringify(seeded!.content)).toContain("remember me");
  });
});

describe("Open WebUI background tasks", () => {
  it("answers a ### Task: call without touching the chat's session or running tools", async () => {
    const chatId = randomUUID();
    const h = { "X-OpenWebUI-Chat-Id": chatId };
    await ask(say.text("real chat message"), h);
    const sessionBefore = sessionMap()[chatId]!.sessionId;

    const titlePrompt =
      "### Task:\nGenerate a concise, 3-5 word title with an emoji summarizing the chat history.\n### Output:\nJSON format: { \"title\": \"your concise title here\" }\n### Chat History:\n<chat_history>\nUSER: hi\n</chat_history>";
    const n = model.requests.length;
    const res = await fetch(`${sidecar.url}/v1/chat/completions`, {
      method: "POST",
      headers: { "content-type": "application/json", ...h },
      body: JSON.stringify({ model: "open-persona/build", stream: false, messages: [{ role: "user", content: titlePrompt }] }),
    });
    expect(res.status).toBe(200);
    expect(res.headers.get("content-type")).toContain("application/json");
    const body = await res.json();
    expect(body.choices[0].message.content).toBe("ok");
    // The model saw the task alone, with no tools offered.
    const taskReq = model.requests.slice(n).find((r) => r.lastUserText.startsWith("### Task:"))!;
    expect(taskReq.body.messages.filter((m) => m.role === "user")).toHaveLength(1);
    expect(taskReq.body.tools ?? []).toHaveLength(0);

    expect(sessionMap()[chatId]!.sessionId).toBe(sessionBefore);
    expect(await ask(say.countTurns(), h)).toBe("turns=2");
  });

  it("treats a request carrying the X-OpenWebUI-Task header ({{TASK}} template) as a task", async () => {
    const chatId = randomUUID();
    const h = { "X-OpenWebUI-Chat-Id": chatId };
    await ask(say.text("chat"), h);
    const n = model.requests.length;
    // An admin-customised prompt that does not start with "### Task:".
    expect(await ask(say.text("🙂"), { ...h, "X-OpenWebUI-Task": "emoji_generation" })).toBe("🙂");
    expect(model.requests.slice(n).every((r) => (r.body.tools ?? []).length === 0)).toBe(true);
    expect(await ask(say.countTurns(), h)).toBe("turns=2");
  });
});
