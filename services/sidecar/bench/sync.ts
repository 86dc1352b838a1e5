/**
 * The knowledge-base sync phase: how soon a file the agent writes is in the user's Open WebUI
 * knowledge base, and whether sync costs the chat anything.
 *
 * - Write → KB: scripted turns write files (a new one per turn, and edits of one file) through
 *   a local-mode sidecar with sync on; each write is timed from the file's mtime on disk (the
 *   moment opencode's `write` tool wrote it) to the moment the Open WebUI double holds that
 *   content in the user's KB. One write at a time, so the figures are the pipeline's latency,
 *   not a queue's. Run with the configured debounce, then again with OPENWEBUI_SYNC_DEBOUNCE_MS=0.
 * - Chat, sync on vs off: two sidecars, identical but for sync, take turns with the same chat
 *   (first turn, a turn that writes a file, then a streamed follow-up). The follow-up starts as
 *   the write turn ends, i.e. while that file is being uploaded: the worst moment for sync.
 *
 * Open WebUI is the tests' contract double, in this process (loopback), as is the scripted
 * model. Their work shares this event loop with the client that times the turns; it is small
 * (no embedding), and it lands on the sync-on side only, i.e. against sync, not for it.
 */
import { randomBytes } from "node:crypto";
import fs from "node:fs";
import path from "node:path";
import { loadConfig } from "../src/config/config.js";
import { kbFilename } from "../src/sync/sync-service.js";
import { userHash } from "../src/workspace/user-space.js";
import { startOpenWebUIDouble, type OpenWebUIDouble } from "../test/fixtures/openwebui-double.js";
import { say, script, startScriptedModel } from "../test/fixtures/scripted-model.js";
import { opencodePids, scriptedEnv } from "../test/helpers/harness.js";
import { cpuTimeMs, rssBytes } from "./proc.js";
import { waitQuiet } from "./settle.js";
import { launchSidecar, SidecarChat } from "./sidecar.js";
import { median, r2, spread, type Spread } from "./stats.js";
import type { TurnResult } from "./turn.js";

/** How often the double's KB is read while waiting for a write: the figures' resolution. */
const POLL_MS = 10;
/** A write not in the KB by then counts as lost (the pipeline's retries start at 1 s). */
const SYNC_WAIT_MS = 30_000;
/** Writes before the measured ones: a new directory's first turns pay opencode's bootstrap. */
const WRITE_WARMUP = 2;
/** Chat iterations per side before the measured ones (JITs, first turns of a new user). */
const CHAT_WARMUP = 3;
/** A mid-turn write is followed by this much more streaming than the debounce: see midTurn. */
const TAIL_EXTRA_MS = 500;
const TAIL_TOKEN_MS = 50;
/** The KB the sidecar keeps for a user (OPENWEBUI_KB_PREFIX default). */
const kbName = (user: string) => `workspace-${user}`;

const SHORT_TEXT = "hello from the sync benchmark";
/** The latency phase's follow-up turn. */
const STREAM_TOKENS = 50;
const STREAM = say.slow(STREAM_TOKENS, 5);
const STREAM_TEXT = "tok ".repeat(STREAM_TOKENS);

export interface SyncPhaseContext {
  writes: number;
  iterations: number;
  apiKey: string;
  /** Registers an undo step; steps run in reverse order on success, error or signal. */
  defer(fn: () => Promise<void> | void): void;
  log(msg: string): void;
}

/** Write → in the KB, ms, for one debounce setting. */
export interface WriteToKb {
  debounceMs: number;
  /** A new file; the write is the turn's last tool call, the turn ends right after it. */
  newFile: Spread;
  /** A new version of a file already in the KB (upload, link, unlink the old one). */
  edit: Spread;
  /** A new file, then the turn streams on for midTurnTailMs: the change waits out the debounce. */
  midTurn: Spread;
  midTurnTailMs: number;
}

/** One figure with sync off and on; the ratio and the paired difference are on − off. */
export interface OnOff {
  off: Spread;
  on: Spread;
  /** p50 on / p50 off: 1.0 is no effect. */
  ratioP50: number;
  /** Median of (on − off) within each iteration, ms: the two ran seconds apart. */
  pairedMs: number;
}

export interface ChatOnOff {
  iterations: number;
  warmup: number;
  followUpPrompt: string;
  followUpTtftMs: OnOff;
  writeTtftMs: OnOff;
  writeTotalMs: OnOff;
  /** The sidecar process's CPU over the measured iterations (its opencode not included). */
  sidecarCpuMsPerIteration: { off: number; on: number };
  /** The sync-on side's measured files, and how many of them reached its KB. */
  synced: { written: number; inKb: number };
}

