/**
 * Replicas (issue 12): sidecar replicas sharing their state in PostgreSQL (DATABASE_URL), and
 * what the database adds to a turn's first token (target: under 2 ms).
 *
 * Everything runs over ONE real `opencode serve` (RUNNER_MODE=shared) and the scripted model
 * in this process; every sidecar shares one WORKSPACE_ROOT (the same users are the same
 * opencode directories whichever backend serves them) and has a STATE_ROOT of its own.
 *
 * - Load: BENCH_REPLICAS_STREAMS (100) concurrent streamed chat completions over half as many
 *   users (2 chats per user), as Open WebUI's gateway sends them (key, X-OpenWebUI-User-Id,
 *   X-OpenWebUI-Chat-Id, the whole history), each a follow-up turn streaming LOAD_TOKENS
 *   pieces LOAD_DELAY_MS apart at the model; against 2 replicas on a fresh test database
 *   behind the tests' round-robin proxy, and against 1 replica on files (no DATABASE_URL)
 *   behind the same kind of proxy (one target), LOAD_ROUNDS times each, alternating. Time to
 *   first token, total, when the model got each turn's prompt, errors, requests per replica,
 *   CPU and peak VmRSS of every replica and of opencode (sampled every 100 ms during the load),
 *   and the most sidecar connections the database had at once.
 * - In process: the shared-state calls a turn makes before its first token (chat-service.ts
 *   `prepare` and `runLocked`: user slot, chat → session of an existing chat, turn lock; on
 *   /v1/responses also the response index: `get` for previous_response_id, `put`), and the
 *   releases at its end, PostgreSQL backends (db/) vs file / in-process ones; sequential
 *   (backends alternating per iteration) and with one concurrent turn per user.
 * - End to end: time to first token of a follow-up message, one PostgreSQL replica vs the file
 *   replica (each called directly, no proxy), same user, alternating which goes first.
 *
 * BENCH_REPLICAS=1 runs the phase (BENCH_ONLY=replicas runs it alone); BENCH_REPLICAS_STREAMS,
 * BENCH_REPLICAS_ITERATIONS (500) and BENCH_REPLICAS_PAIRS (100) size it.
 */
import { randomBytes, randomUUID } from "node:crypto";
import fs from "node:fs";
import os from "node:os";
import path from "node:path";
import { pino } from "pino";
import { Database } from "../src/db/database.js";
import { PgChatSessions, PgTurnLocks, PgUserSlots } from "../src/db/pg-chat-state.js";
import { PgResponseIndex } from "../src/db/pg-response-index.js";
import { ResponseIndex, type ResponseChats } from "../src/responses/response-index.js";
import { bundledOpencodeBinary } from "../src/runners/registry.js";
import { FileChatSessions, LocalTurnLocks, LocalUserSlots, type ChatSessions, type TurnLocks, type UserSlots } from "../src/sessions/chat-sessions.js";
import { SessionStore } from "../src/sessions/session-store.js";
import { userHash, userSpace, type UserSpace } from "../src/workspace/user-space.js";
import { opencodeServeEnv } from "../test/fixtures/opencode-server.js";
import { createTestDatabase, type TestDatabase } from "../test/fixtures/postgres.js";
import { say, scriptedOpencodeConfig, startScriptedModel, type ScriptedModel } from "../test/fixtures/scripted-model.js";
import { opencodePids, tempDir } from "../test/helpers/harness.js";
import { startRoundRobinProxy, type RoundRobinProxy } from "../test/helpers/round-robin-proxy.js";
import { freePort, pollUntil, startChild, type Child } from "./children.js";
import { cpuTimeMs, sampleRss } from "./proc.js";
import { waitQuiet } from "./settle.js";
import { launchSidecar, SIDECAR_DIR } from "./sidecar.js";
import { sseMessages } from "./sse.js";
import { median, quantile } from "./stats.js";
import { TURN_TIMEOUT_MS, type TurnResult } from "./turn.js";

export const LOAD_TOKENS = 50;
export const LOAD_DELAY_MS = 10;
export const LOAD_ROUNDS = 2;
const LOAD = say.slow(LOAD_TOKENS, LOAD_DELAY_MS);
const LOAD_TEXT = "tok ".repeat(LOAD_TOKENS);
export const FOLLOW_TOKENS = 10;
const FOLLOW = say.slow(FOLLOW_TOKENS, 5);
const FOLLOW_TEXT = "tok ".repeat(FOLLOW_TOKENS);
const OPEN_TEXT = "replicas bench chat opened";
const OPEN = say.text(OPEN_TEXT);
/** Chats opened at once: a new user's first turn sets opencode to work on a new directory. */
const OPEN_PARALLEL = 4;
/** The cap the sidecars run with (the default): 2 chats per user stay well under it. */
const CAP = 4;
/** Sequential iterations before the measured ones, per backend. */
const MICRO_WARMUP = 50;
/** End to end: chats per backend the follow-ups rotate over (keeps each session's history short). */
const E2E_CHATS = 10;
const E2E_WARMUP_PAIRS = 10;
/**
 * Quiet = under this share of one core over all the processes together: an idle opencode ticks
 * at ~1 % per directory it has open, and this one has a directory per user.
 */
