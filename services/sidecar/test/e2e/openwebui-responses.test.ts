/**
 * The real Open WebUI with the sidecar as a connection of the "Responses" type
 * (`api_type: "responses"`): Open WebUI still runs its Chat Completions pipeline, but rewrites
 * each request into a Responses payload (full history in `input`, system prompt in
 * `instructions`) and calls `POST {base}/responses`, then folds the streamed events into the
 * saved message's `output` list. Chats are driven through its own chat endpoint as the browser
 * does (helpers/openwebui-chat.ts); the tests read back what it saved.
 */
import fs from "node:fs";
import path from "node:path";
import { randomUUID } from "node:crypto";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { userHash } from "../../src/workspace/user-space.js";
import { freePort } from "../../src/runners/free-port.js";
import { chatLogId } from "../../src/http/chat-key.js";
import { startOpenWebUI, type OpenWebUIAccount, type RealOpenWebUI } from "../fixtures/openwebui-real.js";
import { say, script, startScriptedModel, type ScriptedModel } from "../fixtures/scripted-model.js";
import { scriptedEnv, startSidecar, type InProcessSidecar } from "../helpers/harness.js";
import { chatThroughOpenWebUI, outputText, reasoningText } from "../helpers/openwebui-chat.js";

const GATEWAY_KEY = `gw-${randomUUID()}`;

let model: ScriptedModel;
let owui: RealOpenWebUI;
let sidecar: InProcessSidecar;

const workspaceOf = (who: OpenWebUIAccount) => path.join(sidecar.config.workspaceRoot, userHash(who.id));
const sidecarLogs = () => sidecar.logs.map((l) => JSON.parse(l) as Record<string, any>);
const chatLogs = (chatId: string, msg: string) => sidecarLogs().filter((l) => l.msg === msg && l.chat === chatLogId(chatId) && !l.task);

beforeAll(async () => {
  model = await startScriptedModel();
  const port = await freePort();
  owui = await startOpenWebUI({
    sidecarUrl: `http://127.0.0.1:${port}`,
    gatewayKey: GATEWAY_KEY,
    embeddingsBaseUrl: model.baseURL,
    apiType: "responses",
  });
  sidecar = await startSidecar(scriptedEnv(model.baseURL, { PORT: String(port), SIDECAR_API_KEYS: GATEWAY_KEY }));
}, 240_000);

afterAll(async () => {
  await owui?.close();
  await sidecar?.close();
  await model?.close();
});

// Title, tag and follow-up tasks (non-streamed Responses calls) are left out: these tests are
// about the chat's own turns, and each task would add a model round trip.
const noTasks = { title_generation: false, tags_generation: false, follow_up_generation: false };

