/**
 * Responses vs Chat Completions: the same scripted reply streamed through the same sidecar by
 * `POST /v1/responses` (stream) and by `POST /v1/chat/completions` (stream), alternating which
 * API goes first in each iteration so that drift hits both alike.
 *
 * Each iteration opens a new chat per API with a short first turn (its time to first token:
 * a new session included), then measures a follow-up turn that streams RESPONSES_TOKENS
 * pieces RESPONSES_DELAY_MS apart at the model: time to first text delta, the gaps between
 * deltas (the per-chunk cost: both APIs see the same model pacing, so a difference is the
 * encoding — the Responses API sends more events per piece and per item), and the total.
 * A follow-up continues its chat the way each API's clients do: chat completions resends the
 * history under the chat id header, responses names the previous response.
 * BENCH_RESPONSES=0 skips the phase; BENCH_RESPONSES_ITERATIONS (10) sizes it.
 */
import { randomUUID } from "node:crypto";
import { say } from "../test/fixtures/scripted-model.js";
import { SidecarChat } from "./sidecar.js";
import { sseMessages } from "./sse.js";
import { median, p95, r2, spread, type Spread } from "./stats.js";
import { TURN_TIMEOUT_MS, type Chat, type TurnResult } from "./turn.js";

export const RESPONSES_TOKENS = 50;
export const RESPONSES_DELAY_MS = 5;
const STREAM = say.slow(RESPONSES_TOKENS, RESPONSES_DELAY_MS);
const STREAM_TEXT = "tok ".repeat(RESPONSES_TOKENS);
const OPEN_TEXT = "responses bench chat opened";
const OPEN = say.text(OPEN_TEXT);
/** Chats per API before measuring: the Responses path's code is cold until it has run. */
const WARMUP_CHATS = 3;

export type ApiName = "chat" | "responses";

export interface ResponsesContext {
  /** A running sidecar (warm: its user's runner already answered). */
  url: string;
  apiKey: string;
  userId: string;
  iterations: number;
  log(msg: string): void;
}

export interface ApiFigures {
  /** First turn of a new chat: request → first text delta. */
  firstTtftMs: Spread;
  /** The streamed follow-up turn. */
  ttftMs: Spread;
  /** Between consecutive text deltas, all follow-up turns pooled (values not kept). */
  gapMs: { n: number; p50: number; p95: number; max: number };
  /**
   * Each follow-up turn's mean time between deltas (first delta → last delta / gaps). opencode
   * hands text over in bursts, so most single gaps are ~0 and the median gap says little.
   */
  meanGapMs: Spread;
  totalMs: Spread;
  chunksP50: number;
}

export interface ResponsesFigures {
  iterations: number;
  prompt: string;
  chat?: ApiFigures;
  responses?: ApiFigures;
  /** responses − chat (p50s), and the paired median of the per-iteration differences. */
  added?: { firstTtftMs: number; ttftMs: number; pairedTtftMs: number; meanGapMs: number; pairedMeanGapMs: number; totalMs: number; perChunkMs: number };
  skipped?: string;
  error?: string;
}

export function emptyResponses(iterations: number, extra: Partial<ResponsesFigures> = {}): ResponsesFigures {
  return { iterations, prompt: `say.slow(${RESPONSES_TOKENS}, ${RESPONSES_DELAY_MS}) as a follow-up turn`, ...extra };
}

interface ResponsesEvent {
  type: string;
  delta?: string;
  response?: { id: string; status: string; error?: { code?: string; message?: string } | null };
  error?: { code?: string; message?: string };
}

/**
 * A chat over `POST /v1/responses` (stream), as the openai SDKs send it: the input is the new
 * user message only, and a follow-up names the previous response.
 */
export class SidecarResponsesChat implements Chat {
  private previousId?: string;

  constructor(
    private readonly url: string,
    private readonly apiKey: string,
    private readonly userId: string,
  ) {}

