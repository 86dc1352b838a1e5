/**
 * ResponseBuilder against the rules every Responses API client needs
 * (shared/reference/responses-api.md §0, §2–§4, §6), and a whole recorded event list replayed
 * as SSE (through the sidecar's own SseWriter) into the official `openai` package's stream
 * helper, whose accumulator must rebuild exactly the builder's final response.
 */
import type { Server } from "node:http";
import type { AddressInfo } from "node:net";
import express from "express";
import OpenAI from "openai";
import { accumulateResponse } from "openai/lib/responses/ResponseAccumulator";
import type { ResponseStreamEvent } from "openai/resources/responses/responses";
import { afterEach, describe, expect, it } from "vitest";
import { SseWriter } from "../../src/chat/sse-writer.js";
import type { TurnOutput } from "../../src/chat/turn-translator.js";
import { ResponseBuilder } from "../../src/responses/response-builder.js";
import type { McpCallItem, MessageItem, ReasoningItem, ResponseObject, StreamEvent } from "../../src/responses/wire.js";

const USAGE = { prompt_tokens: 11, completion_tokens: 7, total_tokens: 18 };
const FINISH: TurnOutput = { kind: "finish", reason: "stop", usage: USAGE };
const text = (t: string): TurnOutput => ({ kind: "text", text: t });
const reasoning = (t: string): TurnOutput => ({ kind: "reasoning", text: t });
const toolStart = (callId: string, name = "bash"): TurnOutput => ({ kind: "tool-start", callId, name, title: name });
const toolEnd = (callId: string, o: { name?: string; args?: unknown; result?: string; failed?: boolean } = {}): TurnOutput => ({
  kind: "tool-end",
  callId,
  name: o.name ?? "bash",
  args: o.args ?? { command: "ls" },
  result: o.result ?? "a.txt",
  failed: o.failed ?? false,
});

/** Reasoning, text, a tool run, more text, the finish: every item kind in one turn. */
const FULL_TURN: TurnOutput[] = [
  reasoning("Thinking "),
  reasoning("about it."),
  text("Let me "),
  text("look."),
  toolStart("call_1"),
  toolEnd("call_1"),
  text("Found "),
  text("a.txt."),
  FINISH,
];

function newBuilder(): ResponseBuilder {
  return new ResponseBuilder({ id: "resp_test", model: "open-persona/build", background: false, linkBase: "http://sidecar.test" });
}

function run(outputs: TurnOutput[], b = newBuilder()): { b: ResponseBuilder; events: StreamEvent[] } {
  return { b, events: [...b.start(), ...outputs.flatMap((o) => b.push(o))] };
}

const types = (events: StreamEvent[]) => events.map((e) => e.type);
const itemOf = <T>(e: StreamEvent | undefined) => e?.item as T;
const responseOf = (e: StreamEvent | undefined) => e?.response as ResponseObject;

/** Index of the first event matching `pred` (fails the test when there is none). */
function indexOf(events: StreamEvent[], pred: (e: StreamEvent) => boolean, what: string): number {
  const i = events.findIndex(pred);
  expect(i, what).toBeGreaterThanOrEqual(0);
  return i;
}

/** Every object anywhere in `v` whose `type` is `output_text`. */
function outputTextParts(v: unknown, into: Array<Record<string, unknown>> = []): Array<Record<string, unknown>> {
  if (Array.isArray(v)) v.forEach((x) => outputTextParts(x, into));
  else if (v && typeof v === "object") {
    const o = v as Record<string, unknown>;
    if (o.type === "output_text") into.push(o);
    Object.values(o).forEach((x) => outputTextParts(x, into));
  }
  return into;
}