describe("chats through the real Open WebUI over a Responses connection", () => {
  it("saves the agent's answer and reasoning; the turn came over /v1/responses as that user, in that user's workspace", async () => {
    const [a, b] = await Promise.all([
      chatThroughOpenWebUI(
        owui,
        owui.alice,
        script(
          { tool: "write", args: { filePath: "whoami.txt", content: "alice's file" } },
          { text: "Wrote whoami.txt.", reasoning: "The user wants a file. " },
        ),
        { backgroundTasks: noTasks },
      ),
      chatThroughOpenWebUI(owui, owui.bob, say.write("whoami.txt", "bob's file", "Wrote bob's file."), { backgroundTasks: noTasks }),
    ]);
    const reply = a.reply;
    expect(reply.error ?? null).toBeNull();
    expect(b.reply.error ?? null).toBeNull();

    // The answer: Open WebUI folds the events into `output` (replaced by response.completed's
    // output) and keeps the message text as `content` too.
    expect(reply.content).toBe("Wrote whoami.txt.");
    expect(outputText(reply)).toBe("Wrote whoami.txt.");
    expect(b.reply.content).toBe("Wrote bob's file.");
    // Reasoning is kept as the sidecar's `reasoning` item, its text in `summary` (which the
    // frontend quotes in its "Thought for…" block), not in `content` and not in the answer.
    const reasoning = reply.output!.filter((o) => o.type === "reasoning");
    expect(reasoning).toHaveLength(1);
    expect(reasoning[0]).toMatchObject({ summary: [{ type: "summary_text", text: "The user wants a file. " }], status: "completed" });
    expect(reasoningText(reply)).toBe(""); // the helper reads reasoning `content`, which Chat Completions mode fills
    expect(reply.content).not.toContain("The user wants a file");
    // Usage is saved as the Responses API reports it (not converted to prompt/completion tokens).
    expect(reply.usage).toMatchObject({ input_tokens: expect.any(Number), output_tokens: expect.any(Number), total_tokens: expect.any(Number) });
    expect(Number(reply.usage!.input_tokens)).toBeGreaterThan(0);

    // A tool run in this mode: the agent ran it (the file is there, below), and Open WebUI keeps
    // the sidecar's `mcp_call` item verbatim in the saved output, but writes no tool block into
    // `content` and shows nothing for it: its frontend renders only reasoning, message,
    // function_call and a few built-in tool items, and an mcp_call (no `content`) renders empty.
    // No function_call item either, so Open WebUI never tries to run the tool itself.
    // Open WebUI users who want to see tool runs keep the Chat Completions connection.
    expect(reply.output!.map((o) => o.type)).toEqual(["mcp_call", "reasoning", "message"]);
    const call = reply.output![0]!;
    expect(call).toMatchObject({ type: "mcp_call", server_label: "opencode", name: "write", status: "completed" });
    expect(JSON.parse(call.arguments as string)).toMatchObject({ filePath: "whoami.txt", content: "alice's file" });
    expect(reply.content).not.toMatch(/<details|tool_calls/);

    // The sidecar got it on /v1/responses, keyed by Open WebUI's chat id, as the user Open WebUI named.
    for (const [who, sent] of [[owui.alice, a.sent], [owui.bob, b.sent]] as const) {
      const started = chatLogs(sent.chatId, "turn started");
      expect(started).toHaveLength(1);
      expect(started[0]).toMatchObject({ api: "responses", via: "gateway", user: userHash(who.id), stream: true });
      const requests = chatLogs(sent.chatId, "request");
      expect(requests.map((r) => `${r.method} ${r.path} ${r.status}`)).toEqual(["POST /v1/responses 200"]);
    }
    expect(sidecarLogs().filter((l) => l.msg === "request" && l.path === "/v1/chat/completions")).toEqual([]);
    // One workspace per Open WebUI user.
    expect(workspaceOf(owui.alice)).not.toBe(workspaceOf(owui.bob));
    expect(fs.readFileSync(path.join(workspaceOf(owui.alice), "whoami.txt"), "utf8")).toBe("alice's file");
    expect(fs.readFileSync(path.join(workspaceOf(owui.bob), "whoami.txt"), "utf8")).toBe("bob's file");
  });

  it("continues the same agent session with the second message, though Open WebUI resends the whole chat", async () => {
    // The first turn leaves reasoning and a tool run in the saved output. Open WebUI rebuilds
    // the history from it (utils/misc.py convert_output_to_messages) and resends it all in the
    // next request's `input`: the user's first message and the assistant's text only (the
    // mcp_call and reasoning items are dropped), then the new message, with no response id.
    const first = await chatThroughOpenWebUI(
      owui,
      owui.alice,
      script({ tool: "write", args: { filePath: "turn1.txt", content: "one" } }, { text: "first answer", reasoning: "thinking first. " }),
      { backgroundTasks: noTasks },
    );
    expect(first.reply.content).toBe("first answer");
    const second = await chatThroughOpenWebUI(owui, owui.alice, say.countTurns(), { after: first.sent, backgroundTasks: noTasks });
    expect(second.reply.error ?? null).toBeNull();
    // The agent saw exactly this chat's two user messages, in one session: the sidecar took
    // only the new message from the resent history, keyed by X-OpenWebUI-Chat-Id.
    expect(second.reply.content).toBe("turns=2");
    expect(outputText(second.reply)).toBe("turns=2");
    const started = chatLogs(first.sent.chatId, "turn started");
    expect(started).toHaveLength(2);
    expect(new Set(started.map((l) => l.sessionId)).size).toBe(1);
    expect(chatLogs(first.sent.chatId, "opencode session created")).toHaveLength(1);
  });
});
