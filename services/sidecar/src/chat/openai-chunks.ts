/**
 * Encodes turn outputs as OpenAI `chat.completion.chunk` objects: text → `delta.content`,
 * reasoning → `delta.reasoning_content`, a finished tool → text in content in the caller's
 * `ToolStyle` (Open WebUI's `<details type="tool_calls">` block, a markdown line, or
 * nothing), a running tool → a status event chunk (Open WebUI only), the turn's artifacts →
 * Open WebUI's `embeds` event and inline images, or a list of links (artifacts/artifact-links.ts). Never
 * `delta.tool_calls`: a client would try to execute the agent's tools itself.
 */
import { randomUUID } from "node:crypto";
import { linksMarkdown, openWebUIArtifacts, type OpenWebUIArtifactEvent } from "../artifacts/artifact-links.js";
import { MarkupGuard } from "./markup-guard.js";
import { retryStatus } from "./provider-failure.js";
import type { TurnOutput, Usage } from "./turn-translator.js";

export interface ChatCompletionChunk {
  id: string;
  object: "chat.completion.chunk";
  created: number;
  model: string;
  choices: Array<{ index: 0; delta: Record<string, unknown>; finish_reason: string | null }>;
  usage?: Usage;
  /** Open WebUI extension, handled before `choices`: the status line, or what to render under the message. */
  event?: { type: "status"; data: { description: string; done: boolean } } | OpenWebUIArtifactEvent;
}

/**
 * How artifacts show: `openwebui` as the events it renders under the message, `markdown` as
 * a list of links at the end of the answer. `base` is how browsers reach the sidecar.
 */
export interface ArtifactForm {
  style: "openwebui" | "markdown";
  base: string;
}

/**
 * How a finished tool run shows in the answer's text: `details` is the block Open WebUI
 * renders as a tool card (raw HTML to anyone else), `markdown` one short readable line,
 * `none` nothing.
 */
export type ToolStyle = "details" | "markdown" | "none";
export const TOOL_STYLES: readonly ToolStyle[] = ["details", "markdown", "none"];

type ToolEnd = Extract<TurnOutput, { kind: "tool-end" }>;

export function toolRunText(o: ToolEnd, style: ToolStyle): string {
  if (style === "details") return toolCallBlock(o);
  return style === "markdown" ? toolRunLine(o) : "";
}

/** Arguments that say best what a tool run was about, most telling first. */
const SUBJECT_ARGS = ["command", "filePath", "path", "pattern", "url", "query", "description"];

/** One markdown line per tool run: "> ran bash: `ls -la`", and whether it failed. */
export function toolRunLine(o: ToolEnd): string {
  const name = o.name.replace(/[^\w.-]/g, "") || "tool";
  const args = (o.args && typeof o.args === "object" ? o.args : {}) as Record<string, unknown>;
  const value = SUBJECT_ARGS.map((k) => args[k]).find((v): v is string => typeof v === "string" && v.trim() !== "");
  const json = JSON.stringify(args);
  const subject = oneLine(value ?? (json === "{}" ? "" : json));
  return `\n\n> ran ${name}${subject ? `: \`${subject}\`` : ""}${o.failed ? " (failed)" : ""}\n\n`;
}

/** Short, on one line, and unable to close its code span. */
function oneLine(s: string): string {
  const t = s.replace(/\s+/g, " ").replace(/`/g, "'").trim();
  return t.length > 80 ? `${t.slice(0, 79)}…` : t;
}

/** Tool results can be huge (file dumps): the block carries a bounded preview. */
const RESULT_PREVIEW_CHARS = 4000;