describe("ResponseBuilder: the stream's shape", () => {
  it("numbers every event 0..n without gaps, whatever the ending", () => {
    const endings: TurnOutput[][] = [
      FULL_TURN,
      [text("partial"), { kind: "error", code: "APIError", message: "upstream failed" }],
      [toolEnd("c", { failed: true, result: "boom" }), FINISH],
    ];
    for (const outputs of endings) {
      const { events } = run(outputs);
      expect(events.map((e) => e.sequence_number)).toEqual(events.map((_, i) => i));
    }
  });

  it("starts with response.created then response.in_progress, both the same in-progress Response", () => {
    const { events } = run(FULL_TURN);
    expect(types(events).slice(0, 2)).toEqual(["response.created", "response.in_progress"]);
    for (const e of events.slice(0, 2)) {
      expect(responseOf(e)).toMatchObject({ id: "resp_test", object: "response", status: "in_progress", output: [], usage: null, error: null });
    }
    // The id stays the same in every lifecycle event (openai-node's helper checks it).
    expect(responseOf(events.at(-1)).id).toBe("resp_test");
  });

  it("opens a message with output_item.added and content_part.added before its first output_text.delta", () => {
    const { events } = run(FULL_TURN);
    const messages = events.filter((e) => e.type === "response.output_item.added" && itemOf<MessageItem>(e).type === "message");
    expect(messages).toHaveLength(2);
    for (const added of messages) {
      const item = itemOf<MessageItem>(added);
      expect(item).toMatchObject({ type: "message", role: "assistant", status: "in_progress", content: [] });
      const at = events.indexOf(added);
      const part = indexOf(events, (e) => e.type === "response.content_part.added" && e.item_id === item.id, "content_part.added");
      const delta = indexOf(events, (e) => e.type === "response.output_text.delta" && e.item_id === item.id, "first delta");
      expect(at).toBeLessThan(part);
      expect(part).toBeLessThan(delta);
      expect(events[part]).toMatchObject({ output_index: added.output_index, content_index: 0, part: { type: "output_text", text: "" } });
    }
  });

  it("gives every output_text part `annotations: []`, in events and in the final output", () => {
    const { b, events } = run(FULL_TURN);
    const parts = outputTextParts(events);
    // content_part.added/done, output_item.done (×2 messages) and the completed response's output.
    expect(parts.length).toBeGreaterThanOrEqual(8);
    for (const p of parts) expect(p.annotations).toEqual([]);
    for (const p of outputTextParts(b.response)) expect(p.annotations).toEqual([]);
  });

  it("text → tool → text: message, mcp_call, message, the first message closed before the tool is added", () => {
    const { b, events } = run([text("Let me "), text("look."), toolStart("call_1"), toolEnd("call_1"), text("Found it."), FINISH]);
    expect(b.response.output.map((i) => i.type)).toEqual(["message", "mcp_call", "message"]);
    const [first, call, second] = b.response.output as [MessageItem, McpCallItem, MessageItem];
    const toolAdded = indexOf(events, (e) => e.type === "response.output_item.added" && itemOf<McpCallItem>(e).id === call.id, "mcp_call added");
    const closing = events.filter((e) => e.item_id === first.id || itemOf<MessageItem>(e)?.id === first.id).slice(-3);
    expect(types(closing)).toEqual(["response.output_text.done", "response.content_part.done", "response.output_item.done"]);
    for (const e of closing) expect(events.indexOf(e)).toBeLessThan(toolAdded);
    expect(closing[0]).toMatchObject({ output_index: 0, content_index: 0, text: "Let me look." });
    expect(itemOf<MessageItem>(closing[2])).toMatchObject({ status: "completed", content: [{ type: "output_text", text: "Let me look.", annotations: [] }] });
    // Output indexes follow the order the items were added in.
    const added = events.filter((e) => e.type === "response.output_item.added");
    expect(added.map((e) => e.output_index)).toEqual([0, 1, 2]);
    expect(second.content[0]!.text).toBe("Found it.");
    expect(second.id).not.toBe(first.id);
  });

  it("adds a reasoning item with `summary: []` and ends it with the whole summary text", () => {
    const { b, events } = run(FULL_TURN);
    const added = events.find((e) => e.type === "response.output_item.added" && itemOf<ReasoningItem>(e).type === "reasoning")!;
    const item = itemOf<ReasoningItem>(added);
    expect(item).toEqual({ id: item.id, type: "reasoning", summary: [] });
    const ofItem = events.filter((e) => e.item_id === item.id || itemOf<ReasoningItem>(e)?.id === item.id);
    expect(types(ofItem)).toEqual([
      "response.output_item.added",
      "response.reasoning_summary_part.added",
      "response.reasoning_summary_text.delta",
      "response.reasoning_summary_text.delta",
      "response.reasoning_summary_text.done",
      "response.reasoning_summary_part.done",
      "response.output_item.done",
    ]);
    expect(ofItem[4]).toMatchObject({ summary_index: 0, text: "Thinking about it." });
    expect(ofItem[5]).toMatchObject({ summary_index: 0, part: { type: "summary_text", text: "Thinking about it." } });
    expect(itemOf<ReasoningItem>(ofItem[6]).summary).toEqual([{ type: "summary_text", text: "Thinking about it." }]);
    expect(b.response.output[0]).toEqual({ id: item.id, type: "reasoning", summary: [{ type: "summary_text", text: "Thinking about it." }] });
  });

  it("ignores empty text and retries (no event outside OpenAI's catalogue)", () => {
    const b = newBuilder();
    b.start();
    expect(b.push(text(""))).toEqual([]);
    expect(b.push(reasoning(""))).toEqual([]);
    expect(b.push({ kind: "retry", attempt: 1, message: "rate limited", failure: "rate_limited" })).toEqual([]);
    expect(b.response.output).toEqual([]);
  });
});

