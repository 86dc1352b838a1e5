/**
 * Builds one Response from a turn's outputs (chat/turn-translator.ts), as the ordered stream
 * of events the official SDKs expect and as the final object: every event carries its
 * `sequence_number`; a text or reasoning item is opened by `output_item.added` (and its part
 * by `content_part.added` / `reasoning_summary_part.added`) before its first delta and closed
 * by the matching `.done` events before the next item; a tool run is an `mcp_call` item; the
 * end is `response.completed` with the whole output and usage, or an `error` event followed
 * by `response.failed` (the pair every client raises on). No event outside OpenAI's
 * catalogue is ever sent: the openai SDK's stream helper throws on one.
 */
import { randomBytes } from "node:crypto";
import type { TurnOutput, Usage } from "../chat/turn-translator.js";
import { linksMarkdown } from "../artifacts/artifact-links.js";
import type { Artifact } from "../artifacts/artifact-service.js";
import type { McpCallItem, MessageItem, OutputItem, ReasoningItem, ResponseObject, StreamEvent, UrlCitation } from "./wire.js";

export interface ResponseInit {
  id: string;
  model: string;
  instructions?: string;
  metadata?: Record<string, string>;
  previousResponseId?: string;
  conversation?: string;
  background: boolean;
  /** How browsers reach the sidecar's artifact links (PUBLIC_BASE_URL or the request's origin). */
  linkBase: string;
}

export const newId = (prefix: string) => `${prefix}_${randomBytes(12).toString("hex")}`;

type Open = { kind: "message"; index: number; item: MessageItem } | { kind: "reasoning"; index: number; item: ReasoningItem };

export class ResponseBuilder {
  readonly response: ResponseObject;
  private seq = 0;
  private open?: Open;
  /** Tool runs by opencode's call id → their index in `output`. */
  private readonly tools = new Map<string, number>();

  private readonly linkBase: string;

  constructor(init: ResponseInit) {
    this.linkBase = init.linkBase;
    this.response = {
      id: init.id,
      object: "response",
      created_at: Math.floor(Date.now() / 1000),
      completed_at: null,
      status: "in_progress",
      model: init.model,
      output: [],
      usage: null,
      error: null,
      incomplete_details: null,
      instructions: init.instructions ?? null,
      metadata: init.metadata ?? {},
      previous_response_id: init.previousResponseId ?? null,
      conversation: init.conversation ? { id: init.conversation } : null,
      background: init.background,
      store: true,
      parallel_tool_calls: false,
      tool_choice: "auto",
      tools: [],
      temperature: null,
      top_p: null,
      text: { format: { type: "text" } },
      truncation: "disabled",
    };
  }

  /** `response.created` and `response.in_progress`. */
  start(): StreamEvent[] {
    return [this.event("response.created", { response: this.snapshot() }), this.event("response.in_progress", { response: this.snapshot() })];
  }

  /** Whether the response has reached a final state. */
  get done(): boolean {
    return this.response.status !== "in_progress";
  }

  push(o: TurnOutput): StreamEvent[] {
    if (this.done) return [];
    switch (o.kind) {
      case "text":
        return o.text ? [...this.ensureOpen("message"), this.textDelta(o.text)] : [];
      case "reasoning":
        return o.text ? [...this.ensureOpen("reasoning"), this.reasoningDelta(o.text)] : [];
      case "tool-start":
        return this.toolStarted(o.callId, o.name);
      case "tool-end":
        return this.toolEnded(o);
      case "retry":
        // Responses has no status line, and no custom event may be sent.
        return [];
      case "artifacts":
        return this.artifactLinks(o.items, o.more);
      case "finish":
        return this.finish(o.usage, o.reason);
      case "error":
        return this.fail(o.code, o.message);
    }
  }

  /** Ends the response as failed (the sidecar's own errors, e.g. a lost runner). */
  fail(code: string, message: string, type = "server_error"): StreamEvent[] {
    if (this.done) return [];
    // The message cut short stays in the output, marked unfinished (what OpenAI sends).
    const closing = this.closeOpen("incomplete");
    this.response.status = "failed";
    this.response.error = { type, code, message };
    this.response.completed_at = Math.floor(Date.now() / 1000);
    return [
      ...closing,
      this.event("error", { error: { type, code, message, param: null } }),
      this.event("response.failed", { response: this.snapshot() }),
    ];
  }

  /** Ends the response as cancelled (`POST …/cancel`, or the client left). */
  cancel(): StreamEvent[] {
    if (this.done) return [];
    const closing = this.closeOpen("incomplete");
    this.response.status = "cancelled";
    this.response.completed_at = Math.floor(Date.now() / 1000);
    return closing;
  }

  /** `length`: the model hit its output limit — `response.incomplete`, as OpenAI ends it. */
  private finish(usage: Usage, reason: "stop" | "length"): StreamEvent[] {
    const cut = reason === "length";
    const closing = this.closeOpen(cut ? "incomplete" : "completed");
    this.response.status = cut ? "incomplete" : "completed";
    if (cut) this.response.incomplete_details = { reason: "max_output_tokens" };
    this.response.completed_at = Math.floor(Date.now() / 1000);
    this.response.usage = {
      input_tokens: usage.prompt_tokens,
      input_tokens_details: { cached_tokens: 0 },
      output_tokens: usage.completion_tokens,
      output_tokens_details: { reasoning_tokens: 0 },
      total_tokens: usage.total_tokens,
    };
    return [...closing, this.event(cut ? "response.incomplete" : "response.completed", { response: this.snapshot() })];
  }