const QUIET_SHARE = 0.15;
export const TARGET_DB_ADDED_MS = 2;

export interface ReplicasContext {
  streams: number;
  iterations: number;
  pairs: number;
  apiKey: string;
  defer(fn: () => Promise<void> | void): void;
  log(msg: string): void;
}

/** Like stats.ts's Spread, at µs resolution (the in-process calls take microseconds). */
export interface Spread3 {
  n: number;
  p50: number;
  p95: number;
  max: number;
}

export interface LoadFigures {
  backend: "postgres" | "files";
  replicas: number;
  streams: number;
  users: number;
  rounds: number;
  ttftMs: Spread3;
  totalMs: Spread3;
  /** Round start → the scripted model got the turn's prompt from opencode (all streams start at once). */
  modelReceivedMs: Spread3;
  /** Every turn's time to first token, ms (rounded), in completion order. */
  ttftValues: number[];
  /** Wall time of each round (all streams done). */
  wallMs: number[];
  errors: number;
  /** Distinct messages, with how many turns got each. */
  errorMessages: string[];
  /** When each failed turn failed, ms after its request was sent. */
  errorAtMs: number[];
  /** Postgres side: most sidecar connections open on the database at once, per round (all replicas). */
  peakDbConnections?: number[];
  /** Requests each replica took during the measured rounds (from the proxy). */
  requestsPerReplica: number[];
  /** Highest VmRSS seen during the rounds, MiB: each replica, and opencode. */
  peakRssMiB: { replicas: number[]; opencode: number };
  /** CPU used during the rounds, ms: each replica, and opencode. */
  cpuMs: { replicas: number[]; opencode: number };
  /** 1-minute load average when each round started. */
  loadAtStart: number[];
}

export interface OpFigures {
  op: string;
  /** When a turn makes the call: before its first token (counts against it) or at its end. */
  when: "before first token" | "after the turn";
  files: Spread3;
  postgres: Spread3;
}

export interface MicroFigures {
  mode: "sequential" | "concurrent";
  /** Turns at once (1 sequential; one per user concurrent). */
  concurrency: number;
  ops: OpFigures[];
  /** Per-turn sums of the calls before the first token. */
  totals: OpFigures[];
}

export interface E2eFigures {
  pairs: number;
  prompt: string;
  files: Spread3;
  postgres: Spread3;
  /** postgres p50 − files p50, and the median of the per-pair differences. */
  addedP50Ms: number;
  pairedMedianMs: number;
}

export interface ReplicasFigures {
  streams: number;
  iterations: number;
  pairs: number;
  skipped?: string;
  error?: string;
  machine?: { cpus: number; node: string; opencode?: string; postgres?: string; loadBefore: number[]; loadAfter?: number[] };
  load?: LoadFigures[];
  micro?: MicroFigures[];
  e2e?: E2eFigures;
  /** What the database adds to a turn's first token (target < TARGET_DB_ADDED_MS). */
  target?: { name: string; valueMs: number; targetMs: number; pass: boolean }[];
  /** Notes the run itself made (e.g. a backend that misbehaved). */
  notes: string[];
}

export function emptyReplicas(streams: number, iterations: number, pairs: number, why: { skipped?: string; error?: string } = {}): ReplicasFigures {
  return { streams, iterations, pairs, notes: [], ...why };
}

/** A time budget for the whole phase (the run's watchdog adds it). */
export function replicasBudgetMs(streams: number, iterations: number, pairs: number): number {
  return 8 * 60_000 + streams * 2 * 3_000 + iterations * 2 * 50 + pairs * 2 * 3_000;
}

const r3 = (n: number) => Math.round(n * 1000) / 1000;
export function spread3(values: number[]): Spread3 {
  return { n: values.length, p50: r3(median(values)), p95: r3(quantile(values, 0.95)), max: r3(values.length ? Math.max(...values) : NaN) };
}
const mib = (b: number) => Math.round((b / 2 ** 20) * 10) / 10;
const load1 = () => Math.round(os.loadavg()[0]! * 100) / 100;

/** `work`, or an error after `ms`. */
async function deadline<T>(work: Promise<T>, ms: number, what: string): Promise<T> {
  let timer: NodeJS.Timeout | undefined;
  try {
    return await Promise.race([work, new Promise<never>((_, reject) => (timer = setTimeout(() => reject(new Error(`${what}: not done within ${ms} ms`)), ms)))]);
  } finally {
    clearTimeout(timer);
  }
}