describe("ResponseBuilder: tool runs", () => {
  it("a tool-end without its tool-start still makes a well-formed mcp_call: added, then done", () => {
    const b = newBuilder();
    b.start();
    const events = b.push(toolEnd("call_x", { name: "read", args: { filePath: "a.txt" }, result: "hello" }));
    expect(types(events)).toEqual([
      "response.output_item.added",
      "response.mcp_call.in_progress",
      "response.mcp_call_arguments.done",
      "response.mcp_call.completed",
      "response.output_item.done",
    ]);
    const added = itemOf<McpCallItem>(events[0]);
    expect(added).toMatchObject({ type: "mcp_call", server_label: "opencode", name: "read", arguments: "", output: null, error: null, approval_request_id: null, status: "in_progress" });
    expect(added.id).toMatch(/^mcp_/);
    const done = itemOf<McpCallItem>(events[4]);
    expect(done).toEqual({ ...added, arguments: JSON.stringify({ filePath: "a.txt" }), output: "hello", status: "completed" });
    expect(events[2]).toMatchObject({ item_id: added.id, output_index: 0, arguments: done.arguments });
    for (const e of events.slice(1, 4)) expect(e).toMatchObject({ item_id: added.id, output_index: 0 });
  });

  it("a tool-start then tool-end adds the item once; arguments that are not an object become {}", () => {
    const b = newBuilder();
    b.start();
    const start = b.push(toolStart("c1"));
    expect(types(start)).toEqual(["response.output_item.added", "response.mcp_call.in_progress"]);
    expect(b.push(toolStart("c1"))).toEqual([]);
    const end = b.push(toolEnd("c1", { args: "not an object" }));
    expect(types(end)).toEqual(["response.mcp_call_arguments.done", "response.mcp_call.completed", "response.output_item.done"]);
    expect(b.response.output).toHaveLength(1);
    expect((b.response.output[0] as McpCallItem).arguments).toBe("{}");
  });

  it("a failed tool run: status failed with an error object, and response.mcp_call.failed", () => {
    const { b, events } = run([toolStart("c1"), toolEnd("c1", { failed: true, result: "command not found" }), FINISH]);
    expect(types(events)).toContain("response.mcp_call.failed");
    expect(types(events)).not.toContain("response.mcp_call.completed");
    const done = itemOf<McpCallItem>(events.find((e) => e.type === "response.output_item.done"));
    const expected = { status: "failed", output: null, error: { type: "mcp_tool_execution_error", content: [{ type: "text", text: "command not found" }] } };
    expect(done).toMatchObject(expected);
    expect(b.response.output[0]).toMatchObject(expected);
    expect(b.response.status).toBe("completed");
  });
});