export interface SyncFigures {
  writes: number;
  iterations: number;
  pollMs: number;
  /** The whole phase was not run. */
  skipped?: string;
  /** The phase failed part-way; the other phases' figures still stand. */
  error?: string;
  chat?: ChatOnOff;
  /** The configured debounce first, then OPENWEBUI_SYNC_DEBOUNCE_MS=0. */
  writeToKb?: WriteToKb[];
}

const sleep = (ms: number) => new Promise((r) => setTimeout(r, ms));
/** Unique content: Open WebUI refuses content a KB already holds, and each wait needs its own. */
const uniqueContent = (what: string) => `${what} ${randomBytes(8).toString("hex")}\n`;

function expectText(r: TurnResult, expected: string, what: string): TurnResult {
  if (r.text.trimEnd() !== expected.trimEnd()) throw new Error(`${what}: unexpected text ${JSON.stringify(r.text.slice(0, 80))}`);
  return r;
}

/** A local-mode sidecar child process of this phase. */
interface Side {
  name: string;
  url: string;
  pid: number;
  workspaceRoot: string;
  /** The debounce it runs with; undefined = sync off. */
  debounceMs?: number;
  stop(): Promise<void>;
}

interface SyncTarget {
  owui: OpenWebUIDouble;
  adminKey: string;
  /** Unset: the sidecar's default (or OPENWEBUI_SYNC_DEBOUNCE_MS from this environment). */
  debounceMs?: number;
}

async function startSide(ctx: SyncPhaseContext, modelBaseURL: string, name: string, sync?: SyncTarget): Promise<Side> {
  const extra: Record<string, string> = { LOG_LEVEL: "info", SIDECAR_API_KEYS: ctx.apiKey };
  if (sync) {
    Object.assign(extra, { OPENWEBUI_URL: sync.owui.url, OPENWEBUI_API_KEY: sync.adminKey });
    const debounce = sync.debounceMs?.toString() ?? process.env.OPENWEBUI_SYNC_DEBOUNCE_MS;
    if (debounce) extra.OPENWEBUI_SYNC_DEBOUNCE_MS = debounce;
  }
  const env = scriptedEnv(modelBaseURL, extra);
  ctx.defer(() => fs.rmSync(path.dirname(env.WORKSPACE_ROOT!), { recursive: true, force: true }));
  // The child's own config loader says which debounce it will use (default included).
  const debounceMs = loadConfig({ ...env, PORT: "0" }).sync?.debounceMs;
  const sc = launchSidecar(env, { name });
  ctx.defer(() => sc.child.stop());
  return { name, url: await sc.ready, pid: sc.child.pid, workspaceRoot: env.WORKSPACE_ROOT!, debounceMs, stop: () => sc.child.stop() };
}

/** Waits for the side's opencode to finish the background work a new directory sets off. */
async function settle(side: Side, ctx: SyncPhaseContext): Promise<void> {
  const [pid] = opencodePids(side.pid);
  if (pid === undefined) throw new Error(`no opencode process below the ${side.name}`);
  const s = await waitQuiet(async () => ({ cpuMs: cpuTimeMs(pid), memBytes: rssBytes(pid) }));
  if (s.timedOut) ctx.log(`sync: the ${side.name}'s opencode was still busy after ${Math.round(s.busyMs / 1000)} s; going on`);
}

/** Polls until `check` holds; resolves with the epoch ms (the clock of file mtimes) it did. */
async function seenAt(check: () => boolean, what: string, signal: AbortSignal): Promise<number> {
  const deadline = Date.now() + SYNC_WAIT_MS;
  while (!signal.aborted) {
    if (check()) return Date.now();
    if (Date.now() > deadline) throw new Error(`${what}: not in the KB within ${SYNC_WAIT_MS} ms`);
    await sleep(POLL_MS);
  }
  throw new Error(`${what}: wait aborted`);
}

const inKb = (owui: OpenWebUIDouble, user: string, rel: string, content: string) => () =>
  // During an edit the KB briefly holds both versions (linked, then the old one unlinked).
  owui.kbFiles(kbName(user)).some((f) => f.filename === kbFilename(rel) && f.content.toString("utf8") === content);

interface Writer {
  side: Side;
  user: string;
  owui: OpenWebUIDouble;
  apiKey: string;
}

