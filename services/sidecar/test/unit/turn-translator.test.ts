/**
 * TurnTranslator driven by real opencode event streams, recorded from `opencode serve`
 * against the scripted model (see test/fixtures/recorded/record.ts), replayed through
 * `parseEvent` exactly as the event hub would.
 */
import fs from "node:fs";
import { fileURLToPath } from "node:url";
import { describe, expect, it } from "vitest";
import { TurnTranslator, type TurnOutput } from "../../src/chat/turn-translator.js";
import { parseEvent, type OpencodeEvent } from "../../src/opencode/events.js";

type Scenario = "write-tool" | "reasoning" | "slow-text" | "fail-400";

interface Recording {
  raw: any[];
  events: OpencodeEvent[];
  sessionId: string;
}

function load(name: Scenario): Recording {
  const file = fileURLToPath(new URL(`../fixtures/recorded/${name}.jsonl`, import.meta.url));
  const raw = fs
    .readFileSync(file, "utf8")
    .split("\n")
    .filter((l) => l.trim())
    .map((l) => JSON.parse(l));
  const events = raw.map((j) => parseEvent(j).event);
  const status = events.find((e) => e.type === "session.status") as Extract<OpencodeEvent, { type: "session.status" }>;
  return { raw, events, sessionId: status.sessionID };
}

function replay(sessionId: string, events: OpencodeEvent[]): { outputs: TurnOutput[]; translator: TurnTranslator } {
  const translator = new TurnTranslator(sessionId);
  const outputs: TurnOutput[] = [];
  for (const e of events) outputs.push(...translator.handle(e));
  return { outputs, translator };
}

const textOf = (outs: TurnOutput[], kind: "text" | "reasoning") =>
  outs
    .filter((o): o is Extract<TurnOutput, { kind: "text" | "reasoning" }> => o.kind === kind)
    .map((o) => o.text)
    .join("");
const ofKind = <K extends TurnOutput["kind"]>(outs: TurnOutput[], kind: K) =>
  outs.filter((o): o is Extract<TurnOutput, { kind: K }> => o.kind === kind);

/** The usage the recording's step-finish parts add up to (computed from the raw JSON). */
function expectedUsage(rec: Recording) {
  let prompt = 0;
  let completion = 0;
  let steps = 0;
  for (const j of rec.raw) {
    const part = j.payload?.properties?.part;
    if (j.payload?.type !== "message.part.updated" || part?.type !== "step-finish" || part.sessionID !== rec.sessionId) continue;
    steps++;
    prompt += part.tokens.input + part.tokens.cache.read + part.tokens.cache.write;
    completion += part.tokens.output + part.tokens.reasoning;
  }
  return { steps, usage: { prompt_tokens: prompt, completion_tokens: completion, total_tokens: prompt + completion } };
}

/** Raw user-message text of the recording (the scripted prompt). */
function userPromptText(rec: Recording): string {
  const userMsg = rec.raw.find((j) => j.payload?.type === "message.updated" && j.payload.properties.info.role === "user");
  const id = userMsg.payload.properties.info.id;
  const part = rec.raw.find((j) => j.payload?.type === "message.part.updated" && j.payload.properties.part.messageID === id);
  return part.payload.properties.part.text as string;
}

describe("recordings", () => {
  it.each(["write-tool", "reasoning", "slow-text", "fail-400"] as const)("%s is a real opencode stream of one session", (name) => {
    const rec = load(name);
    expect(rec.sessionId).toMatch(/^ses_/);
    expect(rec.events[0]).toEqual({ type: "server.connected" });
    // Every recorded event is either a server event or belongs to the recorded session.
    for (const j of rec.raw) {
      const p = j.payload.properties;
      const sid = p.sessionID ?? p.info?.sessionID ?? p.part?.sessionID;
      if (!String(j.payload.type).startsWith("server.")) expect(sid).toBe(rec.sessionId);
    }
    expect(rec.events.some((e) => e.type === "session.idle")).toBe(true);
  });
});