describe("ResponseBuilder: the end", () => {
  it("finish → response.completed with the whole output and the usage mapped", () => {
    const { b, events } = run(FULL_TURN);
    const last = events.at(-1)!;
    expect(last.type).toBe("response.completed");
    const r = responseOf(last);
    expect(r.status).toBe("completed");
    expect(r.output.map((i) => i.type)).toEqual(["reasoning", "message", "mcp_call", "message"]);
    expect(r.output).toEqual(b.response.output);
    // Each item exactly as its own output_item.done said.
    const done = events.filter((e) => e.type === "response.output_item.done");
    expect(done.map((e) => e.item)).toEqual(r.output);
    expect(r.usage).toEqual({
      input_tokens: 11,
      input_tokens_details: { cached_tokens: 0 },
      output_tokens: 7,
      output_tokens_details: { reasoning_tokens: 0 },
      total_tokens: 18,
    });
    expect(r.completed_at).toEqual(expect.any(Number));
    expect(r).toEqual(b.response);
    expect(b.done).toBe(true);
  });

  it("a finish at the model's output limit → response.incomplete, the message marked incomplete", () => {
    const { b, events } = run([text("cut sho"), { kind: "finish", reason: "length", usage: USAGE }]);
    expect(events.at(-1)!.type).toBe("response.incomplete");
    expect(b.response.status).toBe("incomplete");
    expect(b.response.incomplete_details).toEqual({ reason: "max_output_tokens" });
    expect((b.response.output[0] as { status: string }).status).toBe("incomplete");
    expect(b.response.usage?.total_tokens).toBe(18);
  });

  it("error → a nested `error` event, then response.failed carrying {type, code, message}", () => {
    const { b, events } = run([text("partial "), text("answer"), { kind: "error", code: "APIError", message: "upstream failed" }]);
    expect(types(events).slice(-5)).toEqual([
      "response.output_text.done",
      "response.content_part.done",
      "response.output_item.done",
      "error",
      "response.failed",
    ]);
    const [error, failed] = events.slice(-2);
    expect(error).toEqual({ type: "error", sequence_number: error!.sequence_number, error: { type: "server_error", code: "APIError", message: "upstream failed", param: null } });
    const r = responseOf(failed);
    expect(r.status).toBe("failed");
    expect(r.error).toEqual({ type: "server_error", code: "APIError", message: "upstream failed" });
    // The unfinished message stays in the output, marked incomplete (reference §6).
    expect(r.output).toEqual([expect.objectContaining({ type: "message", status: "incomplete", content: [expect.objectContaining({ text: "partial answer", annotations: [] })] })]);
    expect(itemOf<MessageItem>(events.at(-3)).status).toBe("incomplete");
    expect(r).toEqual(b.response);
  });

  it("fail() takes the error type from the sidecar's own errors", () => {
    const b = newBuilder();
    b.start();
    const events = b.fail("rate_limit_exceeded", "slow down", "rate_limit_error");
    expect(types(events)).toEqual(["error", "response.failed"]);
    expect(events[0]!.error).toEqual({ type: "rate_limit_error", code: "rate_limit_exceeded", message: "slow down", param: null });
    expect(responseOf(events[1]).error).toEqual({ type: "rate_limit_error", code: "rate_limit_exceeded", message: "slow down" });
  });

  it("emits nothing after the end", () => {
    for (const ending of [FINISH, { kind: "error", code: "x", message: "y" } as TurnOutput]) {
      const { b } = run([text("hi"), ending]);
      const before = structuredClone(b.response);
      expect(b.push(text("more"))).toEqual([]);
      expect(b.push(reasoning("more"))).toEqual([]);
      expect(b.push(toolStart("late"))).toEqual([]);
      expect(b.push(toolEnd("late"))).toEqual([]);
      expect(b.push(FINISH)).toEqual([]);
      expect(b.push({ kind: "error", code: "x", message: "again" })).toEqual([]);
      expect(b.fail("x", "again")).toEqual([]);
      expect(b.cancel()).toEqual([]);
      expect(b.response).toEqual(before);
    }
  });

  it("cancel() → status cancelled, the open message closed and marked incomplete", () => {
    const b = newBuilder();
    b.start();
    b.push(text("half an ans"));
    const events = b.cancel();
    expect(types(events)).toEqual(["response.output_text.done", "response.content_part.done", "response.output_item.done"]);
    expect(events[0]).toMatchObject({ text: "half an ans" });
    expect(itemOf<MessageItem>(events[2]).status).toBe("incomplete");
    expect(b.response.status).toBe("cancelled");
    expect(b.response.output).toEqual([expect.objectContaining({ type: "message", status: "incomplete" })]);
    expect(b.response.completed_at).toEqual(expect.any(Number));
    expect(b.done).toBe(true);
    expect(b.push(text("ver"))).toEqual([]);
  });

  it("events hold snapshots: later pushes do not change earlier events", () => {
    const b = newBuilder();
    const [created] = b.start();
    const opened = b.push(text("one "));
    const frozen = structuredClone([created, ...opened]);
    const call = b.push(toolStart("c1"));
    const callFrozen = structuredClone(call);
    b.push(toolEnd("c1"));
    b.push(text("two"));
    const completed = b.push(FINISH).at(-1)!;
    expect([created, ...opened]).toEqual(frozen);
    expect(call).toEqual(callFrozen);
    expect(responseOf(created).output).toEqual([]);
    expect(responseOf(created).status).toBe("in_progress");
    expect(itemOf<MessageItem>(opened[0])).toMatchObject({ status: "in_progress", content: [] });
    expect(itemOf<McpCallItem>(call.find((e) => e.type === "response.output_item.added"))).toMatchObject({ status: "in_progress", arguments: "", output: null });
    // Nor does the final response object reach back into the completed event.
    const snapshot = structuredClone(responseOf(completed));
    (b.response.output[0] as MessageItem).content[0]!.text = "changed";
    b.response.output.push({ id: "rs_x", type: "reasoning", summary: [] });
    expect(responseOf(completed)).toEqual(snapshot);
  });
});