/** Undone in reverse order; idempotent (the phase's end and the run's cleanup both call it). */
class Cleanups {
  private readonly steps: Array<{ what: string; fn: () => Promise<void> | void }> = [];
  constructor(private readonly log: (msg: string) => void) {}
  add(what: string, fn: () => Promise<void> | void): void {
    this.steps.push({ what, fn });
  }
  async run(): Promise<void> {
    for (let s = this.steps.pop(); s; s = this.steps.pop()) {
      try {
        await deadline(Promise.resolve().then(s.fn), 30_000, `cleanup: ${s.what}`);
      } catch (e) {
        this.log(`replicas: cleanup step "${s.what}" failed: ${(e as Error).message}`);
      }
    }
  }
}

interface ChatChunk {
  choices?: Array<{ delta?: { content?: string } }>;
  error?: { message?: string; code?: string };
}

/** One chat as Open WebUI's gateway sends it: gateway key, user and chat id headers, whole history. */
class GatewayChat {
  readonly chatId = randomUUID();
  private readonly messages: Array<{ role: "user" | "assistant"; content: string }> = [];

  constructor(
    private readonly url: string,
    private readonly apiKey: string,
    readonly userId: string,
  ) {}

  async turn(prompt: string, expected: string): Promise<TurnResult> {
    this.messages.push({ role: "user", content: prompt });
    try {
      const r = await this.send();
      // opencode may trim the end of a text part; what matters is that every token arrived.
      if (r.text.trimEnd() !== expected.trimEnd()) throw new Error(`unexpected text ${JSON.stringify(r.text.slice(0, 80))}`);
      this.messages.push({ role: "assistant", content: r.text });
      return r;
    } catch (e) {
      this.messages.pop();
      throw e;
    }
  }

  private async send(): Promise<TurnResult> {
    const t0 = performance.now();
    const res = await fetch(`${this.url}/v1/chat/completions`, {
      method: "POST",
      headers: {
        Authorization: `Bearer ${this.apiKey}`,
        "Content-Type": "application/json",
        "X-OpenWebUI-User-Id": encodeURIComponent(this.userId),
        "X-OpenWebUI-Chat-Id": this.chatId,
      },
      body: JSON.stringify({ model: "open-persona/build", stream: true, messages: this.messages }),
      signal: AbortSignal.timeout(TURN_TIMEOUT_MS),
    });
    if (!res.ok || !res.body) throw new Error(`HTTP ${res.status}: ${(await res.text()).slice(0, 200)}`);
    let ttftMs: number | undefined;
    let chunks = 0;
    let text = "";
    for await (const { data, at } of sseMessages(res.body)) {
      if (data === "[DONE]") {
        if (ttftMs === undefined) throw new Error("stream ended without content");
        return { ttftMs, totalMs: at - t0, chunks, gapsMs: [], text };
      }
      const chunk = JSON.parse(data) as ChatChunk;
      if (chunk.error) throw new Error(`in-band error ${chunk.error.code}: ${chunk.error.message}`);
      const content = chunk.choices?.[0]?.delta?.content;
      if (content) {
        ttftMs ??= at - t0;
        chunks++;
        text += content;
      }
    }
    throw new Error("stream ended without [DONE]");
  }
}

/** Runs `tasks` with at most `parallel` at once. */
async function pooled(tasks: Array<() => Promise<unknown>>, parallel: number): Promise<void> {
  let next = 0;
  await Promise.all(
    Array.from({ length: Math.min(parallel, tasks.length) }, async () => {
      while (next < tasks.length) await tasks[next++]!();
    }),
  );
}

/** The shared `opencode serve`: its own XDG dirs under `root`, a password, tied to this process. */
async function startSharedOpencode(root: string, modelBaseURL: string): Promise<{ child: Child; url: string; password: string; pid: number }> {
  const password = randomBytes(24).toString("base64url");
  const port = await freePort();
  const env = opencodeServeEnv(
    path.join(root, "opencode"),
    { OPENCODE_CONFIG_CONTENT: JSON.stringify(scriptedOpencodeConfig(modelBaseURL)), OPENCODE_DISABLE_MODELS_FETCH: "1", OPENCODE_DISABLE_LSP_DOWNLOAD: "1" },
    password,
  );
  const child = startChild("shared opencode", path.join(SIDECAR_DIR, "bin/tie-to-parent.sh"), [bundledOpencodeBinary(), "serve", "--hostname", "127.0.0.1", "--port", String(port)], {
    cwd: root,
    stdinPipe: true,
    env,
  });
  const url = `http://127.0.0.1:${port}`;
  const auth = `Basic ${Buffer.from(`opencode:${password}`).toString("base64")}`;
  await pollUntil(async () => (await fetch(`${url}/global/health`, { headers: { Authorization: auth }, signal: AbortSignal.timeout(2000) })).ok, 60_000, "shared opencode /global/health", child);
  const [pid] = opencodePids(child.pid);
  if (pid === undefined) throw new Error("no opencode process below bin/tie-to-parent.sh");
  return { child, url, password, pid };
}

