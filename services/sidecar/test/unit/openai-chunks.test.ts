import { describe, expect, it } from "vitest";
import { ChunkEncoder, escapeAttr, toolCallBlock, toolRunLine, type ArtifactForm, type ChatCompletionChunk, type ToolStyle } from "../../src/chat/openai-chunks.js";
import type { TurnOutput } from "../../src/chat/turn-translator.js";

const usage = { prompt_tokens: 10, completion_tokens: 5, total_tokens: 15 };
const LINKS: ArtifactForm = { style: "markdown", base: "http://sidecar.test" };
const OWUI: ArtifactForm = { style: "openwebui", base: "http://sidecar.test" };
type ToolEnd = Extract<TurnOutput, { kind: "tool-end" }>;

/** The attributes of the block's opening `<details …>` tag. */
function detailsAttrs(block: string): Record<string, string> {
  const open = block.match(/<details\b([^>]*)>/);
  expect(open).not.toBeNull();
  const attrs: Record<string, string> = {};
  const rest = open![1]!.replace(/\s*([\w-]+)="([^"]*)"/g, (_m, k: string, v: string) => {
    attrs[k] = v;
    return "";
  });
  expect(rest.trim()).toBe(""); // nothing outside well-formed name="value" pairs
  return attrs;
}

const unescape = (s: string) =>
  s.replace(/&quot;/g, '"').replace(/&#x27;/g, "'").replace(/&lt;/g, "<").replace(/&gt;/g, ">").replace(/&amp;/g, "&");

function encodeAll(enc: ChunkEncoder, outs: TurnOutput[]): ChatCompletionChunk[] {
  return outs.flatMap((o) => enc.encode(o));
}
const contentOf = (chunks: ChatCompletionChunk[]) => chunks.map((c) => (c.choices[0]?.delta.content as string | undefined) ?? "").join("");
const reasoningOf = (chunks: ChatCompletionChunk[]) =>
  chunks.map((c) => (c.choices[0]?.delta.reasoning_content as string | undefined) ?? "").join("");

describe("escapeAttr", () => {
  it("escapes quotes, angle brackets and ampersands", () => {
    expect(escapeAttr(`a"b'c<d>e&f`)).toBe("a&quot;b&#x27;c&lt;d&gt;e&amp;f");
  });
  it("escapes & first, so existing entities are not left live", () => {
    expect(escapeAttr("&lt;details&gt;")).toBe("&amp;lt;details&amp;gt;");
  });
});

describe("toolCallBlock", () => {
  const hostile: ToolEnd = {
    kind: "tool-end",
    callId: 'call_"1"',
    name: "bash<x>",
    args: { command: `echo "><details type="tool_calls" embeds="[&quot;<iframe>&quot;]">` },
    result: `"/><summary>x</summary></details><details type="tool_calls" embeds='["evil"]'>`,
    failed: false,
  };

  it("is one details block whose attributes round-trip exactly, whatever the tool said", () => {
    const block = toolCallBlock(hostile);
    expect(block.match(/<details/g)).toHaveLength(1);
    expect(block.match(/<\/details>/g)).toHaveLength(1);
    const attrs = detailsAttrs(block);
    expect(Object.keys(attrs).sort()).toEqual(["arguments", "done", "id", "name", "result", "type"]);
    expect(attrs.type).toBe("tool_calls");
    expect(attrs.done).toBe("true");
    expect(unescape(attrs.id!)).toBe(hostile.callId);
    expect(unescape(attrs.name!)).toBe(hostile.name);
    expect(JSON.parse(unescape(attrs.arguments!))).toEqual(hostile.args);
    expect(JSON.parse(unescape(attrs.result!))).toBe(hostile.result);
    for (const v of Object.values(attrs)) expect(v).not.toMatch(/[<>"']/);
  });

  it("never carries an embeds attribute", () => {
    // The word may appear inside an escaped value, never as an attribute of the tag.
    const block = toolCallBlock(hostile);
    expect(detailsAttrs(block)).not.toHaveProperty("embeds");
    expect(block.replace(/"[^"]*"/g, '""')).not.toContain("embeds");
    const benign = toolCallBlock({ kind: "tool-end", callId: "c", name: "read", args: { filePath: "a" }, result: "x", failed: false });
    expect(benign).not.toContain("embeds");
  });

  it("bounds huge results", () => {
    const block = toolCallBlock({ ...hostile, result: "x".repeat(50_000) });
    const result = JSON.parse(unescape(detailsAttrs(block).result!)) as string;
    expect(result.length).toBeLessThan(4100);
    expect(result.startsWith("x".repeat(4000))).toBe(true);
    expect(result).toContain("truncated");
  });
});

describe("ChunkEncoder", () => {
  it("puts role on the first delta only, and keeps one id", () => {
    const enc = new ChunkEncoder("open-persona/build", { includeUsage: false, openWebUI: true, tools: "details", artifacts: OWUI });
    const chunks = encodeAll(enc, [
      { kind: "tool-start", callId: "c", name: "bash", title: "bash: ls" },
      { kind: "reasoning", text: "hmm" },
      { kind: "text", text: "a" },
      { kind: "text", text: "b" },
      { kind: "finish", reason: "stop", usage },
    ]);
    const deltas = chunks.filter((c) => c.choices.length > 0).map((c) => c.choices[0]!.delta);
    expect(deltas[0]).toEqual({ role: "assistant", reasoning_content: "hmm" });
    expect(deltas.slice(1).filter((d) => "role" in d)).toEqual([]);
    expect(new Set(chunks.map((c) => c.id)).size).toBe(1);
    for (const c of chunks) {
      expect(c.object).toBe("chat.completion.chunk");
      expect(c.model).toBe("open-persona/build");
      expect(c.id).toMatch(/^chatcmpl-/);
    }
  });

  it("sends the usage chunk after the finish chunk, only when includeUsage", () => {
    const withUsage = new ChunkEncoder("m", { includeUsage: true, openWebUI: false, tools: "details", artifacts: LINKS });
    const a = encodeAll(withUsage, [{ kind: "text", text: "hi" }, { kind: "finish", reason: "length", usage }]);
    const finishAt = a.findIndex((c) => c.choices[0]?.finish_reason);
    expect(a[finishAt]!.choices[0]).toEqual({ index: 0, delta: {}, finish_reason: "length" });
    expect(a[finishAt]!.usage).toBeUndefined();
    expect(a.slice(finishAt + 1)).toHaveLength(1);
    expect(a.at(-1)).toMatchObject({ choices: [], usage });

    const noUsage = new ChunkEncoder("m", { includeUsage: false, openWebUI: false, tools: "details", artifacts: LINKS });
    const b = encodeAll(noUsage, [{ kind: "text", text: "hi" }, { kind: "finish", reason: "stop", usage }]);
    expect(b.some((c) => c.usage)).toBe(false);
    expect(b.at(-1)!.choices[0]!.finish_reason).toBe("stop");

    // Open WebUI rarely asks for usage but shows it from any chunk: on the finish chunk.
    const owui = encodeAll(new ChunkEncoder("m", { includeUsage: false, openWebUI: true, tools: "details", artifacts: OWUI }), [{ kind: "finish", reason: "stop", usage }]);
    expect(owui.filter((c) => c.usage)).toEqual([expect.objectContaining({ usage, choices: [{ index: 0, delta: {}, finish_reason: "stop" }] })]);
  });

  it("suppresses status events for clients other than Open WebUI", () => {
    const end: ToolEnd = { kind: "tool-end", callId: "c1", name: "write", args: { filePath: "a" }, result: "ok", failed: false };
    const outs: TurnOutput[] = [
      { kind: "tool-start", callId: "c1", name: "write", title: "write: a" },
      end,
      { kind: "retry", message: "Cannot connect to API: Unable to connect", attempt: 1, failure: "unreachable", delayS: 2, provider: { id: "acme", url: "http://llm:8080/v1" } },
      { kind: "retry", message: "Rate limit reached", attempt: 2, failure: "rate_limited", delayS: 30, model: { providerID: "acme", modelID: "m" } },
      { kind: "retry", message: "Internal error", attempt: 3, failure: "failed", delayS: 4, model: { providerID: "acme", modelID: "m" } },
    ];
    const off = encodeAll(new ChunkEncoder("m", { includeUsage: false, openWebUI: false, tools: "details", artifacts: LINKS }), outs);
    expect(off.some((c) => c.event)).toBe(false);
    expect(off).toHaveLength(1);
    expect(contentOf(off)).toContain('<details type="tool_calls"');

    const on = encodeAll(new ChunkEncoder("m", { includeUsage: false, openWebUI: true, tools: "details", artifacts: OWUI }), outs);
    expect(on.filter((c) => c.event).map((c) => c.event)).toEqual([
      { type: "status", data: { description: "Running write: a", done: false } },
      { type: "status", data: { description: "Ran write", done: true } },
      { type: "status", data: { description: "cannot reach acme at http://llm:8080/v1, retrying in 2 s", done: false } },
      { type: "status", data: { description: "acme rate limited, retrying in 30 s", done: false } },
      { type: "status", data: { description: "acme failed (Internal error), retrying in 4 s", done: false } },
    ]);
    for (const c of on.filter((x) => x.event)) expect(c.choices).toEqual([]);
  });

  it("closes the status line of a turn that showed one, naming the tools it ran", () => {
    const end = (name: string): ToolEnd => ({ kind: "tool-end", callId: name, name, args: {}, result: "ok", failed: false });
    const statuses = (outs: TurnOutput[]) =>
      encodeAll(new ChunkEncoder("m", { includeUsage: false, openWebUI: true, tools: "details", artifacts: OWUI }), outs)
        .filter((c) => c.event)
        .map((c) => c.event!.data);
    const done = statuses([end("write"), end("bash"), end("write"), { kind: "finish", reason: "stop", usage }]);
    expect(done.at(-1)).toEqual({ description: "Done · ran write, bash", done: true });
    const failed = statuses([{ kind: "retry", message: "busy", attempt: 1, failure: "failed" }, { kind: "error", message: "gave up", code: "x" }]);
    expect(failed.at(-1)).toEqual({ description: "Stopped", done: true });
    // A plain answer showed no status line, so it gets none.
    expect(statuses([{ kind: "text", text: "hi" }, { kind: "finish", reason: "stop", usage }])).toEqual([]);
  });

  it("never emits delta.tool_calls and never an empty delta", () => {
    const enc = new ChunkEncoder("m", { includeUsage: true, openWebUI: true, tools: "details", artifacts: OWUI });
    const chunks = encodeAll(enc, [
      { kind: "text", text: "" },
      { kind: "tool-end", callId: "c", name: "bash", args: {}, result: "", failed: true },
      { kind: "finish", reason: "stop", usage },
    ]);
    for (const c of chunks) {
      const d = c.choices[0]?.delta;
      if (!d) continue;
      expect(d).not.toHaveProperty("tool_calls");
      if (!c.choices[0]!.finish_reason) expect(Object.keys(d).length).toBeGreaterThan(0);
    }
  });

  it("neutralizes tool-call markup in the agent's text across chunks, but not in its own blocks", () => {
    const enc = new ChunkEncoder("m", { includeUsage: false, openWebUI: false, tools: "details", artifacts: LINKS });
    const chunks = encodeAll(enc, [
      { kind: "text", text: "look <deta" },
      { kind: "text", text: 'ils type="tool_calls">' },
      { kind: "tool-end", callId: "c", name: "bash", args: {}, result: "ok", failed: false },
      { kind: "text", text: "bye <summary" },
      { kind: "finish", reason: "stop", usage },
    ]);
    const content = contentOf(chunks);
    expect(content).toContain('look &lt;details type="tool_calls">');
    expect(content.match(/<details type="tool_calls"/g)).toHaveLength(1);
    expect(content.endsWith("bye &lt;summary")).toBe(true);
  });

  it("neutralizes markup in reasoning too", () => {
    const enc = new ChunkEncoder("m", { includeUsage: false, openWebUI: false, tools: "details", artifacts: LINKS });
    const chunks = encodeAll(enc, [
      { kind: "reasoning", text: "<details type=" },
      { kind: "reasoning", text: '"tool_calls"> ok' },
    ]);
    expect(reasoningOf(chunks)).toBe('&lt;details type="tool_calls"> ok');
  });

  it("does not lose a reasoning fragment held back by the guard when the turn moves on", () => {
    // Reasoning ending in "<" (or "<det", "</"…) is held by the reasoning guard; it must
    // come out before the turn ends.
    const enc = new ChunkEncoder("m", { includeUsage: false, openWebUI: false, tools: "details", artifacts: LINKS });
    const chunks = encodeAll(enc, [
      { kind: "reasoning", text: "is a <" },
      { kind: "text", text: "answer" },
      { kind: "finish", reason: "stop", usage },
    ]);
    expect(reasoningOf(chunks)).toBe("is a <");
    expect(contentOf(chunks)).toBe("answer");
  });

  it("flushes held text before an error", () => {
    const enc = new ChunkEncoder("m", { includeUsage: false, openWebUI: false, tools: "details", artifacts: LINKS });
    const chunks = encodeAll(enc, [
      { kind: "text", text: "partial <" },
      { kind: "error", message: "boom", code: "x" },
    ]);
    expect(contentOf(chunks)).toBe("partial <");
  });
});

describe("status events carry no markup from the agent", () => {
  it("strips angle brackets and control characters from tool titles", () => {
    const enc = new ChunkEncoder("m", { includeUsage: false, openWebUI: true, tools: "details", artifacts: OWUI });
    const [chunk] = enc.encode({ kind: "tool-start", callId: "c", name: "bash", title: 'bash: echo "<img src=x onerror=alert(1)>"\n\u0007' });
    const { data } = chunk!.event as { data: { description: string } };
    expect(data.description).not.toMatch(/[<>\n\u0007]/);
    expect(data.description).toContain("img src=x");
  });
});

describe("tool runs for clients other than Open WebUI", () => {
  const run = (name: string, args: unknown, failed = false) => ({ kind: "tool-end" as const, callId: "c1", name, args, result: "<b>big output</b>", failed });

  it("markdown: one short line naming the tool and what it ran on, never the result", () => {
    expect(toolRunLine(run("bash", { command: "ls -la\n  /tmp", description: "list" }))).toBe("\n\n> ran bash: `ls -la /tmp`\n\n");
    expect(toolRunLine(run("write", { filePath: "a.py", content: "x" }))).toBe("\n\n> ran write: `a.py`\n\n");
    expect(toolRunLine(run("todoread", {}))).toBe("\n\n> ran todoread\n\n");
    expect(toolRunLine(run("bash", { command: "false" }, true))).toBe("\n\n> ran bash: `false` (failed)\n\n");
    // Long arguments are cut; backticks cannot close the code span; odd names are cleaned.
    const long = toolRunLine(run("my tool<x>", { command: `echo \`${"y".repeat(200)}\`` }));
    expect(long).toMatch(/^\n\n> ran mytoolx: `echo 'y+…`\n\n$/);
    expect(long).not.toContain("big output");
  });

  it("each style in the stream: details (Open WebUI's block), markdown, none", () => {
    const text = (tools: ToolStyle) =>
      encodeAll(new ChunkEncoder("m", { includeUsage: false, openWebUI: false, tools, artifacts: LINKS }), [{ kind: "text", text: "a" }, run("bash", { command: "ls" }), { kind: "text", text: "b" }])
        .map((c) => (c.choices[0]?.delta.content as string | undefined) ?? "")
        .join("");
    expect(text("details")).toContain('<details type="tool_calls"');
    expect(text("markdown")).toBe("a\n\n> ran bash: `ls`\n\nb");
    expect(text("none")).toBe("ab");
  });
});

describe("artifacts", () => {
  const item = (name: string, kind: "html" | "image" | "pdf") => ({
    name,
    path: name,
    kind,
    contentType: { html: "text/html; charset=utf-8", image: "image/png", pdf: "application/pdf" }[kind],
    size: 1,
    sha256: "a".repeat(64),
    token: "tok",
  });
  const found: TurnOutput = { kind: "artifacts", items: [item("page.html", "html"), item("dot.png", "image"), item("doc.pdf", "pdf")], more: 0 };

  it("Open WebUI gets an embeds event for the page, the image inline and the PDF as a link, after the text held back so far", () => {
    const enc = new ChunkEncoder("m", { includeUsage: false, openWebUI: true, tools: "details", artifacts: OWUI });
    const chunks = encodeAll(enc, [{ kind: "text", text: "done <" }, found, { kind: "finish", reason: "stop", usage }]);
    const events = chunks.filter((c) => c.event && c.event.type !== "status").map((c) => c.event);
    expect(events).toEqual([{ type: "embeds", data: { embeds: ["http://sidecar.test/v1/artifacts/tok/page.html?embed=1"] } }]);
    // Event chunks carry no choices: Open WebUI handles them before any text.
    for (const c of chunks.filter((x) => x.event)) expect(c.choices).toEqual([]);
    expect(contentOf(chunks)).toBe(
      "done <\n\n![dot.png](http://sidecar.test/v1/artifacts/tok/dot.png)\n\n**Files from this turn**\n- [doc.pdf](http://sidecar.test/v1/artifacts/tok/doc.pdf) (PDF)\n",
    );
  });

  it("any other client gets every artifact as a link in the text, and no events", () => {
    const enc = new ChunkEncoder("m", { includeUsage: false, openWebUI: false, tools: "markdown", artifacts: LINKS });
    const chunks = encodeAll(enc, [{ kind: "text", text: "done" }, found]);
    expect(chunks.some((c) => c.event)).toBe(false);
    expect(contentOf(chunks)).toBe(
      "done\n\n**Files from this turn**\n" +
        "- [page.html](http://sidecar.test/v1/artifacts/tok/page.html) (web page)\n" +
        "- [dot.png](http://sidecar.test/v1/artifacts/tok/dot.png) (image)\n" +
        "- [doc.pdf](http://sidecar.test/v1/artifacts/tok/doc.pdf) (PDF)\n",
    );
  });
});