describe("ResponseBuilder: artifacts", () => {
  const artifact = (name: string, kind: "html" | "pdf"): Extract<TurnOutput, { kind: "artifacts" }>["items"][number] => ({
    name,
    path: `out/${name}`,
    kind,
    contentType: kind === "html" ? "text/html; charset=utf-8" : "application/pdf",
    size: 10,
    sha256: "a".repeat(64),
    token: `tok-${name}`,
  });
  const ARTIFACTS: TurnOutput = { kind: "artifacts", items: [artifact("page.html", "html"), artifact("r.pdf", "pdf")], more: 1 };

  it("appends the links to the message, each a url_citation announced by its own event", () => {
    const { b, events } = run([text("Done."), ARTIFACTS, FINISH]);
    const added = events.filter((e) => e.type === "response.output_text.annotation.added");
    expect(added.map((e) => e.annotation_index)).toEqual([0, 1]);
    const part = (b.response.output[0] as MessageItem).content[0]!;
    expect(part.text.startsWith("Done.\n\n**Files from this turn**\n")).toBe(true);
    expect(part.text).toContain("…and 1 more file from this turn");
    expect(part.annotations).toEqual(added.map((e) => e.annotation));
    for (const a of part.annotations) {
      expect(part.text.slice(a.start_index, a.end_index)).toBe(`[${a.title}](${a.url})`);
      expect(a.url).toBe(`http://sidecar.test/v1/artifacts/tok-${a.title.slice(4)}/${a.title.slice(4)}`);
    }
    // Annotations come after the text they point into, before the message closes.
    expect(indexOf(events, (e) => e.type === "response.output_text.delta" && String(e.delta).includes("Files"), "links")).toBeLessThan(
      indexOf(events, (e) => e.type === "response.output_text.annotation.added", "annotation"),
    );
  });

  it("after a tool run, the links open a message of their own", () => {
    const { b } = run([toolStart("c1"), toolEnd("c1"), ARTIFACTS, FINISH]);
    expect(b.response.output.map((o) => o.type)).toEqual(["mcp_call", "message"]);
    expect((b.response.output[1] as MessageItem).content[0]!.annotations).toHaveLength(2);
  });

  it("the SDK's accumulator rebuilds the annotations from the events alone", () => {
    const { b, events } = run([text("Done."), ARTIFACTS, FINISH]);
    let snapshot: ReturnType<typeof accumulateResponse> | undefined;
    for (const e of events.slice(0, -1)) snapshot = accumulateResponse(e as unknown as ResponseStreamEvent, snapshot);
    expect(snapshot!.output).toEqual(b.response.output);
  });
});