interface Side {
  backend: LoadFigures["backend"];
  proxy: RoundRobinProxy;
  pids: number[];
  chats: GatewayChat[];
  users: number;
  ttft: number[];
  total: number[];
  modelReceived: number[];
  wallMs: number[];
  errors: Array<{ message: string; atMs: number }>;
  served: number[];
  peakDbConnections: number[];
  peakRss: number[];
  opencodePeakRss: number;
  cpuMs: number[];
  opencodeCpuMs: number;
  loadAtStart: number[];
}

function newSide(backend: Side["backend"], proxy: RoundRobinProxy, pids: number[], apiKey: string, streams: number, run: string): Side {
  const users = Math.ceil(streams / 2);
  // Two chats per user (chat i is user i mod users'), the same user names for both backends.
  const chats = Array.from({ length: streams }, (_, i) => new GatewayChat(proxy.url, apiKey, `bench-rep-${run}-${i % users}`));
  return { backend, proxy, pids, chats, users, ttft: [], total: [], modelReceived: [], wallMs: [], errors: [], peakDbConnections: [], served: pids.map(() => 0), peakRss: pids.map(() => 0), opencodePeakRss: 0, cpuMs: pids.map(() => 0), opencodeCpuMs: 0, loadAtStart: [] };
}

/** Most sidecar connections on the test database at once, sampled every 100 ms until stopped. */
function sampleDbConnections(db: TestDatabase): { stop(): Promise<number> } {
  let peak = 0;
  let stopped = false;
  const loop = (async () => {
    while (!stopped) {
      const r = await db
        .query<{ n: number }>("SELECT count(*)::int AS n FROM pg_stat_activity WHERE datname = current_database() AND application_name = 'open-persona-sidecar'")
        .catch(() => undefined);
      peak = Math.max(peak, r?.rows[0]?.n ?? 0);
      await new Promise((res) => setTimeout(res, 100));
    }
  })();
  return {
    stop: async () => {
      stopped = true;
      await deadline(loop, 15_000, "the database connection sampler");
      return peak;
    },
  };
}

/** Every stream at once, each a follow-up in its open chat. */
async function loadRound(side: Side, opencodePid: number, model: ScriptedModel, db?: TestDatabase): Promise<void> {
  const fromRequest = model.requests.length;
  const wallStart = Date.now();
  const conns = db && sampleDbConnections(db);
  const from = side.proxy.served.length;
  const samplers = side.pids.map((p) => sampleRss(p, 100));
  const ocSampler = sampleRss(opencodePid, 100);
  const cpu0 = side.pids.map(cpuTimeMs);
  const oc0 = cpuTimeMs(opencodePid);
  side.loadAtStart.push(load1());
  const t0 = performance.now();
  const outcomes = await Promise.allSettled(
    side.chats.map((c) =>
      c.turn(LOAD, LOAD_TEXT).catch((e: Error) => {
        throw Object.assign(e, { atMs: Math.round(performance.now() - t0) });
      }),
    ),
  );
  side.wallMs.push(Math.round(performance.now() - t0));
  side.pids.forEach((p, i) => (side.cpuMs[i]! += cpuTimeMs(p) - cpu0[i]!));
  side.opencodeCpuMs += cpuTimeMs(opencodePid) - oc0;
  samplers.forEach((s, i) => (side.peakRss[i] = Math.max(side.peakRss[i]!, s.stop().peakBytes)));
  side.opencodePeakRss = Math.max(side.opencodePeakRss, ocSampler.stop().peakBytes);
  for (const i of side.proxy.served.slice(from)) side.served[i]!++;
  for (const o of outcomes) {
    if (o.status === "fulfilled") {
      side.ttft.push(o.value.ttftMs);
      side.total.push(o.value.totalMs);
    } else side.errors.push({ message: (o.reason as Error).message ?? String(o.reason), atMs: (o.reason as { atMs?: number }).atMs ?? -1 });
  }
  for (const r of model.requests.slice(fromRequest)) if (r.lastUserText === LOAD) side.modelReceived.push(r.receivedAt - wallStart);
  if (conns) side.peakDbConnections.push(await conns.stop());
}