export function escapeAttr(s: string): string {
  return s.replace(/&/g, "&amp;").replace(/"/g, "&quot;").replace(/'/g, "&#x27;").replace(/</g, "&lt;").replace(/>/g, "&gt;");
}

/** The block Open WebUI itself writes for an executed tool (no `embeds`, ever). */
export function toolCallBlock(o: ToolEnd): string {
  const result = o.result.length > RESULT_PREVIEW_CHARS ? `${o.result.slice(0, RESULT_PREVIEW_CHARS)}\n… (truncated)` : o.result;
  return (
    `\n<details type="tool_calls" done="true" id="${escapeAttr(o.callId)}" name="${escapeAttr(o.name)}" ` +
    `arguments="${escapeAttr(JSON.stringify(o.args))}" result="${escapeAttr(JSON.stringify(result))}">\n` +
    `<summary>Tool Executed</summary>\n</details>\n`
  );
}

export class ChunkEncoder {
  readonly id = `chatcmpl-${randomUUID()}`;
  private readonly created = Math.floor(Date.now() / 1000);
  private sentRole = false;
  private statusSent = false;
  private readonly toolsRun: string[] = [];
  private readonly textGuard = new MarkupGuard();
  private readonly reasoningGuard = new MarkupGuard();

  constructor(
    private readonly model: string,
    private readonly opts: {
      /** `stream_options.include_usage`: a final `choices: []` chunk with usage, as OpenAI does. */
      includeUsage: boolean;
      /**
       * The caller is Open WebUI (or a client that renders like it): status events, and usage
       * on the finishing chunk even unasked — Open WebUI asks only for models an admin marked
       * with the Usage capability, but shows usage from any chunk.
       */
      openWebUI: boolean;
      /** How finished tool runs show in the text. */
      tools: ToolStyle;
      artifacts: ArtifactForm;
    },
  ) {}

  /** Chunks for one output; `error` outputs are not chunks (see sse-writer). */
  encode(o: TurnOutput): ChatCompletionChunk[] {
    // Reasoning ended: release any fragment its guard held back before what follows.
    if (o.kind === "reasoning") return this.delta({ reasoning_content: this.reasoningGuard.push(o.text) });
    const held = this.reasoningGuard.flush();
    return held ? [...this.delta({ reasoning_content: held }), ...this.encodeOther(o)] : this.encodeOther(o);
  }

  private encodeOther(o: Exclude<TurnOutput, { kind: "reasoning" }>): ChatCompletionChunk[] {
    switch (o.kind) {
      case "text":
        return this.delta({ content: this.textGuard.push(o.text) });
      case "tool-start":
        return this.status(`Running ${o.title}`, false);
      case "tool-end":
        this.toolsRun.push(o.name);
        return [...this.delta({ content: this.textGuard.flush() + toolRunText(o, this.opts.tools) }), ...this.status(`Ran ${o.name}`, true)];
      case "retry":
        return this.status(retryStatus(o.failure, o.provider, o.model, o.message, o.delayS), false);
      case "artifacts": {
        const flushed = this.delta({ content: this.textGuard.flush() });
        if (this.opts.artifacts.style === "markdown") return [...flushed, ...this.delta({ content: linksMarkdown(o.items, o.more, this.opts.artifacts.base).text })];
        const { events, text } = openWebUIArtifacts(o, this.opts.artifacts.base);
        return [...flushed, ...events.map((event) => ({ ...this.chunk([]), event })), ...this.delta({ content: text })];
      }
      case "finish": {
        const finish = this.chunk([{ index: 0, delta: {}, finish_reason: o.reason }]);
        if (this.opts.openWebUI && !this.opts.includeUsage) finish.usage = o.usage;
        const out = [...this.delta({ content: this.textGuard.flush() }), ...this.closingStatus("Done"), finish];
        if (this.opts.includeUsage) out.push({ ...this.chunk([]), usage: o.usage });
        return out;
      }
      case "error":
        return [...this.delta({ content: this.textGuard.flush() }), ...this.closingStatus("Stopped")];
    }
  }

  private delta(delta: Record<string, string>): ChatCompletionChunk[] {
    if (Object.values(delta).every((v) => v === "")) return [];
    if (!this.sentRole) {
      this.sentRole = true;
      delta = { role: "assistant", ...delta };
    }
    return [this.chunk([{ index: 0, delta, finish_reason: null }])];
  }

  /**
   * Open WebUI keeps showing the last status above a finished message: after a turn that
   * showed any, a last one that reads as finished ("Done · ran write, bash").
   */
  private closingStatus(verb: string): ChatCompletionChunk[] {
    if (!this.statusSent) return [];
    const names = [...new Set(this.toolsRun)];
    const ran = names.length ? ` · ran ${names.slice(0, 6).join(", ")}${names.length > 6 ? ", …" : ""}` : "";
    return this.status(`${verb}${ran}`, true);
  }

  private status(description: string, done: boolean): ChatCompletionChunk[] {
    if (!this.opts.openWebUI) return [];
    this.statusSent = true;
    // The description carries agent-chosen text (commands, paths): no markup, no control
    // characters, bounded length.
    const safe = description.replace(/[<>\u0000-\u001f\u007f]/g, " ").slice(0, 200);
    return [{ ...this.chunk([]), event: { type: "status", data: { description: safe, done } } }];
  }

  private chunk(choices: ChatCompletionChunk["choices"]): ChatCompletionChunk {
    return { id: this.id, object: "chat.completion.chunk", created: this.created, model: this.model, choices };
  }
}