describe("write tool turn (recorded)", () => {
  const rec = load("write-tool");
  const { outputs, translator } = replay(rec.sessionId, rec.events);

  it("reports the tool once as started and once as ended, with its args and result", () => {
    const starts = ofKind(outputs, "tool-start");
    const ends = ofKind(outputs, "tool-end");
    expect(starts).toEqual([{ kind: "tool-start", callId: "call_1", name: "write", title: "write: notes/hello.txt" }]);
    expect(ends).toEqual([
      {
        kind: "tool-end",
        callId: "call_1",
        name: "write",
        args: { filePath: "notes/hello.txt", content: "hello from the recording\n" },
        result: "Wrote file successfully.",
        failed: false,
      },
    ]);
    expect(outputs.indexOf(starts[0]!)).toBeLessThan(outputs.indexOf(ends[0]!));
  });

  it("streams the text of the step after the tool, exactly", () => {
    expect(textOf(outputs, "text")).toBe("wrote notes/hello.txt");
    const firstText = outputs.findIndex((o) => o.kind === "text");
    expect(firstText).toBeGreaterThan(outputs.findIndex((o) => o.kind === "tool-end"));
    expect(ofKind(outputs, "reasoning")).toEqual([]);
  });

  it("finishes with stop and the usage summed over both steps", () => {
    const { steps, usage } = expectedUsage(rec);
    expect(steps).toBe(2);
    // The scripted model reports 100 + messages prompt tokens and 7 completion tokens per call.
    expect(usage.completion_tokens).toBe(14);
    expect(outputs.at(-1)).toEqual({ kind: "finish", reason: "stop", usage });
    expect(ofKind(outputs, "finish")).toHaveLength(1);
    expect(ofKind(outputs, "error")).toEqual([]);
    expect(translator.done).toBe(true);
    expect(translator.usage()).toEqual(usage);
  });

  it("never repeats the user's own message", () => {
    const prompt = userPromptText(rec);
    expect(prompt).toContain("SCRIPT:");
    for (const o of outputs) if ("text" in o) expect(o.text).not.toContain("SCRIPT:");
  });

  it("reports a tool that failed as a failed tool-end with the error", () => {
    const events = rec.raw.map((j) => {
      const part = j.payload?.properties?.part;
      if (part?.type === "tool" && part.state.status === "completed") {
        const copy = structuredClone(j);
        const st = copy.payload.properties.part.state;
        st.status = "error";
        st.error = "Error: permission denied";
        delete st.output;
        return parseEvent(copy).event;
      }
      return parseEvent(j).event;
    });
    const { outputs: outs } = replay(rec.sessionId, events);
    expect(ofKind(outs, "tool-start")).toHaveLength(1);
    expect(ofKind(outs, "tool-end")).toEqual([
      expect.objectContaining({ callId: "call_1", failed: true, result: "Error: permission denied" }),
    ]);
  });
});

describe("reasoning turn (recorded)", () => {
  const rec = load("reasoning");
  const { outputs } = replay(rec.sessionId, rec.events);

  it("keeps reasoning and text apart, each reassembled exactly", () => {
    expect(textOf(outputs, "reasoning")).toBe("first I think about it ");
    expect(textOf(outputs, "text")).toBe("the answer is 42");
    // Streamed token by token, not only as the final full part.
    expect(ofKind(outputs, "reasoning").length).toBeGreaterThanOrEqual(5);
    const lastReasoning = outputs.map((o) => o.kind).lastIndexOf("reasoning");
    expect(lastReasoning).toBeLessThan(outputs.findIndex((o) => o.kind === "text"));
  });

  it("finishes with the recorded usage and no tools", () => {
    expect(outputs.at(-1)).toEqual({ kind: "finish", reason: "stop", usage: expectedUsage(rec).usage });
    expect(ofKind(outputs, "tool-start")).toEqual([]);
  });

  it("reports finish_reason length when a step ended on the token limit", () => {
    const events = rec.raw.map((j) => {
      if (j.payload?.properties?.part?.type !== "step-finish") return parseEvent(j).event;
      const copy = structuredClone(j);
      copy.payload.properties.part.reason = "length";
      return parseEvent(copy).event;
    });
    expect(replay(rec.sessionId, events).outputs.at(-1)).toMatchObject({ kind: "finish", reason: "length" });
  });
});