function loadFigures(side: Side): LoadFigures {
  const counts = new Map<string, number>();
  for (const e of side.errors) counts.set(e.message, (counts.get(e.message) ?? 0) + 1);
  return {
    backend: side.backend,
    replicas: side.pids.length,
    streams: side.chats.length,
    users: side.users,
    rounds: side.wallMs.length,
    ttftMs: spread3(side.ttft),
    totalMs: spread3(side.total),
    modelReceivedMs: spread3(side.modelReceived),
    ttftValues: side.ttft.map(Math.round),
    wallMs: side.wallMs,
    errors: side.errors.length,
    errorMessages: [...counts].slice(0, 5).map(([m, n]) => `${n}× ${m}`),
    errorAtMs: side.errors.map((e) => e.atMs),
    ...(side.backend === "postgres" ? { peakDbConnections: side.peakDbConnections } : {}),
    requestsPerReplica: side.served,
    peakRssMiB: { replicas: side.peakRss.map(mib), opencode: mib(side.opencodePeakRss) },
    cpuMs: { replicas: side.cpuMs.map(Math.round), opencode: Math.round(side.opencodeCpuMs) },
    loadAtStart: side.loadAtStart,
  };
}

/** The shared-state interfaces of one backend, as ChatService and the responses route use them. */
interface StateBackend {
  slots: UserSlots;
  sessions: ChatSessions;
  locks: TurnLocks;
  responses: ResponseChats;
}

interface MicroUser {
  hash: string;
  space: UserSpace;
  chats: Array<{ key: string; previous: string }>;
}

const OPS = ["slot acquire", "chat → session (existing chat)", "turn lock acquire", "responses: get previous_response_id", "responses: put", "turn lock release", "slot release"] as const;
type Op = (typeof OPS)[number];
const WHEN: Record<Op, OpFigures["when"]> = {
  "slot acquire": "before first token",
  "chat → session (existing chat)": "before first token",
  "turn lock acquire": "before first token",
  "responses: get previous_response_id": "before first token",
  "responses: put": "before first token",
  "turn lock release": "after the turn",
  "slot release": "after the turn",
};
const CHAT_OPS: Op[] = ["slot acquire", "chat → session (existing chat)", "turn lock acquire"];
const RESPONSES_OPS: Op[] = [...CHAT_OPS, "responses: get previous_response_id", "responses: put"];

type Samples = Record<Op, number[]>;
const newSamples = (): Samples => Object.fromEntries(OPS.map((o) => [o, [] as number[]])) as Samples;

/**
 * The calls one turn makes on the shared state, in ChatService's order, each timed: the
 * response index `get` (a follow-up naming previous_response_id, before `prepare`), the user's
 * slot, the chat's existing session, the index `put` (before the turn runs), the session's
 * turn lock; then the lock and the slot are given back (after the turn).
 */
async function oneTurn(b: StateBackend, u: MicroUser, chat: MicroUser["chats"][number], into?: Samples): Promise<void> {
  const t = () => performance.now();
  const rec = (op: Op, ms: number) => into?.[op].push(ms);
  let t0 = t();
  const found = await b.responses.get(u.hash, chat.previous);
  rec("responses: get previous_response_id", t() - t0);
  if (found?.chatKey !== chat.key) throw new Error(`response index: ${chat.previous} → ${found?.chatKey}, expected ${chat.key}`);
  t0 = t();
  const slot = await b.slots.tryAcquire(u.hash);
  rec("slot acquire", t() - t0);
  if (!slot) throw new Error("no user slot free (a slot was not given back)");
  try {
    t0 = t();
    const s = await b.sessions.getOrCreate(u.space, chat.key, () => Promise.reject(new Error("the chat has a session: none may be created")));
    rec("chat → session (existing chat)", t() - t0);
    if (s.created) throw new Error("a session was created for an existing chat");
    const responseId = `resp_${randomBytes(12).toString("hex")}`;
    t0 = t();
    await b.responses.put(u.hash, responseId, { chatKey: chat.key, createdAt: new Date().toISOString() });
    rec("responses: put", t() - t0);
    chat.previous = responseId;
    t0 = t();
    // On the slot's connection where the backend shares it (ChatService passes the slot too).
    const unlock = await b.locks.acquire(s.sessionId, slot);
    rec("turn lock acquire", t() - t0);
    t0 = t();
    await unlock();
    rec("turn lock release", t() - t0);
  } finally {
    t0 = t();
    await slot();
    rec("slot release", t() - t0);
  }
}