describe("ResponseBuilder: through the official openai SDK", () => {
  let server: Server | undefined;
  afterEach(async () => {
    await new Promise<void>((resolve) => (server ? server.close(() => resolve()) : resolve()));
    server = undefined;
  });

  /** Serves `events` as the sidecar does (SseWriter, `event:` lines) to one stream helper. */
  async function clientFor(events: StreamEvent[]): Promise<OpenAI> {
    const app = express();
    app.post("/v1/responses", (_req, res) => {
      const sse = new SseWriter(res, 60_000);
      sse.open();
      for (const e of events) sse.event(e.type, e);
      sse.close();
    });
    server = await new Promise<Server>((resolve) => {
      const s = app.listen(0, "127.0.0.1", () => resolve(s));
    });
    const { port } = server.address() as AddressInfo;
    return new OpenAI({ baseURL: `http://127.0.0.1:${port}/v1`, apiKey: "unused", maxRetries: 0 });
  }

  /** What the SDK adds on its own (output_text, output_parsed, `parsed` on text parts), taken off. */
  function withoutSdkFields(r: object): unknown {
    const { output_text: _t, output_parsed: _p, ...rest } = structuredClone(r) as Record<string, unknown> & { output: Array<Record<string, unknown>> };
    for (const item of rest.output as Array<Record<string, unknown>>) {
      if (item.type === "message") for (const part of item.content as Array<Record<string, unknown>>) delete part.parsed;
    }
    return rest;
  }

  it("responses.stream() rebuilds exactly the builder's final response", async () => {
    const { b, events } = run(FULL_TURN);
    const client = await clientFor(events);
    const stream = client.responses.stream({ model: "open-persona/build", input: "hi" });
    const seen: string[] = [];
    const snapshots: string[] = [];
    stream.on("response.output_text.delta", (e) => snapshots.push(e.snapshot));
    for await (const e of stream) seen.push(e.type);
    const final = await stream.finalResponse();
    expect(seen).toEqual(types(events));
    // The helper's running text of each part, from its own accumulation of the deltas.
    expect(snapshots).toEqual(["Let me ", "Let me look.", "Found ", "Found a.txt."]);
    expect(withoutSdkFields(final)).toEqual(b.response);
    expect(final.output_text).toBe("Let me look.Found a.txt.");
  });

  it("its accumulator rebuilds the final output from the item events alone", () => {
    const { b, events } = run(FULL_TURN);
    let snapshot: ReturnType<typeof accumulateResponse> | undefined;
    // Everything but response.completed (which would replace the snapshot wholesale).
    for (const e of events.slice(0, -1)) snapshot = accumulateResponse(e as unknown as ResponseStreamEvent, snapshot);
    expect(snapshot!.output).toEqual(b.response.output);
  });

  it("a failed turn makes the stream helper raise the error's message", async () => {
    const { events } = run([text("partial"), { kind: "error", code: "APIError", message: "upstream failed" }]);
    const client = await clientFor(events);
    const stream = client.responses.stream({ model: "open-persona/build", input: "hi" });
    await expect(stream.finalResponse()).rejects.toThrow(/upstream failed/);
    // The events before the error were accepted (no ordering error first).
    let snapshot: ReturnType<typeof accumulateResponse> | undefined;
    for (const e of events.filter((x) => x.type !== "error")) snapshot = accumulateResponse(e as unknown as ResponseStreamEvent, snapshot);
    expect(snapshot!.status).toBe("failed");
  });
});