describe("slow text turn (recorded)", () => {
  const rec = load("slow-text");

  it("yields every delta as it comes and reassembles the text exactly", () => {
    const { outputs } = replay(rec.sessionId, rec.events);
    expect(ofKind(outputs, "text").map((o) => o.text)).toEqual(["tok ", "tok ", "tok ", "tok ", "tok "]);
    expect(outputs.at(-1)).toEqual({ kind: "finish", reason: "stop", usage: expectedUsage(rec).usage });
  });

  it("does not repeat text when full-text part updates arrive again", () => {
    const events = rec.events.flatMap((e) =>
      e.type === "message.part.updated" && e.part.type === "text" && e.part.text ? [e, e, structuredClone(e)] : [e],
    );
    expect(events.length).toBeGreaterThan(rec.events.length);
    expect(textOf(replay(rec.sessionId, events).outputs, "text")).toBe("tok tok tok tok tok ");
  });

  it("takes the text from full part updates when deltas are missing", () => {
    const events = rec.events.filter((e) => e.type !== "message.part.delta");
    const { outputs } = replay(rec.sessionId, events);
    expect(ofKind(outputs, "text")).toEqual([{ kind: "text", text: "tok tok tok tok tok " }]);
  });

  it("catches up from a full update when some deltas were lost", () => {
    let seen = 0;
    const events = rec.events.filter((e) => e.type !== "message.part.delta" || ++seen <= 2);
    const { outputs } = replay(rec.sessionId, events);
    expect(ofKind(outputs, "text").map((o) => o.text)).toEqual(["tok ", "tok ", "tok tok tok "]);
  });

  it("ignores events of other sessions interleaved in the stream", () => {
    const other = load("reasoning");
    const mixed: OpencodeEvent[] = [];
    for (let i = 0; i < Math.max(rec.events.length, other.events.length); i++) {
      if (other.events[i]) mixed.push(other.events[i]!);
      if (rec.events[i]) mixed.push(rec.events[i]!);
    }
    const alone = replay(rec.sessionId, rec.events).outputs;
    const { outputs } = replay(rec.sessionId, mixed);
    expect(outputs).toEqual(alone);
    expect(textOf(outputs, "reasoning")).toBe("");
    expect(textOf(outputs, "text")).toBe("tok tok tok tok tok ");
  });

  it("ignores the parts of the user's message", () => {
    const t = new TurnTranslator(rec.sessionId);
    const userEvents = rec.raw
      .filter((j) => j.payload?.type === "message.updated" && j.payload.properties.info.role === "user")
      .map((j) => parseEvent(j).event);
    const userPartEvents = rec.raw
      .filter((j) => j.payload?.type === "message.part.updated" && String(j.payload.properties.part.text ?? "").includes("SCRIPT:"))
      .map((j) => parseEvent(j).event);
    expect(userPartEvents.length).toBeGreaterThan(0);
    for (const e of [...userEvents, ...userPartEvents]) expect(t.handle(e)).toEqual([]);
  });

  it("does not end the turn at a session.idle that arrives before busy", () => {
    const idle = rec.events.find((e) => e.type === "session.idle")!;
    const statusIdle = rec.events.find((e) => e.type === "session.status" && e.status.type === "idle")!;
    const t = new TurnTranslator(rec.sessionId);
    expect(t.handle(statusIdle)).toEqual([]);
    expect(t.handle(idle)).toEqual([]);
    expect(t.done).toBe(false);
    const outputs = rec.events.flatMap((e) => t.handle(e));
    expect(textOf(outputs, "text")).toBe("tok tok tok tok tok ");
    expect(ofKind(outputs, "finish")).toHaveLength(1);
    expect(t.done).toBe(true);
  });

  it("ends an idle-before-busy turn when the prompt was accepted (promptSent)", () => {
    const idle = rec.events.find((e) => e.type === "session.idle")!;
    const t = new TurnTranslator(rec.sessionId);
    t.promptSent();
    expect(t.handle(idle)).toMatchObject([{ kind: "finish" }]);
  });

  it("ends with one error when the event stream is lost mid-turn", () => {
    const cut = rec.events.findIndex((e) => e.type === "message.part.delta") + 2;
    const t = new TurnTranslator(rec.sessionId);
    const outputs = rec.events.slice(0, cut).flatMap((e) => t.handle(e));
    const lost = t.handle({ type: "stream.lost", reason: "event stream ended", final: true });
    expect(lost).toEqual([{ kind: "error", message: "Lost the connection to the agent runner", code: "runner_lost" }]);
    expect(textOf(outputs, "text")).toBe("tok tok ");
    expect(t.done).toBe(true);
    // Nothing after the end, not even the rest of the turn.
    expect(rec.events.slice(cut).flatMap((e) => t.handle(e))).toEqual([]);
  });

  it("passes on provider retries, classified, with the delay and the model", () => {
    const t = new TurnTranslator(rec.sessionId);
    t.handle({ type: "message.updated", sessionID: rec.sessionId, info: { id: "msg_a", sessionID: rec.sessionId, role: "assistant", providerID: "acme", modelID: "m1" } });
    const next = Date.now() + 3000;
    const out = t.handle({ type: "session.status", sessionID: rec.sessionId, status: { type: "retry", attempt: 2, message: "Rate limit reached for requests", next } });
    expect(out).toEqual([
      { kind: "retry", message: "Rate limit reached for requests", attempt: 2, failure: "rate_limited", delayS: 3, model: { providerID: "acme", modelID: "m1" } },
    ]);
    const refused = t.handle({ type: "session.status", sessionID: rec.sessionId, status: { type: "retry", attempt: 3, message: "Cannot connect to API: Unable to connect. Is the computer able to access the url?" } });
    expect(refused).toMatchObject([{ failure: "unreachable" }]);
    expect(t.handle({ type: "session.status", sessionID: "ses_other", status: { type: "retry", attempt: 1, message: "x" } })).toEqual([]);
    expect(t.done).toBe(false);
  });

  it("reports a provider's final error naming provider and model; a 429 as rate_limit_exceeded with Retry-After", () => {
    const t = new TurnTranslator(rec.sessionId, false);
    t.handle({ type: "message.updated", sessionID: rec.sessionId, info: { id: "msg_a", sessionID: rec.sessionId, role: "assistant", providerID: "opencode", modelID: "big-pickle" } });
    const out = t.handle({
      type: "session.error",
      sessionID: rec.sessionId,
      error: { name: "APIError", data: { message: "slow down", statusCode: 429, isRetryable: true, responseHeaders: { "retry-after": "7" } } },
    });
    expect(out).toEqual([{ kind: "error", code: "rate_limit_exceeded", retryAfterS: 7, message: expect.stringContaining("opencode/big-pickle") }]);
    expect((out[0] as { message: string }).message).toContain("Choosing a model");

    const auth = new TurnTranslator(rec.sessionId);
    auth.handle({ type: "message.updated", sessionID: rec.sessionId, info: { id: "msg_b", sessionID: rec.sessionId, role: "assistant", providerID: "acme", modelID: "m1" } });
    const denied = auth.handle({ type: "session.error", sessionID: rec.sessionId, error: { name: "APIError", data: { message: "Incorrect API key", statusCode: 401 } } });
    expect(denied).toEqual([{ kind: "error", code: "provider_error", message: "The model provider acme failed with HTTP 401 (model acme/m1): Incorrect API key." }]);
  });
});