function opFigures(files: Samples, postgres: Samples): { ops: OpFigures[]; totals: OpFigures[] } {
  const ops = OPS.map((op) => ({ op, when: WHEN[op], files: spread3(files[op]), postgres: spread3(postgres[op]) }));
  const sums = (s: Samples, which: Op[]) => s[which[0]!].map((_, i) => which.reduce((a, op) => a + s[op][i]!, 0));
  const totals: OpFigures[] = [
    { op: "chat completions turn: slot + session + lock", when: "before first token", files: spread3(sums(files, CHAT_OPS)), postgres: spread3(sums(postgres, CHAT_OPS)) },
    { op: "responses turn: + get + put", when: "before first token", files: spread3(sums(files, RESPONSES_OPS)), postgres: spread3(sums(postgres, RESPONSES_OPS)) },
  ];
  return { ops, totals };
}

/** Both backends' calls in this process: PostgreSQL on `dbUrl`, files under `root`. */
async function microPhase(dbUrl: string, root: string, userCount: number, iterations: number, cleanups: Cleanups, log: (m: string) => void): Promise<MicroFigures[]> {
  const silent = pino({ level: "silent" });
  // As a replica's pool (DATABASE_POOL_MAX's default): a running turn holds two connections.
  const db = new Database({ url: dbUrl, poolMax: 100, log: silent });
  cleanups.add("in-process database pool", () => db.close());
  await deadline(db.migrate(), 30_000, "migrating the in-process database");
  const workspaceRoot = path.join(root, "micro-workspaces");
  const stateRoot = path.join(root, "micro-state");
  const backends: Record<"files" | "postgres", StateBackend> = {
    files: {
      slots: new LocalUserSlots(CAP),
      sessions: new FileChatSessions(new SessionStore({ log: silent })),
      locks: new LocalTurnLocks(),
      responses: new ResponseIndex((hash) => userSpace(workspaceRoot, stateRoot, hash).stateDir),
    },
    postgres: { slots: new PgUserSlots(db, CAP, silent), sessions: new PgChatSessions(db), locks: new PgTurnLocks(db, silent), responses: new PgResponseIndex(db) },
  };
  const run = randomBytes(4).toString("hex");
  // Per backend its own users and sessions (as two deployments would have).
  const usersOf = Object.fromEntries(
    (["files", "postgres"] as const).map((name) => [
      name,
      Array.from({ length: userCount }, (_, u): MicroUser => {
        const hash = userHash(`bench-micro-${run}-${name}-${u}`);
        return { hash, space: userSpace(workspaceRoot, stateRoot, hash), chats: [0, 1].map((c) => ({ key: randomUUID(), previous: `resp_seed_${u}_${c}` })) };
      }),
    ]),
  ) as Record<"files" | "postgres", MicroUser[]>;
  // Each chat has its session and a response, as after a first turn.
  for (const name of ["files", "postgres"] as const) {
    for (const u of usersOf[name]) {
      for (const chat of u.chats) {
        const s = await backends[name].sessions.getOrCreate(u.space, chat.key, async () => `ses_bench_${randomBytes(10).toString("hex")}`);
        await s.saved;
        await backends[name].responses.put(u.hash, chat.previous, { chatKey: chat.key, createdAt: new Date().toISOString() });
      }
    }
  }
  const out: MicroFigures[] = [];

  log(`replicas: in-process calls, sequential (${MICRO_WARMUP} warm-up + ${iterations} per backend, alternating)`);
  const seq = { files: newSamples(), postgres: newSamples() };
  await deadline(
    (async () => {
      for (let i = 0; i < MICRO_WARMUP + iterations; i++) {
        const order = i % 2 === 0 ? (["files", "postgres"] as const) : (["postgres", "files"] as const);
        for (const name of order) {
          const u = usersOf[name][i % userCount]!;
          await oneTurn(backends[name], u, u.chats[Math.floor(i / userCount) % 2]!, i < MICRO_WARMUP ? undefined : seq[name]);
        }
      }
    })(),
    120_000 + iterations * 100,
    "sequential in-process calls",
  );
  out.push({ mode: "sequential", concurrency: 1, ...opFigures(seq.files, seq.postgres) });

  const rounds = Math.max(2, Math.ceil(iterations / userCount));
  log(`replicas: in-process calls, ${userCount} concurrent turns (one per user) × ${rounds} rounds per backend`);
  const conc = { files: newSamples(), postgres: newSamples() };
  await deadline(
    (async () => {
      // One warm-up round each, then rounds alternating which backend goes first.
      for (let r = -1; r < rounds; r++) {
        const order = r % 2 === 0 ? (["files", "postgres"] as const) : (["postgres", "files"] as const);
        for (const name of order) {
          await Promise.all(usersOf[name].map((u) => oneTurn(backends[name], u, u.chats[(r + 2) % 2]!, r < 0 ? undefined : conc[name])));
        }
      }
    })(),
    120_000 + rounds * 2_000,
    "concurrent in-process calls",
  );
  out.push({ mode: "concurrent", concurrency: userCount, ...opFigures(conc.files, conc.postgres) });
  return out;
}

