/**
 * Turns one session's opencode events into the outputs of one chat turn, as they happen.
 * All per-turn state lives here; the HTTP layer only encodes what this yields.
 *
 * A turn starts when the prompt is sent and ends at the first `session.idle` after the
 * session went busy (a late idle of the previous turn arrives before our `busy` on the same
 * stream, and is ignored), or at `session.error`, or when the event stream is lost for good
 * (a transient loss is bridged by `catchUp`, fed from the messages API).
 */
import type { Artifact } from "../artifacts/artifact-service.js";
import type { MessageInfo, OpencodeEvent, Part, TokenUsage } from "../opencode/events.js";
import { failureKind, providerFailure, retryAfterFromHeaders, type FailureKind, type ModelRef, type ProviderRef } from "./provider-failure.js";

export interface Usage {
  prompt_tokens: number;
  completion_tokens: number;
  total_tokens: number;
}

export type TurnOutput =
  | { kind: "text"; text: string }
  | { kind: "reasoning"; text: string }
  | { kind: "tool-start"; callId: string; name: string; title: string }
  | { kind: "tool-end"; callId: string; name: string; args: unknown; result: string; failed: boolean }
  /** opencode will call the model provider again after a failure (`attempt` counts from 1). */
  | { kind: "retry"; attempt: number; message: string; failure: FailureKind; delayS?: number; model?: ModelRef; provider?: ProviderRef }
  /** What the turn made to look at (artifacts/), just before it finishes. */
  | { kind: "artifacts"; items: Artifact[]; more: number }
  | { kind: "finish"; reason: "stop" | "length"; usage: Usage }
  /** The turn failed; `retryAfterS` when the provider said when to come back. */
  | { kind: "error"; message: string; code: string; retryAfterS?: number };

type PartKind = Part["type"];

export class TurnTranslator {
  private readonly assistantMessages = new Set<string>();
  private readonly partKinds = new Map<string, PartKind>();
  /** Characters of each text/reasoning part already emitted (deltas and full updates mix). */
  private readonly emitted = new Map<string, number>();
  /** Parts recovered from a snapshot: their later deltas may repeat text already emitted. */
  private readonly snapshotParts = new Set<string>();
  private readonly toolsStarted = new Set<string>();
  private readonly toolsEnded = new Set<string>();
  private readonly stepsSeen = new Set<string>();
  private readonly tokens: TokenUsage = { input: 0, output: 0, reasoning: 0, cache: { read: 0, write: 0 } };
  private finishReason: "stop" | "length" = "stop";
  private sawBusy = false;
  private ended = false;
  private modelRef?: ModelRef;
  /** Set when the sidecar aborted the run (client gone): the abort error is expected. */
  aborted = false;

  /** `modelConfigured`: whether the operator chose a model (error messages say how otherwise). */
  constructor(
    private readonly sessionId: string,
    private readonly modelConfigured = true,
  ) {}

  /** The model this turn's assistant messages ran on, once known. */
  get model(): ModelRef | undefined {
    return this.modelRef;
  }

  get done(): boolean {
    return this.ended;
  }

  /** The prompt was accepted: opencode may skip `busy` for a run that fails at once. */
  promptSent(): void {
    this.sawBusy = true;
  }

  handle(event: OpencodeEvent): TurnOutput[] {
    if (this.ended) return [];
    switch (event.type) {
      case "session.status":
        if (event.sessionID !== this.sessionId) return [];
        if (event.status.type === "busy") this.sawBusy = true;
        if (event.status.type === "retry") {
          const { attempt, message = "the model provider failed", next } = event.status;
          const delayS = typeof next === "number" ? Math.max(0, Math.ceil((next - Date.now()) / 1000)) : undefined;
          return [{ kind: "retry", attempt: attempt ?? 1, message, failure: failureKind(message), delayS, model: this.modelRef }];
        }
        return [];
      case "session.idle":
        if (event.sessionID !== this.sessionId || !this.sawBusy) return [];
        return this.end({ kind: "finish", reason: this.finishReason, usage: this.usage() });
      case "session.error": {
        if (event.sessionID && event.sessionID !== this.sessionId) return [];
        const name = event.error?.name ?? "UnknownError";
        const data = event.error?.data;
        if (name === "APIError" && data) {
          // The provider's own answer, after opencode's retries (or at once for a 4xx).
          const message = typeof data.message === "string" && data.message ? data.message : "no message";
          const failure = providerFailure(failureKind(message, data.statusCode), undefined, this.modelRef, message, {
            statusCode: data.statusCode,
            retryAfterS: retryAfterFromHeaders(data.responseHeaders as Record<string, unknown> | undefined),
            modelConfigured: this.modelConfigured,
          });
          return this.end({ kind: "error", ...failure });
        }
        const detail = data?.message;
        const message = name === "MessageAbortedError" ? "The agent run was aborted" : detail ? `${name}: ${detail}` : name;
        return this.end({ kind: "error", message, code: name });
      }
      case "stream.lost":
        // Only a final loss ends the turn here; agent-run catches up after a transient one.
        if (!event.final) return [];
        return this.end({ kind: "error", message: "Lost the connection to the agent runner", code: "runner_lost" });
      case "message.updated":
        if (event.info?.role === "assistant" && event.info.sessionID === this.sessionId) {
          this.assistantMessages.add(event.info.id);
          if (event.info.providerID && event.info.modelID) this.modelRef = { providerID: event.info.providerID, modelID: event.info.modelID };
        }
        return [];
      case "message.part.updated":
        return this.onPart(event.part);
      case "message.part.delta": {
        if (event.field !== "text" || !this.assistantMessages.has(event.messageID)) return [];
        const kind = this.partKinds.get(event.partID) ?? "text";
        if (kind !== "text" && kind !== "reasoning") return [];
        // After a catch-up, only full-text updates are trusted for that part.
        if (this.snapshotParts.has(event.partID)) return [];
        this.emitted.set(event.partID, (this.emitted.get(event.partID) ?? 0) + event.delta.length);
        return event.delta ? [{ kind, text: event.delta }] : [];
      }
      default:
        return [];
    }
  }