describe("failing turn (recorded)", () => {
  const rec = load("fail-400");
  const { outputs, translator } = replay(rec.sessionId, rec.events);

  it("yields exactly one error with the provider's message, and nothing else", () => {
    expect(outputs).toEqual([{ kind: "error", message: "The model provider scripted failed with HTTP 400 (model scripted/m1): nope.", code: "provider_error" }]);
    expect(translator.done).toBe(true);
  });

  it("the recording has the late events the translator must ignore", () => {
    // opencode sends idle twice and re-sends the errored message after the first idle.
    expect(rec.events.filter((e) => e.type === "session.idle")).toHaveLength(2);
    const errAt = rec.events.findIndex((e) => e.type === "session.error");
    expect(rec.events.slice(errAt + 1).some((e) => e.type === "message.updated")).toBe(true);
  });

  it("reports an aborted run as aborted", () => {
    const t = new TurnTranslator(rec.sessionId);
    t.handle({ type: "session.status", sessionID: rec.sessionId, status: { type: "busy" } });
    expect(t.handle({ type: "session.error", sessionID: rec.sessionId, error: { name: "MessageAbortedError", data: { message: "Aborted" } } })).toEqual([
      { kind: "error", message: "The agent run was aborted", code: "MessageAbortedError" },
    ]);
  });

  it("ignores another session's error", () => {
    const t = new TurnTranslator(rec.sessionId);
    expect(t.handle({ type: "session.error", sessionID: "ses_someone_else", error: { name: "APIError" } })).toEqual([]);
    expect(t.done).toBe(false);
  });
});