/**
 * One turn that writes `rel` (then streams for tailMs), timed from the file's mtime to the
 * content being in the KB. The KB is watched from the turn's start: without a debounce the
 * file can arrive before the turn ends.
 */
async function timedWrite(w: Writer, rel: string, tailMs = 0): Promise<number> {
  const content = uniqueContent(rel);
  const tokens = Math.ceil(tailMs / TAIL_TOKEN_MS);
  const write = { tool: "write", args: { filePath: rel, content } };
  const prompt = tokens ? script(write, { text: "tok ".repeat(tokens), tokens, delayMs: TAIL_TOKEN_MS }) : say.write(rel, content);
  const started = Date.now();
  const abort = new AbortController();
  const seen = seenAt(inKb(w.owui, w.user, rel, content), `${w.side.name}: ${rel}`, abort.signal);
  seen.catch(() => {}); // a timeout while the turn still runs is reported below, not unhandled
  try {
    await new SidecarChat(w.side.url, w.apiKey, w.user).turn(prompt);
  } catch (e) {
    abort.abort();
    throw e;
  }
  const at = await seen;
  const mtime = fs.statSync(path.join(w.side.workspaceRoot, userHash(w.user), rel)).mtimeMs;
  // Same clock on both ends; a stamp outside the turn means we timed some other write.
  if (mtime < started - 50 || mtime > at + 50) throw new Error(`${rel}: mtime ${mtime} outside the turn (${started}..${at})`);
  return at - mtime;
}

/**
 * Writes one at a time: a new file, then an edit, N times; then the mid-turn writes. The
 * debounce holds back changes seen while a turn runs, but when the turn ends the sidecar
 * reconciles and sends what is pending at once; to see the debounce itself, the mid-turn
 * writes keep their turn streaming for longer than it.
 */
async function writeToKb(ctx: SyncPhaseContext, w: Writer): Promise<WriteToKb> {
  const debounceMs = w.side.debounceMs!;
  const edited = "notes/edited.md";
  ctx.log(`sync: write → KB through the ${w.side.name} (debounce ${debounceMs} ms): ${WRITE_WARMUP} warm-up + ${ctx.writes} new files + ${ctx.writes} edits`);
  await timedWrite(w, edited); // the file the edits change, and the user's KB
  for (let i = 0; i < WRITE_WARMUP; i++) await timedWrite(w, `notes/warmup-${i + 1}.md`);
  await settle(w.side, ctx);
  const fresh: number[] = [];
  const edits: number[] = [];
  for (let i = 0; i < ctx.writes; i++) {
    fresh.push(await timedWrite(w, `notes/new-${i + 1}.md`));
    edits.push(await timedWrite(w, edited));
  }
  const midTurnTailMs = debounceMs + TAIL_EXTRA_MS;
  const midCount = Math.max(3, Math.ceil(ctx.writes / 4));
  ctx.log(`sync: ${midCount} mid-turn writes (the turn streams on for ${midTurnTailMs} ms)`);
  const mid: number[] = [];
  for (let i = 0; i < midCount; i++) mid.push(await timedWrite(w, `notes/mid-turn-${i + 1}.md`, midTurnTailMs));
  return { debounceMs, newFile: spread(fresh), edit: spread(edits), midTurn: spread(mid), midTurnTailMs };
}

function onOff(off: number[], on: number[]): OnOff {
  return { off: spread(off), on: spread(on), ratioP50: r2(median(on) / median(off)), pairedMs: r2(median(on.map((x, i) => x - off[i]!))) };
}

type SideKey = "on" | "off";
interface ChatSamples {
  followUpTtft: number[];
  writeTtft: number[];
  writeTotal: number[];
}

/** One new chat: a first turn, a turn that writes a file, a streamed follow-up. */
async function chatIteration(side: Side, apiKey: string, user: string, i: number) {
  const chat = new SidecarChat(side.url, apiKey, user);
  expectText(await chat.turn(say.text(SHORT_TEXT)), SHORT_TEXT, `${side.name} first turn`);
  const rel = `chat/file-${i + 1}.md`;
  const content = uniqueContent(rel);
  const write = await chat.turn(say.write(rel, content));
  if (fs.readFileSync(path.join(side.workspaceRoot, userHash(user), rel), "utf8") !== content) throw new Error(`${side.name}: ${rel} not written`);
  const followUp = expectText(await chat.turn(STREAM), STREAM_TEXT, `${side.name} follow-up`);
  return { write, followUp, rel, content };
}

