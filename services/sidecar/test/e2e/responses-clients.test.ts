/**
 * `POST /v1/responses` end to end with two more real client libraries → sidecar → real
 * opencode → the scripted model:
 * - the Vercel AI SDK's default `openai(model)` provider (`@ai-sdk/openai`, which speaks the
 *   Responses API) with `generateText` / `streamText` from `ai`;
 * - LangChain's `ChatOpenAI` with `useResponsesApi: true`.
 * What each one needs from the wire is in shared/reference/responses-api.md (§0, §3, §4).
 */
import { randomUUID } from "node:crypto";
import { createOpenAI } from "@ai-sdk/openai";
import { ChatOpenAI } from "@langchain/openai";
import { generateText, streamText } from "ai";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { say, script, startScriptedModel, type ScriptedModel } from "../fixtures/scripted-model.js";
import { scriptedEnv, startSidecar, type InProcessSidecar } from "../helpers/harness.js";

const MODEL = "open-persona/build";

let model: ScriptedModel;
let sidecar: InProcessSidecar;
let openai: ReturnType<typeof createOpenAI>;
let chat: (streaming?: boolean) => ChatOpenAI;

beforeAll(async () => {
  model = await startScriptedModel();
  sidecar = await startSidecar(scriptedEnv(model.baseURL));
  openai = createOpenAI({ baseURL: `${sidecar.url}/v1`, apiKey: "unused-on-loopback" });
  chat = (streaming = false) =>
    new ChatOpenAI({
      model: MODEL,
      apiKey: "unused-on-loopback",
      useResponsesApi: true,
      streaming,
      maxRetries: 0,
      configuration: { baseURL: `${sidecar.url}/v1` },
    });
});
afterAll(async () => {
  await sidecar?.close();
  await model?.close();
});

describe("Vercel AI SDK: openai(model), the Responses API", () => {
  it("generateText: text, reasoning, usage, and the response id", async () => {
    const r = await generateText({ model: openai(MODEL), prompt: script({ reasoning: "let me think", text: "generated answer" }) });
    expect(r.text).toBe("generated answer");
    expect(r.reasoningText).toBe("let me think");
    expect(r.finishReason).toBe("stop");
    expect(r.usage.inputTokens).toBeGreaterThan(0);
    expect(r.usage.outputTokens).toBeGreaterThan(0);
    expect(r.usage.totalTokens).toBe(r.usage.inputTokens! + r.usage.outputTokens!);
    expect(r.response.id).toMatch(/^resp_/);
    expect(r.providerMetadata?.openai?.responseId).toBe(r.response.id);
  });

  it("generateText: a tool run is a provider-executed mcp.<name> call with its result; no client tool loop", async () => {
    const r = await generateText({ model: openai(MODEL), prompt: say.write("ai-sdk.txt", "from the ai sdk", "wrote it") });
    expect(r.text).toBe("wrote it");
    expect(r.finishReason).toBe("stop");
    expect(r.steps).toHaveLength(1);
    const call = r.content.find((p) => p.type === "tool-call");
    const result = r.content.find((p) => p.type === "tool-result");
    expect(call).toMatchObject({ type: "tool-call", toolName: "mcp.write", providerExecuted: true, dynamic: true });
    expect(call!.input).toMatchObject({ content: "from the ai sdk" });
    expect(result).toMatchObject({ type: "tool-result", toolName: "mcp.write", toolCallId: call!.toolCallId, providerExecuted: true });
    expect((result as { output: unknown }).output).toMatchObject({ type: "call", serverLabel: "opencode", name: "write" });
    expect(r.content.some((p) => p.type === "tool-error")).toBe(false);
  });

  it("streamText: text and reasoning deltas, the tool run as call + result, finish stop, usage", async () => {
    const r = streamText({
      model: openai(MODEL),
      prompt: script({ tool: "bash", args: { command: "echo from-stream", description: "echo" } }, { reasoning: "thinking hard", text: "streamed answer" }),
    });
    const kinds: string[] = [];
    let text = "";
    let reasoning = "";
    const errors: unknown[] = [];
    for await (const part of r.fullStream) {
      kinds.push(part.type);
      if (part.type === "text-delta") text += part.text;
      if (part.type === "reasoning-delta") reasoning += part.text;
      if (part.type === "error") errors.push(part.error);
    }
    expect(errors).toEqual([]);
    expect(text).toBe("streamed answer");
    expect(reasoning).toBe("thinking hard");
    expect(await r.text).toBe("streamed answer");
    expect(await r.reasoningText).toBe("thinking hard");
    expect(await r.finishReason).toBe("stop");
    expect(kinds.filter((k) => k === "start-step")).toHaveLength(1);
    const content = await r.content;
    const call = content.find((p) => p.type === "tool-call");
    const result = content.find((p) => p.type === "tool-result");
    expect(call).toMatchObject({ toolName: "mcp.bash", providerExecuted: true, dynamic: true });
    expect(call!.input).toMatchObject({ command: "echo from-stream" });
    expect(result).toMatchObject({ toolName: "mcp.bash", toolCallId: call!.toolCallId });
    expect(JSON.stringify((result as { output: unknown }).output)).toContain("from-stream");
    const usage = await r.usage;
    expect(usage.inputTokens).toBeGreaterThan(0);
    expect(usage.outputTokens).toBeGreaterThan(0);
  });

  it("continues the same agent session with providerOptions.openai.previousResponseId", async () => {
    // A fresh first message: without a previous response the chat is keyed by the first one.
    const first = await generateText({ model: openai(MODEL), prompt: `${randomUUID()} ${say.countTurns()}` });
    expect(first.text).toBe("turns=1");
    const previousResponseId = first.providerMetadata?.openai?.responseId as string;
    expect(previousResponseId).toBe(first.response.id);
    const second = streamText({ model: openai(MODEL), prompt: say.countTurns(), providerOptions: { openai: { previousResponseId } } });
    expect(await second.text).toBe("turns=2");
    const third = await generateText({ model: openai(MODEL), prompt: say.countTurns(), providerOptions: { openai: { previousResponseId: (await second.response).id } } });
    expect(third.text).toBe("turns=3");
  });

  it("continues a resent conversation (the SDK's default multi-turn: assistant turns as item_reference)", async () => {
    const opening = `${randomUUID()} ${say.countTurns()}`;
    const first = await generateText({ model: openai(MODEL), prompt: opening });
    expect(first.text).toBe("turns=1");
    // What the SDK sends, as the sidecar receives it.
    const sent: Array<{ input?: Array<{ type?: string }> }> = [];
    const recording = createOpenAI({
      baseURL: `${sidecar.url}/v1`,
      apiKey: "unused-on-loopback",
      fetch: (url, init) => {
        sent.push(JSON.parse(String(init?.body)) as (typeof sent)[number]);
        return fetch(url, init);
      },
    });
    const second = await generateText({
      model: recording(MODEL),
      messages: [{ role: "user", content: opening }, ...first.response.messages, { role: "user", content: say.countTurns() }],
    });
    expect(sent).toHaveLength(1);
    expect(sent[0]!.input?.some((i) => i.type === "item_reference")).toBe(true);
    expect(second.text).toBe("turns=2");
  });
});