  private ensureOpen(kind: Open["kind"]): StreamEvent[] {
    if (this.open?.kind === kind) return [];
    const events = this.closeOpen();
    const index = this.response.output.length;
    if (kind === "message") {
      const item: MessageItem = { id: newId("msg"), type: "message", role: "assistant", status: "in_progress", content: [] };
      this.response.output.push(item);
      this.open = { kind, index, item };
      events.push(
        this.event("response.output_item.added", { output_index: index, item: clone(item) }),
        this.event("response.content_part.added", { item_id: item.id, output_index: index, content_index: 0, part: textPart("") }),
      );
      item.content.push(textPart(""));
    } else {
      const item: ReasoningItem = { id: newId("rs"), type: "reasoning", summary: [] };
      this.response.output.push(item);
      this.open = { kind, index, item };
      events.push(
        this.event("response.output_item.added", { output_index: index, item: clone(item) }),
        this.event("response.reasoning_summary_part.added", { item_id: item.id, output_index: index, summary_index: 0, part: { type: "summary_text", text: "" } }),
      );
      item.summary.push({ type: "summary_text", text: "" });
    }
    return events;
  }

  private textDelta(delta: string): StreamEvent {
    const open = this.open as Extract<Open, { kind: "message" }>;
    open.item.content[0]!.text += delta;
    return this.event("response.output_text.delta", { item_id: open.item.id, output_index: open.index, content_index: 0, delta, logprobs: [] });
  }

  private reasoningDelta(delta: string): StreamEvent {
    const open = this.open as Extract<Open, { kind: "reasoning" }>;
    open.item.summary[0]!.text += delta;
    return this.event("response.reasoning_summary_text.delta", { item_id: open.item.id, output_index: open.index, summary_index: 0, delta });
  }

  /** Closes the text or reasoning item being written, if any. */
  private closeOpen(status: MessageItem["status"] = "completed"): StreamEvent[] {
    const open = this.open;
    if (!open) return [];
    this.open = undefined;
    const { index, item } = open;
    if (open.kind === "message") {
      const part = open.item.content[0]!;
      open.item.status = status;
      return [
        this.event("response.output_text.done", { item_id: item.id, output_index: index, content_index: 0, text: part.text, logprobs: [] }),
        this.event("response.content_part.done", { item_id: item.id, output_index: index, content_index: 0, part: clone(part) }),
        this.event("response.output_item.done", { output_index: index, item: clone(item) }),
      ];
    }
    const part = open.item.summary[0]!;
    return [
      this.event("response.reasoning_summary_text.done", { item_id: item.id, output_index: index, summary_index: 0, text: part.text }),
      this.event("response.reasoning_summary_part.done", { item_id: item.id, output_index: index, summary_index: 0, part: clone(part) }),
      this.event("response.output_item.done", { output_index: index, item: clone(item) }),
    ];
  }

  /** The turn's artifacts: a list of links at the end of the message, each a `url_citation`. */
  private artifactLinks(items: Artifact[], more: number): StreamEvent[] {
    const { text, links } = linksMarkdown(items, more, this.linkBase);
    if (!text) return [];
    const events = this.ensureOpen("message");
    const { index, item } = this.open as Extract<Open, { kind: "message" }>;
    const part = item.content[0]!;
    const offset = part.text.length;
    events.push(this.textDelta(text));
    for (const l of links) {
      const annotation: UrlCitation = { type: "url_citation", url: l.url, title: l.title, start_index: offset + l.start, end_index: offset + l.end };
      part.annotations.push(annotation);
      events.push(
        this.event("response.output_text.annotation.added", {
          item_id: item.id,
          output_index: index,
          content_index: 0,
          annotation_index: part.annotations.length - 1,
          annotation: clone(annotation),
        }),
      );
    }
    return events;
  }

  private toolStarted(callId: string, name: string): StreamEvent[] {
    if (this.tools.has(callId)) return [];
    const events = this.closeOpen();
    const index = this.response.output.length;
    const item: McpCallItem = {
      id: newId("mcp"),
      type: "mcp_call",
      server_label: "opencode",
      name,
      arguments: "",
      output: null,
      error: null,
      approval_request_id: null,
      status: "in_progress",
    };
    this.response.output.push(item);
    this.tools.set(callId, index);
    events.push(this.event("response.output_item.added", { output_index: index, item: clone(item) }), this.event("response.mcp_call.in_progress", { item_id: item.id, output_index: index }));
    return events;
  }

  private toolEnded(o: Extract<TurnOutput, { kind: "tool-end" }>): StreamEvent[] {
    const events = this.toolStarted(o.callId, o.name);
    const index = this.tools.get(o.callId)!;
    const item = this.response.output[index] as McpCallItem;
    item.arguments = JSON.stringify(o.args && typeof o.args === "object" ? o.args : {});
    if (o.failed) {
      item.status = "failed";
      item.error = { type: "mcp_tool_execution_error", content: [{ type: "text", text: o.result }] };
    } else {
      item.status = "completed";
      item.output = o.result;
    }
    events.push(
      this.event("response.mcp_call_arguments.done", { item_id: item.id, output_index: index, arguments: item.arguments }),
      this.event(o.failed ? "response.mcp_call.failed" : "response.mcp_call.completed", { item_id: item.id, output_index: index }),
      this.event("response.output_item.done", { output_index: index, item: clone(item) }),
    );
    return events;
  }

  private snapshot(): ResponseObject {
    return clone(this.response);
  }

  private event(type: string, body: Record<string, unknown>): StreamEvent {
    return { type, sequence_number: this.seq++, ...body };
  }
}

function textPart(text: string): MessageItem["content"][number] {
  return { type: "output_text", text, annotations: [], logprobs: [] };
}

/** Events carry the item as it was then; later changes must not reach back into them. */
function clone<T>(v: T): T {
  return structuredClone(v);
}

export type { OutputItem };