/** Iterations alternate which side goes first, so that drift hits both alike. */
async function chatOnOff(ctx: SyncPhaseContext, sides: Record<SideKey, Side>, owui: OpenWebUIDouble): Promise<ChatOnOff> {
  const user: Record<SideKey, string> = { on: "bench-sync-on", off: "bench-sync-off" };
  const samples: Record<SideKey, ChatSamples> = {
    on: { followUpTtft: [], writeTtft: [], writeTotal: [] },
    off: { followUpTtft: [], writeTtft: [], writeTotal: [] },
  };
  const written: Array<{ rel: string; content: string }> = [];
  ctx.log(`sync: chat with sync on vs off, ${CHAT_WARMUP} warm-up + ${ctx.iterations} iterations`);
  let cpuBefore: Record<SideKey, number> | undefined;
  for (let i = 0; i < CHAT_WARMUP + ctx.iterations; i++) {
    if (i === CHAT_WARMUP) {
      await Promise.all([settle(sides.on, ctx), settle(sides.off, ctx)]);
      cpuBefore = { on: cpuTimeMs(sides.on.pid), off: cpuTimeMs(sides.off.pid) };
    }
    const order: SideKey[] = i % 2 === 0 ? ["on", "off"] : ["off", "on"];
    for (const key of order) {
      const r = await chatIteration(sides[key], ctx.apiKey, user[key], i);
      if (i < CHAT_WARMUP) continue;
      samples[key].followUpTtft.push(r.followUp.ttftMs);
      samples[key].writeTtft.push(r.write.ttftMs);
      samples[key].writeTotal.push(r.write.totalMs);
      if (key === "on") written.push(r);
    }
  }
  // Let the last uploads land before reading CPU, so that the sync's work is all counted.
  const abort = new AbortController();
  const all = () => written.every((f) => inKb(owui, user.on, f.rel, f.content)());
  await seenAt(all, "the sync-on side's files", abort.signal).catch((e: Error) => ctx.log(`sync: ${e.message}`));
  const cpu = (key: SideKey) => r2((cpuTimeMs(sides[key].pid) - cpuBefore![key]) / ctx.iterations);
  const pair = (k: keyof ChatSamples) => onOff(samples.off[k], samples.on[k]);
  return {
    iterations: ctx.iterations,
    warmup: CHAT_WARMUP,
    followUpPrompt: `say.slow(${STREAM_TOKENS}, 5), right after the write turn`,
    followUpTtftMs: pair("followUpTtft"),
    writeTtftMs: pair("writeTtft"),
    writeTotalMs: pair("writeTotal"),
    sidecarCpuMsPerIteration: { off: cpu("off"), on: cpu("on") },
    synced: { written: written.length, inKb: written.filter((f) => inKb(owui, user.on, f.rel, f.content)()).length },
  };
}

/** The section's record of a phase that threw. */
export function failedSync(ctx: SyncPhaseContext, e: unknown): SyncFigures {
  return { writes: ctx.writes, iterations: ctx.iterations, pollMs: POLL_MS, error: (e as Error).message ?? String(e) };
}

export async function syncPhase(ctx: SyncPhaseContext): Promise<SyncFigures> {
  const base = { writes: ctx.writes, iterations: ctx.iterations, pollMs: POLL_MS };
  if (process.env.BENCH_SYNC === "0") return { ...base, skipped: "BENCH_SYNC=0" };

  const model = await startScriptedModel();
  ctx.defer(() => model.close());
  const adminKey = `sk-${randomBytes(16).toString("hex")}`; // the double takes only sk-… keys
  const owui = await startOpenWebUIDouble({ apiKey: adminKey, version: "0.12.0" });
  ctx.defer(() => owui.close());

  ctx.log("sync: starting a sync-on and a sync-off sidecar");
  const [on, off] = await Promise.all([
    startSide(ctx, model.baseURL, "sync-on sidecar", { owui, adminKey }),
    startSide(ctx, model.baseURL, "sync-off sidecar"),
  ]);
  // First, while both sidecars are equally fresh: the on side is about to serve many writes.
  const chat = await chatOnOff(ctx, { on, off }, owui);
  const configured = await writeToKb(ctx, { side: on, user: "bench-sync-writer", owui, apiKey: ctx.apiKey });
  await Promise.all([on.stop(), off.stop()]);

  const zero = await startSide(ctx, model.baseURL, "no-debounce sidecar", { owui, adminKey, debounceMs: 0 });
  const undebounced = await writeToKb(ctx, { side: zero, user: "bench-sync-writer-0", owui, apiKey: ctx.apiKey });
  await zero.stop();
  return { ...base, chat, writeToKb: [configured, undebounced] };
}