describe("catching up after a transient loss of the event stream", () => {
  /** The turn's final state, as GET /session/{id}/message would return it. */
  function snapshot(rec: Recording) {
    const infos = new Map<string, any>();
    const parts = new Map<string, any>();
    for (const e of rec.events) {
      if (e.type === "message.updated" && e.info.role === "assistant") infos.set(e.info.id, e.info);
      if (e.type === "message.part.updated" && infos.has(e.part.messageID)) parts.set(e.part.id, e.part);
    }
    return [...infos.values()].map((info) => ({ info, parts: [...parts.values()].filter((p) => p.messageID === info.id) }));
  }

  it("emits exactly the text that was missed, then finishes with the real usage", () => {
    const rec = load("slow-text");
    const full = replay(rec.sessionId, rec.events);
    const cut = rec.events.findIndex((e) => e.type === "message.part.delta") + 2;
    const t = new TurnTranslator(rec.sessionId);
    const before = rec.events.slice(0, cut).flatMap((e) => t.handle(e));
    expect(t.handle({ type: "stream.lost", reason: "blip", final: false })).toEqual([]);
    expect(t.done).toBe(false);
    const after = t.catchUp(snapshot(rec), false);
    // Late events that were queued meanwhile must not repeat anything.
    const late = rec.events.slice(cut).flatMap((e) => t.handle(e));
    expect(textOf([...before, ...after, ...late], "text")).toBe(textOf(full.outputs, "text"));
    expect(ofKind(after, "finish")).toEqual(ofKind(full.outputs, "finish"));
    expect(t.done).toBe(true);
  });

  it("keeps waiting when the run is still going, and does not repeat text from later deltas", () => {
    const rec = load("slow-text");
    const cut = rec.events.findIndex((e) => e.type === "message.part.delta") + 2;
    const t = new TurnTranslator(rec.sessionId);
    const before = rec.events.slice(0, cut).flatMap((e) => t.handle(e));
    const after = t.catchUp(snapshot(rec), true);
    expect(t.done).toBe(false);
    const rest = rec.events.slice(cut).flatMap((e) => t.handle(e));
    expect(textOf([...before, ...after, ...rest], "text")).toBe("tok ".repeat(5));
    expect(ofKind(rest, "finish")).toHaveLength(1);
  });

  it("counts each step's tokens once when a catch-up replays steps already seen", () => {
    const rec = load("write-tool");
    const full = replay(rec.sessionId, rec.events);
    const t = new TurnTranslator(rec.sessionId);
    const last = rec.events.findLastIndex((e) => e.type === "session.idle");
    rec.events.slice(0, last).forEach((e) => t.handle(e));
    const out = t.catchUp(snapshot(rec), false);
    expect(ofKind(out, "finish")[0]!.usage).toEqual(ofKind(full.outputs, "finish")[0]!.usage);
    expect(ofKind(out, "tool-end")).toHaveLength(0);
  });
});