/** Follow-ups in open chats, one PostgreSQL replica vs the file replica, alternating. */
async function e2ePhase(pgUrl: string, fileUrl: string, apiKey: string, pairs: number, run: string, log: (m: string) => void): Promise<E2eFigures> {
  // The same user on both: the same opencode directory, whichever backend.
  const user = `bench-rep-e2e-${run}`;
  const chats = {
    postgres: Array.from({ length: E2E_CHATS }, () => new GatewayChat(pgUrl, apiKey, user)),
    files: Array.from({ length: E2E_CHATS }, () => new GatewayChat(fileUrl, apiKey, user)),
  };
  log(`replicas: end to end, opening ${E2E_CHATS} chats per backend`);
  for (let i = 0; i < E2E_CHATS; i++) for (const name of ["postgres", "files"] as const) await chats[name][i]!.turn(OPEN, OPEN_TEXT);
  log(`replicas: end to end, ${E2E_WARMUP_PAIRS} warm-up + ${pairs} follow-up pairs`);
  const ttft = { postgres: [] as number[], files: [] as number[] };
  for (let i = 0; i < E2E_WARMUP_PAIRS + pairs; i++) {
    const order = i % 2 === 0 ? (["postgres", "files"] as const) : (["files", "postgres"] as const);
    for (const name of order) {
      const r = await chats[name][i % E2E_CHATS]!.turn(FOLLOW, FOLLOW_TEXT);
      if (i >= E2E_WARMUP_PAIRS) ttft[name].push(r.ttftMs);
    }
  }
  const pg = spread3(ttft.postgres);
  const files = spread3(ttft.files);
  return {
    pairs,
    prompt: `say.slow(${FOLLOW_TOKENS}, 5), follow-up in one of ${E2E_CHATS} open chats per backend`,
    files,
    postgres: pg,
    addedP50Ms: r3(pg.p50 - files.p50),
    pairedMedianMs: r3(median(ttft.postgres.map((t, i) => t - ttft.files[i]!))),
  };
}

async function postgresVersion(db: TestDatabase): Promise<string | undefined> {
  return (await db.query<{ v: string }>("SELECT current_setting('server_version') AS v").catch(() => undefined))?.rows[0]?.v;
}

export async function replicasPhase(ctx: ReplicasContext): Promise<ReplicasFigures> {
  const figures = emptyReplicas(ctx.streams, ctx.iterations, ctx.pairs);
  const cleanups = new Cleanups(ctx.log);
  ctx.defer(() => cleanups.run());
  try {
    return await measure(ctx, figures, cleanups);
  } finally {
    // Stopped now (the run's later phases need a quiet machine), whatever happened.
    await cleanups.run();
    if (figures.machine) figures.machine.loadAfter = os.loadavg().map((l) => Math.round(l * 100) / 100);
  }
}