  async turn(prompt: string): Promise<TurnResult> {
    const t0 = performance.now();
    const res = await fetch(`${this.url}/v1/responses`, {
      method: "POST",
      headers: { authorization: `Bearer ${this.apiKey}`, "content-type": "application/json", "x-openwebui-user-id": this.userId },
      body: JSON.stringify({
        model: "open-persona/build",
        stream: true,
        input: prompt,
        // A first turn gets a chat of its own (the derived key would be the same for equal prompts).
        ...(this.previousId ? { previous_response_id: this.previousId } : { conversation: `bench-${randomUUID()}` }),
      }),
      signal: AbortSignal.timeout(TURN_TIMEOUT_MS),
    });
    if (!res.ok || !res.body) throw new Error(`sidecar answered ${res.status}: ${await res.text()}`);
    let ttftMs: number | undefined;
    let chunks = 0;
    let text = "";
    let lastAt = 0;
    const gapsMs: number[] = [];
    for await (const { data, at } of sseMessages(res.body)) {
      const e = JSON.parse(data) as ResponsesEvent;
      switch (e.type) {
        case "response.output_text.delta":
          if (!e.delta) break;
          ttftMs ??= at - t0;
          if (chunks > 0) gapsMs.push(at - lastAt);
          lastAt = at;
          chunks++;
          text += e.delta;
          break;
        case "error":
          throw new Error(`sidecar stream error ${e.error?.code}: ${e.error?.message}`);
        case "response.failed":
          throw new Error(`response failed: ${e.response?.error?.message}`);
        case "response.completed":
          if (ttftMs === undefined) throw new Error("response completed without text");
          this.previousId = e.response!.id;
          return { ttftMs, totalMs: at - t0, chunks, gapsMs, text };
      }
    }
    throw new Error("responses stream ended without response.completed");
  }
}

function expectText(r: TurnResult, expected: string, what: string): TurnResult {
  // opencode may trim the end of a text part; what matters is that every token arrived.
  if (r.text.trimEnd() !== expected.trimEnd()) throw new Error(`${what}: unexpected text ${JSON.stringify(r.text.slice(0, 80))}`);
  return r;
}

interface Samples {
  first: TurnResult[];
  stream: TurnResult[];
}

const meanGap = (t: TurnResult) => (t.gapsMs.length ? t.gapsMs.reduce((a, b) => a + b, 0) / t.gapsMs.length : 0);

function figures(s: Samples): ApiFigures {
  const gaps = s.stream.flatMap((t) => t.gapsMs);
  return {
    firstTtftMs: spread(s.first.map((t) => t.ttftMs)),
    ttftMs: spread(s.stream.map((t) => t.ttftMs)),
    gapMs: { n: gaps.length, p50: r2(median(gaps)), p95: r2(p95(gaps)), max: r2(gaps.reduce((a, b) => Math.max(a, b), 0)) },
    meanGapMs: spread(s.stream.map(meanGap)),
    totalMs: spread(s.stream.map((t) => t.totalMs)),
    chunksP50: median(s.stream.map((t) => t.chunks)),
  };
}

/** Runs the comparison; throws on the first failed turn (the caller reports it). */
export async function responsesPhase(ctx: ResponsesContext): Promise<ResponsesFigures> {
  const newChat: Record<ApiName, () => Chat> = {
    chat: () => new SidecarChat(ctx.url, ctx.apiKey, ctx.userId),
    responses: () => new SidecarResponsesChat(ctx.url, ctx.apiKey, ctx.userId),
  };
  const one = async (api: ApiName, into?: Samples) => {
    const chat = newChat[api]();
    const first = expectText(await chat.turn(OPEN), OPEN_TEXT, `${api} first turn`);
    const stream = expectText(await chat.turn(STREAM), STREAM_TEXT, `${api} ${RESPONSES_TOKENS}-token stream`);
    into?.first.push(first);
    into?.stream.push(stream);
  };
  ctx.log(`responses: warming up (${WARMUP_CHATS} chats per API)`);
  for (let i = 0; i < WARMUP_CHATS; i++) for (const api of ["chat", "responses"] as const) await one(api);

  ctx.log(`responses: ${ctx.iterations} iterations, alternating chat completions / responses`);
  const samples: Record<ApiName, Samples> = { chat: { first: [], stream: [] }, responses: { first: [], stream: [] } };
  for (let i = 0; i < ctx.iterations; i++) {
    const order: ApiName[] = i % 2 === 0 ? ["chat", "responses"] : ["responses", "chat"];
    for (const api of order) await one(api, samples[api]);
  }
  const chat = figures(samples.chat);
  const responses = figures(samples.responses);
  // Same iteration = seconds apart: other load on the machine hits both sides of a pair.
  const paired = (f: (t: TurnResult) => number) => r2(median(samples.responses.stream.map((t, i) => f(t) - f(samples.chat.stream[i]!))));
  return {
    ...emptyResponses(ctx.iterations),
    chat,
    responses,
    added: {
      firstTtftMs: r2(responses.firstTtftMs.p50 - chat.firstTtftMs.p50),
      ttftMs: r2(responses.ttftMs.p50 - chat.ttftMs.p50),
      pairedTtftMs: paired((t) => t.ttftMs),
      meanGapMs: r2(responses.meanGapMs.p50 - chat.meanGapMs.p50),
      pairedMeanGapMs: paired(meanGap),
      totalMs: r2(responses.totalMs.p50 - chat.totalMs.p50),
      perChunkMs: r2((responses.totalMs.p50 - chat.totalMs.p50) / responses.chunksP50),
    },
  };
}