  /**
   * Applies the state of this turn's messages as read from the messages API after the event
   * stream was lost: emits what was missed, and ends the turn if the run is over.
   */
  catchUp(messages: Array<{ info: MessageInfo; parts: Part[] }>, stillRunning: boolean): TurnOutput[] {
    const out: TurnOutput[] = [];
    let error: MessageInfo["error"];
    for (const m of messages) {
      out.push(...this.handle({ type: "message.updated", sessionID: this.sessionId, info: m.info }));
      for (const part of m.parts) {
        if (part.type === "text" || part.type === "reasoning") this.snapshotParts.add(part.id);
        out.push(...this.handle({ type: "message.part.updated", sessionID: this.sessionId, part }));
      }
      error ??= m.info.error;
    }
    if (stillRunning) return out;
    this.sawBusy = true;
    if (error) return [...out, ...this.handle({ type: "session.error", sessionID: this.sessionId, error })];
    return [...out, ...this.handle({ type: "session.idle", sessionID: this.sessionId })];
  }

  private onPart(part: Part): TurnOutput[] {
    if (!part || part.sessionID !== this.sessionId || !this.assistantMessages.has(part.messageID)) return [];
    this.partKinds.set(part.id, part.type);
    switch (part.type) {
      case "text":
      case "reasoning": {
        // Full-text updates catch up on anything deltas did not carry.
        const seen = this.emitted.get(part.id) ?? 0;
        if (part.text.length <= seen) return [];
        this.emitted.set(part.id, part.text.length);
        return [{ kind: part.type, text: part.text.slice(seen) }];
      }
      case "tool": {
        const { status } = part.state;
        const out: TurnOutput[] = [];
        if ((status === "running" || status === "completed" || status === "error") && !this.toolsStarted.has(part.callID)) {
          this.toolsStarted.add(part.callID);
          out.push({ kind: "tool-start", callId: part.callID, name: part.tool, title: toolTitle(part.tool, part.state.input) });
        }
        if ((status === "completed" || status === "error") && !this.toolsEnded.has(part.callID)) {
          this.toolsEnded.add(part.callID);
          out.push({
            kind: "tool-end",
            callId: part.callID,
            name: part.tool,
            args: part.state.input ?? {},
            result: status === "error" ? (part.state.error ?? "error") : (part.state.output ?? ""),
            failed: status === "error",
          });
        }
        return out;
      }
      case "step-finish":
        // Each step counts once, also when a catch-up replays it.
        if (this.stepsSeen.has(part.id)) return [];
        this.stepsSeen.add(part.id);
        if (part.tokens) {
          this.tokens.input += part.tokens.input ?? 0;
          this.tokens.output += part.tokens.output ?? 0;
          this.tokens.reasoning += part.tokens.reasoning ?? 0;
          this.tokens.cache.read += part.tokens.cache?.read ?? 0;
          this.tokens.cache.write += part.tokens.cache?.write ?? 0;
        }
        if (part.reason === "length") this.finishReason = "length";
        return [];
      default:
        return [];
    }
  }

  private end(out: TurnOutput): TurnOutput[] {
    this.ended = true;
    return [out];
  }

  /** Real token counts summed over the turn's model calls (steps). */
  usage(): Usage {
    const prompt = this.tokens.input + this.tokens.cache.read + this.tokens.cache.write;
    const completion = this.tokens.output + this.tokens.reasoning;
    return { prompt_tokens: prompt, completion_tokens: completion, total_tokens: prompt + completion };
  }
}

/** A short, human line for the status bar while a tool runs. */
function toolTitle(tool: string, input: Record<string, unknown> | undefined): string {
  const arg = input?.description ?? input?.filePath ?? input?.command ?? input?.pattern ?? input?.url ?? input?.path;
  const s = typeof arg === "string" ? arg.replace(/\s+/g, " ").slice(0, 80) : "";
  return s ? `${tool}: ${s}` : tool;
}