describe("LangChain ChatOpenAI with useResponsesApi", () => {
  it("invoke: the answer's text, reasoning and usage", async () => {
    const msg = await chat().invoke(script({ reasoning: "pondering", text: "langchain answer" }));
    expect(msg.text).toBe("langchain answer");
    expect(msg.tool_calls ?? []).toEqual([]);
    expect(msg.additional_kwargs.reasoning).toMatchObject({ type: "reasoning", summary: [{ type: "summary_text", text: "pondering" }] });
    expect(msg.usage_metadata?.input_tokens).toBeGreaterThan(0);
    expect(msg.usage_metadata?.output_tokens).toBeGreaterThan(0);
    expect(msg.response_metadata.id).toMatch(/^resp_/);
  });

  it("stream: the chunks concatenate to the answer", async () => {
    const chunks: string[] = [];
    let usage: number | undefined;
    for await (const c of await chat(true).stream(say.slow(5, 20))) {
      chunks.push(c.text);
      if (c.usage_metadata) usage = c.usage_metadata.total_tokens;
    }
    expect(chunks.filter(Boolean).length).toBeGreaterThan(1);
    expect(chunks.join("")).toBe("tok ".repeat(5));
    expect(usage).toBeGreaterThan(0);
  });

  it("a tool run is a tool output, never a client tool call, in invoke and in stream", async () => {
    const msg = await chat().invoke(say.write("lc.txt", "from langchain", "wrote lc"));
    expect(msg.text).toBe("wrote lc");
    expect(msg.tool_calls ?? []).toEqual([]);
    expect(msg.invalid_tool_calls ?? []).toEqual([]);
    const outputs = msg.additional_kwargs.tool_outputs as Array<Record<string, unknown>>;
    expect(outputs).toHaveLength(1);
    expect(outputs[0]).toMatchObject({ type: "mcp_call", name: "write", server_label: "opencode", status: "completed" });

    let text = "";
    const streamedOutputs: unknown[] = [];
    let toolCalls = 0;
    for await (const c of await chat(true).stream(say.bash("echo lc-stream", "ran lc"))) {
      text += c.text;
      toolCalls += (c.tool_calls?.length ?? 0) + (c.tool_call_chunks?.length ?? 0);
      streamedOutputs.push(...((c.additional_kwargs.tool_outputs as unknown[] | undefined) ?? []));
    }
    expect(text).toBe("ran lc");
    expect(toolCalls).toBe(0);
    expect(streamedOutputs).toContainEqual(expect.objectContaining({ type: "mcp_call", name: "bash", status: "completed" }));
  });
});