async function measure(ctx: ReplicasContext, figures: ReplicasFigures, cleanups: Cleanups): Promise<ReplicasFigures> {
  const { log } = ctx;
  figures.machine = { cpus: os.cpus().length, node: process.version, loadBefore: os.loadavg().map((l) => Math.round(l * 100) / 100) };
  const run = randomBytes(4).toString("hex");
  const root = tempDir("op-bench-replicas-");
  cleanups.add("temporary directories", () => fs.rmSync(root, { recursive: true, force: true }));
  const model = await startScriptedModel();
  cleanups.add("scripted model", () => model.close());

  log("replicas: a fresh test database and the shared opencode");
  const db = await deadline(createTestDatabase(), 30_000, "creating the test database");
  cleanups.add("test database (dropped)", () => db.drop());
  log(`replicas: database ${new URL(db.url).pathname.slice(1)}`);
  figures.machine.postgres = await postgresVersion(db);
  const opencode = await startSharedOpencode(root, model.baseURL);
  cleanups.add("shared opencode", () => opencode.child.stop());
  const health = await fetch(`${opencode.url}/global/health`, { headers: { Authorization: `Basic ${Buffer.from(`opencode:${opencode.password}`).toString("base64")}` }, signal: AbortSignal.timeout(2000) });
  figures.machine.opencode = ((await health.json()) as { version?: string }).version;

  const common = {
    RUNNER_MODE: "shared",
    OPENCODE_BASE_URL: opencode.url,
    OPENCODE_SERVER_PASSWORD: opencode.password,
    // What opencode was given, so the sidecars' model check knows the model (as in production).
    OPENCODE_CONFIG_CONTENT: JSON.stringify(scriptedOpencodeConfig(model.baseURL)),
    OPENCODE_DISABLE_MODELS_FETCH: "1",
    SIDECAR_API_KEYS: ctx.apiKey,
    MAX_CONCURRENT_RUNS_PER_USER: String(CAP),
    WORKSPACE_ROOT: path.join(root, "workspaces"),
    LOG_LEVEL: "info",
  };
  log("replicas: starting 2 PostgreSQL replicas and 1 file replica");
  const launched = [
    ...[0, 1].map((i) => launchSidecar({ ...common, DATABASE_URL: db.url, STATE_ROOT: path.join(root, `state-pg-${i}`) }, { name: `postgres replica ${i}` })),
    launchSidecar({ ...common, STATE_ROOT: path.join(root, "state-files") }, { name: "file replica" }),
  ];
  for (const l of launched) cleanups.add(l.child.name, () => l.child.stop());
  const [pg0, pg1, fileUrl] = await Promise.all(launched.map((l) => l.ready));
  const pgProxy = await startRoundRobinProxy(() => [pg0!, pg1!]);
  cleanups.add("postgres replicas' proxy", () => pgProxy.close());
  const fileProxy = await startRoundRobinProxy(() => [fileUrl!]);
  cleanups.add("file replica's proxy", () => fileProxy.close());

  const sides = {
    postgres: newSide("postgres", pgProxy, [launched[0]!.child.pid, launched[1]!.child.pid], ctx.apiKey, ctx.streams, run),
    files: newSide("files", fileProxy, [launched[2]!.child.pid], ctx.apiKey, ctx.streams, run),
  };
  const allPids = [opencode.pid, ...launched.map((l) => l.child.pid)];
  const cpuOfAll = async () => ({ cpuMs: allPids.reduce((a, p) => a + cpuTimeMs(p), 0) });
  /** Waits (up to `patience` minutes) for the sidecars and opencode to go quiet. */
  const quiet = async (what: string, patience = 1) => {
    let s = await waitQuiet(cpuOfAll, QUIET_SHARE);
    for (let i = 1; i < patience && s.timedOut; i++) s = await waitQuiet(cpuOfAll, QUIET_SHARE);
    if (s.timedOut) {
      const note = `${what}: the processes were still busy ${patience} min later; went on`;
      figures.notes.push(note);
      log(`replicas: ${note}`);
    }
  };

  // Opened first: the measured streams are follow-ups, not a burst of session creations (and
  // a new user's first turn sets opencode to work on a new directory for seconds).
  for (const name of ["postgres", "files"] as const) {
    log(`replicas: opening ${ctx.streams} chats (${sides[name].users} users) on the ${name} side`);
    await deadline(
      pooled(sides[name].chats.map((c) => () => c.turn(OPEN, OPEN_TEXT)), OPEN_PARALLEL),
      60_000 + ctx.streams * 5_000,
      `opening the ${name} side's chats`,
    );
  }
  // A new directory keeps opencode busy for a while after its first turn: 50 of them, longer.
  await quiet("after opening the chats", 3);

  for (let round = 0; round < LOAD_ROUNDS; round++) {
    const order = round % 2 === 0 ? (["postgres", "files"] as const) : (["files", "postgres"] as const);
    for (const name of order) {
      log(`replicas: load round ${round + 1}/${LOAD_ROUNDS}, ${name}: ${ctx.streams} concurrent streams`);
      // Each stream has its own deadline (TURN_TIMEOUT_MS); the round cannot outlast them.
      await loadRound(sides[name], opencode.pid, model, name === "postgres" ? db : undefined);
      const s = sides[name];
      log(`replicas:   wall ${s.wallMs.at(-1)} ms, errors so far ${s.errors.length}`);
      await quiet(`after ${name} load round ${round + 1}`);
    }
  }
  figures.load = [loadFigures(sides.postgres), loadFigures(sides.files)];

  figures.micro = await microPhase(db.url, root, sides.postgres.users, ctx.iterations, cleanups, log);
  await quiet("after the in-process calls");
  figures.e2e = await deadline(e2ePhase(pg0!, fileUrl!, ctx.apiKey, ctx.pairs, run, log), 120_000 + ctx.pairs * 10_000, "end-to-end pairs");

  const seqTotal = figures.micro[0]!.totals[0]!;
  const seqResp = figures.micro[0]!.totals[1]!;
  const t = (name: string, valueMs: number) => ({ name, valueMs: r3(valueMs), targetMs: TARGET_DB_ADDED_MS, pass: valueMs < TARGET_DB_ADDED_MS });
  figures.target = [
    t("in process, chat completions turn (p50 postgres − files)", seqTotal.postgres.p50 - seqTotal.files.p50),
    t("in process, responses turn (p50 postgres − files)", seqResp.postgres.p50 - seqResp.files.p50),
    t("end to end, follow-up first token (paired median)", figures.e2e.pairedMedianMs),
  ];
  return figures;
}
