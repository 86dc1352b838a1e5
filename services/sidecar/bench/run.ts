/**
 * Open Persona sidecar benchmark (`npm run bench`).
 *
 * What it answers: how much latency and CPU the sidecar adds on top of opencode itself.
 * - Latency: the same prompts through the sidecar (a child process running dist/main.js)
 *   and directly against a second, identically configured `opencode serve`, alternating.
 * - Concurrency: many streaming chats over several users at once, with the sidecar's CPU
 *   time and RSS read from /proc (its own process only, not its opencode child).
 * - Knowledge-base sync (sync.ts): how soon a file the agent writes is in the user's Open WebUI
 *   knowledge base (against the tests' Open WebUI double), and chat latency with sync on vs off.
 *   BENCH_SYNC=0 skips the phase.
 * - Runner modes (runner-modes.ts): cold start, warm first token and memory per runner of
 *   RUNNER_MODE=docker against RUNNER_MODE=local. Needs a Docker engine and the runner image;
 *   without them only the local mode is measured, and BENCH_DOCKER=0 skips the phase.
 * - Isolation (isolation.ts), with BENCH_RUNNERS=1: one user's runner side by side in each
 *   isolating mode — local sandboxed (bubblewrap), local unsandboxed, docker: cold start, warm
 *   first token, CPU (the per-user plugin install included), PSS per idle user, and a second
 *   start of the same users on their kept data. BENCH_COLD_USERS users per mode; 3–5 min on 2 cores.
 * - Concurrency sweep (sweep.ts): N = 1, 10, 20, 40, 80 concurrent streaming chats through a
 *   local-mode sidecar (N users: one opencode each) and against one opencode called directly:
 *   time to first token, inter-token gap, total, sidecar and opencode CPU. BENCH_SWEEP sets
 *   the list of N (e.g. BENCH_SWEEP=1,10,20); BENCH_SWEEP=0 skips the phase; the sidecar side
 *   uses at most BENCH_SWEEP_MAX_USERS users (default: as many as fit in memory).
 * - Responses API (responses.ts): the same scripted reply streamed by POST /v1/responses and by
 *   POST /v1/chat/completions through the latency phase's sidecar, alternating: first token
 *   (new chat and follow-up) and the time between text deltas. BENCH_RESPONSES_ITERATIONS (10)
 *   sizes it, BENCH_RESPONSES=0 skips it.
 * - Artifacts (artifacts.ts): what collecting a turn's artifacts adds to the turn's end on
 *   workspaces of 100 to 20 000 files, and serving a link. BENCH_ARTIFACTS=0 skips it,
 *   BENCH_ARTIFACTS_ITERATIONS (15) sizes it.
 * - Replicas (replicas.ts), with BENCH_REPLICAS=1: 2 replicas on PostgreSQL vs 1 on files over one
 *   shared opencode under BENCH_REPLICAS_STREAMS (100) concurrent streams, and what the database
 *   adds to a turn's first token (in process: BENCH_REPLICAS_ITERATIONS (500); end to end:
 *   BENCH_REPLICAS_PAIRS (100)). BENCH_ONLY=replicas runs that phase alone (bench/results/replicas.json).
 * - Swarm (swarm.ts), BENCH_ONLY=swarm only (bench/results/swarm.json): swarm runner starts (cold, and
 *   warm from zero) beside docker mode's, and BENCH_SWARM_CHATS_USERS (10) × BENCH_SWARM_CHATS_PER_USER (10)
 *   concurrent streams through a sidecar container on the overlay network; BENCH_SWARM_USERS (5) starts per mode.
 *
 * The scripted model runs in this process: both paths share it, so it cannot favour either.
 * Knobs: BENCH_ITERATIONS (20), BENCH_CONCURRENCY (20), BENCH_USERS (5), BENCH_COLD_USERS (3),
 * BENCH_WARM_ITERATIONS (10), BENCH_DOCKER (1), BENCH_RUNNERS (0), BENCH_SYNC (1), BENCH_SYNC_WRITES (20),
 * BENCH_SYNC_ITERATIONS (15), BENCH_SWEEP (1,10,20,40,80), BENCH_SWEEP_MAX_USERS, BENCH_RESPONSES (1),
 * BENCH_RESPONSES_ITERATIONS (10); RUNNER_IMAGE, RUNNER_MEMORY, RUNNER_CPUS and RUNNER_PIDS reach the
 * docker-mode sidecar, OPENWEBUI_SYNC_DEBOUNCE_MS the sync phase's first sidecar.
 * Prints a report and writes it as JSON to bench/results/latest.json.
 */
import { spawnSync } from "node:child_process";
import { randomBytes } from "node:crypto";
import fs from "node:fs";
import os from "node:os";
import path from "node:path";
import { say, startScriptedModel } from "../test/fixtures/scripted-model.js";
import { scriptedEnv, tempDir } from "../test/helpers/harness.js";
import { launchDirect, type DirectOpencode } from "./direct.js";
import { cpuTimeMs, rssBytes, sampleRss } from "./proc.js";
import { renderIsolation } from "./isolation-report.js";
import { isolationNotRun, isolationPhase, type Isolation, type IsolationContext } from "./isolation.js";
import { renderResponses } from "./responses-report.js";
import { renderReplicas } from "./replicas-report.js";
import { emptyReplicas, replicasBudgetMs, replicasPhase, type ReplicasFigures } from "./replicas.js";
import { renderSwarm } from "./swarm-report.js";
import { emptySwarm, swarmBudgetMs, swarmPhase, type SwarmFigures } from "./swarm.js";
import { artifactsPhase, emptyArtifacts, renderArtifacts, type ArtifactsFigures } from "./artifacts.js";
import { emptyResponses, responsesPhase, type ResponsesFigures } from "./responses.js";
import { renderRunnerModes } from "./runner-modes-report.js";
import { failedRunnerModes, runnerModes, type PhaseContext, type RunnerModes } from "./runner-modes.js";
import { launchSidecar, SIDECAR_DIR, SidecarChat } from "./sidecar.js";
import { median, p95, r2 } from "./stats.js";
import { renderSweep } from "./sweep-report.js";
import { emptySweep, sweepPhase, sweepPoints, type SweepContext, type SweepFigures } from "./sweep.js";
import { renderSync } from "./sync-report.js";
import { failedSync, syncPhase, type SyncFigures, type SyncPhaseContext } from "./sync.js";
import type { Chat, TurnResult } from "./turn.js";

function envInt(name: string, fallback: number, min: number, max: number): number {
  const raw = process.env[name];
  const n = raw ? Number(raw) : fallback;
  if (!Number.isInteger(n) || n < min || n > max) throw new Error(`${name} must be an integer in ${min}..${max}, got "${raw}"`);
  return n;
}

const ITERATIONS = envInt("BENCH_ITERATIONS", 20, 1, 1000);
const CONCURRENCY = envInt("BENCH_CONCURRENCY", 20, 1, 500);
const USERS = envInt("BENCH_USERS", 5, 1, CONCURRENCY);
const COLD_USERS = envInt("BENCH_COLD_USERS", 3, 1, 50);
const WARM_ITERATIONS = envInt("BENCH_WARM_ITERATIONS", 10, 1, 1000);
const SYNC_WRITES = envInt("BENCH_SYNC_WRITES", 20, 1, 1000);
const SYNC_ITERATIONS = envInt("BENCH_SYNC_ITERATIONS", 15, 1, 1000);
const SWEEP = sweepPoints(process.env.BENCH_SWEEP);
const SWEEP_MAX_USERS = envInt("BENCH_SWEEP_MAX_USERS", 500, 1, 500);
const RUNNERS = envInt("BENCH_RUNNERS", 0, 0, 1) === 1;
const RESPONSES = envInt("BENCH_RESPONSES", 1, 0, 1) === 1;
const RESPONSES_ITERATIONS = envInt("BENCH_RESPONSES_ITERATIONS", 10, 1, 1000);
const ARTIFACTS = envInt("BENCH_ARTIFACTS", 1, 0, 1) === 1;
const ARTIFACTS_ITERATIONS = envInt("BENCH_ARTIFACTS_ITERATIONS", 15, 1, 1000);
/** BENCH_ONLY=replicas or swarm: only that phase (the others always run otherwise; swarm only this way). */
const ONLY = process.env.BENCH_ONLY ?? "";
if (ONLY && ONLY !== "replicas" && ONLY !== "swarm") throw new Error(`BENCH_ONLY must be "replicas", "swarm" or unset, got "${ONLY}"`);
const SWARM_USERS = envInt("BENCH_SWARM_USERS", 5, 1, 50);
const SWARM_CHATS_USERS = envInt("BENCH_SWARM_CHATS_USERS", 10, 1, 100);
const SWARM_CHATS_PER_USER = envInt("BENCH_SWARM_CHATS_PER_USER", 10, 1, 100);
const REPLICAS = envInt("BENCH_REPLICAS", ONLY === "replicas" ? 1 : 0, 0, 1) === 1;
const REPLICAS_STREAMS = envInt("BENCH_REPLICAS_STREAMS", 100, 2, 1000);
const REPLICAS_ITERATIONS = envInt("BENCH_REPLICAS_ITERATIONS", 500, 1, 100_000);
const REPLICAS_PAIRS = envInt("BENCH_REPLICAS_PAIRS", 100, 1, 10_000);
/**
 * The first prompts in a new directory pay for opencode's per-directory bootstrap, and both
 * JITs (Bun's and Node's) need a few turns: with 2 warm-up chats, the first measured
 * iterations were still 2–3× slower.
 */
const WARMUP_CHATS = 5;
/**
 * Hard stop for the whole run, whatever hangs: the first phases take about a minute; a cold
 * start takes seconds, and a turn that hangs gives up after TURN_TIMEOUT_MS. The sync phase's
 * writes and iterations take about a second each (a mid-turn write: the debounce and more).
 */
const BENCH_TIMEOUT_MS =
  (ONLY === "swarm" ? swarmBudgetMs(SWARM_USERS, SWARM_CHATS_USERS) : 0) +
  (REPLICAS ? replicasBudgetMs(REPLICAS_STREAMS, REPLICAS_ITERATIONS, REPLICAS_PAIRS) : 0) +
  (10 + COLD_USERS) * 60_000 +
  (2 * SYNC_WRITES + 2 * SYNC_ITERATIONS) * 3_000 +
  // The sweep: a cold start and a settle per user, then a few rounds of streams per N.
  (SWEEP.length ? 5 * 60_000 + Math.max(...SWEEP) * 10_000 + SWEEP.length * 60_000 : 0) +
  // Isolation: per user and mode, a cold start and a restart, each waiting up to a minute for quiet.
  (RUNNERS ? 2 * 60_000 + 3 * 2 * COLD_USERS * 90_000 : 0) +
  // Responses vs chat: two turns per API per iteration (and the warm-up), each well under a second.
  (RESPONSES ? 60_000 + RESPONSES_ITERATIONS * 4 * 3_000 : 0) +
  // Artifacts: building a 20 000-file workspace, then well under a second per iteration and size.
  (ARTIFACTS ? 60_000 + ARTIFACTS_ITERATIONS * 3 * 2_000 : 0);

const SHORT_TEXT = "hello from the benchmark";
const SHORT = say.text(SHORT_TEXT);
const STREAM_TOKENS = 50;
const STREAM = say.slow(STREAM_TOKENS, 5);
const CONCURRENT = say.slow(STREAM_TOKENS, 10);
const STREAM_TEXT = "tok ".repeat(STREAM_TOKENS);

const TARGET_TTFT_MS = 5;
const TARGET_PER_CHUNK_MS = 1;

const API_KEY = `bench-${randomBytes(12).toString("hex")}`;
const RESULTS_FILE = path.join(SIDECAR_DIR, "bench/results/latest.json");

const log = (msg: string) => process.stderr.write(`[bench] ${msg}\n`);

/** Undone in reverse order, on success, error, signal or timeout. */
const cleanups: Array<() => Promise<void> | void> = [];
let cleaning: Promise<void> | undefined;
function cleanup(): Promise<void> {
  cleaning ??= (async () => {
    for (let fn = cleanups.pop(); fn; fn = cleanups.pop()) {
      try {
        await fn();
      } catch (e) {
        log(`cleanup step failed: ${(e as Error).message}`);
      }
    }
  })();
  return cleaning;
}

function newestMtime(dir: string): number {
  let newest = 0;
  for (const e of fs.readdirSync(dir, { withFileTypes: true })) {
    const p = path.join(dir, e.name);
    newest = Math.max(newest, e.isDirectory() ? newestMtime(p) : fs.statSync(p).mtimeMs);
  }
  return newest;
}

/** The sidecar child runs dist/: rebuild when it is missing or older than src/. */
function ensureBuilt(): void {
  const main = path.join(SIDECAR_DIR, "dist/main.js");
  if (fs.existsSync(main) && fs.statSync(main).mtimeMs >= newestMtime(path.join(SIDECAR_DIR, "src"))) return;
  log("dist/ is missing or stale: npm run build");
  const r = spawnSync("npm", ["run", "build"], { cwd: path.resolve(SIDECAR_DIR, "../.."), stdio: ["ignore", 2, 2] });
  if (r.status !== 0) throw new Error(`npm run build failed (status ${r.status})`);
}

interface PathStats {
  ttftP50: number;
  ttftP95: number;
  totalP50: number;
  totalP95: number;
  chunksP50: number;
  ttftMs: number[];
  totalMs: number[];
}

function summarize(results: TurnResult[]): PathStats {
  const ttft = results.map((r) => r.ttftMs);
  const total = results.map((r) => r.totalMs);
  return {
    ttftP50: r2(median(ttft)),
    ttftP95: r2(p95(ttft)),
    totalP50: r2(median(total)),
    totalP95: r2(p95(total)),
    chunksP50: median(results.map((r) => r.chunks)),
    ttftMs: ttft.map(r2),
    totalMs: total.map(r2),
  };
}

function expectText(r: TurnResult, expected: string, what: string): TurnResult {
  // opencode may trim the end of a text part; what matters is that every token arrived.
  if (r.text.trimEnd() !== expected.trimEnd()) throw new Error(`${what}: unexpected text ${JSON.stringify(r.text.slice(0, 80))}`);
  return r;
}

type PathName = "sidecar" | "direct";
interface Samples {
  short: TurnResult[];
  stream: TurnResult[];
}

/** One chat per call: a short first turn (new chat), then a 50-token follow-up turn. */
async function runChat(name: PathName, chat: Chat, into?: Samples): Promise<void> {
  const short = expectText(await chat.turn(SHORT), SHORT_TEXT, `${name} short reply`);
  const stream = expectText(await chat.turn(STREAM), STREAM_TEXT, `${name} ${STREAM_TOKENS}-token stream`);
  into?.short.push(short);
  into?.stream.push(stream);
}

async function latency(sidecarUrl: string, sidecarPid: number, direct: DirectOpencode, directDir: string) {
  const newChat: Record<PathName, () => Chat> = {
    sidecar: () => new SidecarChat(sidecarUrl, API_KEY, "bench-latency"),
    direct: () => direct.newChat(directDir),
  };
  log(`warming up (${WARMUP_CHATS} chats per path)`);
  for (let i = 0; i < WARMUP_CHATS; i++) for (const name of ["sidecar", "direct"] as const) await runChat(name, newChat[name]());

  log(`latency: ${ITERATIONS} iterations, alternating sidecar/direct`);
  const samples: Record<PathName, Samples> = { sidecar: { short: [], stream: [] }, direct: { short: [], stream: [] } };
  const cpuBefore = cpuTimeMs(sidecarPid);
  for (let i = 0; i < ITERATIONS; i++) {
    // Alternate which path goes first so that drift (caches, GC, CPU clock) hits both alike.
    const order: PathName[] = i % 2 === 0 ? ["sidecar", "direct"] : ["direct", "sidecar"];
    for (const name of order) await runChat(name, newChat[name](), samples[name]);
  }
  const cpuMsPerTurn = (cpuTimeMs(sidecarPid) - cpuBefore) / (2 * ITERATIONS);

  const stats = (kind: keyof Samples) => ({ direct: summarize(samples.direct[kind]), sidecar: summarize(samples.sidecar[kind]) });
  const short = stats("short");
  const stream = stats("stream");
  const added = (s: { direct: PathStats; sidecar: PathStats }) => ({
    ttftMs: r2(s.sidecar.ttftP50 - s.direct.ttftP50),
    ttftRatio: r2(s.sidecar.ttftP50 / s.direct.ttftP50),
    totalMs: r2(s.sidecar.totalP50 - s.direct.totalP50),
    // Same iteration = seconds apart: other load on the machine hits both sides of a pair.
    pairedTtftMs: r2(median(s.sidecar.ttftMs.map((t, i) => t - s.direct.ttftMs[i]!))),
  });
  return {
    short: { prompt: "say.text (short reply), first turn of a new chat", ...short, added: added(short) },
    stream: {
      prompt: `say.slow(${STREAM_TOKENS}, 5), follow-up turn`,
      ...stream,
      added: { ...added(stream), perChunkMs: r2((stream.sidecar.totalP50 - stream.direct.totalP50) / stream.sidecar.chunksP50) },
    },
    sidecarCpuMsPerTurn: r2(cpuMsPerTurn),
  };
}

async function concurrency(sidecarUrl: string, pid: number) {
  const users = Array.from({ length: USERS }, (_, i) => `bench-user-${i + 1}`);
  const chats = Array.from({ length: CONCURRENCY }, (_, i) => new SidecarChat(sidecarUrl, API_KEY, users[i % USERS]!));
  // Open every chat first (one short turn each, one user's chats after another), which also
  // warms each user's workspace. The measured turns are then concurrent streams, not a burst
  // of session creations: those are serialized per user by the session map's lock and by
  // opencode, and would dominate the numbers.
  log(`concurrency: opening ${CONCURRENCY} chats for ${USERS} users`);
  await Promise.all(
    users.map(async (_, u) => {
      for (let i = u; i < CONCURRENCY; i += USERS) await chats[i]!.turn(SHORT);
    }),
  );

  log(`concurrency: ${CONCURRENCY} concurrent streams`);
  const rssBefore = rssBytes(pid);
  const cpuBefore = cpuTimeMs(pid);
  const sampler = sampleRss(pid, 100);
  const t0 = performance.now();
  const outcomes = await Promise.allSettled(
    chats.map((chat, i) => chat.turn(CONCURRENT).then((r) => expectText(r, STREAM_TEXT, `chat ${i}`))),
  );
  const wallMs = performance.now() - t0;
  const cpuMs = cpuTimeMs(pid) - cpuBefore;
  const { peakBytes, samples } = sampler.stop();
  const rssAfter = rssBytes(pid);

  const ok = outcomes.flatMap((o) => (o.status === "fulfilled" ? [o.value] : []));
  const errors = outcomes.flatMap((o) => (o.status === "rejected" ? [(o.reason as Error).message] : []));
  const ttft = ok.map((r) => r.ttftMs);
  const mb = (b: number) => r2(b / 2 ** 20);
  return {
    chats: CONCURRENCY,
    users: USERS,
    prompt: `say.slow(${STREAM_TOKENS}, 10) as a follow-up turn`,
    wallMs: r2(wallMs),
    ttftP50: r2(median(ttft)),
    ttftP95: r2(p95(ttft)),
    totalP50: r2(median(ok.map((r) => r.totalMs))),
    sidecarCpuMs: r2(cpuMs),
    sidecarCpuPercentOfCore: r2((cpuMs / wallMs) * 100),
    rssMb: { before: mb(rssBefore), peak: mb(Math.max(peakBytes, rssBefore, rssAfter)), after: mb(rssAfter), samples },
    errors: errors.length,
    errorMessages: errors.slice(0, 5),
  };
}

type Latency = Awaited<ReturnType<typeof latency>>;
type Concurrency = Awaited<ReturnType<typeof concurrency>>;

interface Target {
  name: string;
  valueMs: number;
  targetMs: number;
  pass: boolean;
}

function targets(l: Latency): Target[] {
  const t = (name: string, valueMs: number, targetMs: number) => ({ name, valueMs, targetMs, pass: valueMs < targetMs });
  return [
    t("added TTFT, short reply (new chat)", l.short.added.ttftMs, TARGET_TTFT_MS),
    t(`added TTFT, ${STREAM_TOKENS}-token stream (follow-up)`, l.stream.added.ttftMs, TARGET_TTFT_MS),
    t("added time per streamed chunk", l.stream.added.perChunkMs, TARGET_PER_CHUNK_MS),
  ];
}

function render(
  meta: Record<string, string | number>,
  l: Latency,
  c: Concurrency,
  goals: Target[],
  responses: ResponsesFigures,
  artifacts: ArtifactsFigures,
  sweep: SweepFigures,
  sync: SyncFigures,
  modes: RunnerModes,
  isolation: Isolation,
  replicas: ReplicasFigures,
): string {
  const f = (n: number) => n.toFixed(1).padStart(8);
  const row = (label: string, s: PathStats) =>
    `  ${label.padEnd(9)}${f(s.ttftP50)}${f(s.ttftP95)}${f(s.totalP50)}${f(s.totalP95)}${String(s.chunksP50).padStart(8)}`;
  const signed = (n: number) => `${n >= 0 ? "+" : ""}${n.toFixed(2)} ms`;
  const block = (title: string, s: { direct: PathStats; sidecar: PathStats; added: Latency["short"]["added"] }) => [
    title,
    `  ${"".padEnd(9)}${"TTFT p50".padStart(8)}${"p95".padStart(8)}${"total p50".padStart(10)}${"p95".padStart(6)}${"chunks".padStart(8)}`,
    row("direct", s.direct),
    row("sidecar", s.sidecar),
    `  added: TTFT ${signed(s.added.ttftMs)} (×${s.added.ttftRatio.toFixed(2)}; paired median ${signed(s.added.pairedTtftMs)}), total ${signed(s.added.totalMs)}`,
  ];
  return [
    `Open Persona sidecar benchmark — ${meta.date}`,
    `node ${meta.node}, opencode ${meta.opencode}, ${meta.cpus} CPUs; ${ITERATIONS} iterations after ${WARMUP_CHATS} warm-up chats per path; times in ms`,
    `load average (1 min) before the run: ${meta.loadBefore}${Number(meta.loadBefore) > Number(meta.cpus) / 2 ? " — the machine was busy: expect noisy numbers" : ""}`,
    "",
    ...block(`Short reply (${l.short.prompt})`, l.short),
    "",
    ...block(`Streaming (${l.stream.prompt})`, l.stream),
    `  added per streamed chunk: ${l.stream.added.perChunkMs.toFixed(3)} ms ((total sidecar − total direct) / ${l.stream.sidecar.chunksP50} chunks)`,
    `  sidecar CPU: ${l.sidecarCpuMsPerTurn.toFixed(1)} ms per turn`,
    "",
    "Targets (medians)",
    ...goals.map((g) => `  ${g.pass ? "PASS" : "MISS"}  ${g.name}: ${g.valueMs.toFixed(3)} ms (target < ${g.targetMs} ms)`),
    "",
    `Concurrency: ${c.chats} streaming chats over ${c.users} users, ${c.prompt} each`,
    `  wall time        ${c.wallMs.toFixed(0)} ms (one chat alone streams for ≥ ${STREAM_TOKENS * 10} ms)`,
    `  TTFT             p50 ${c.ttftP50.toFixed(1)} ms, p95 ${c.ttftP95.toFixed(1)} ms; total p50 ${c.totalP50.toFixed(0)} ms`,
    `  sidecar CPU      ${c.sidecarCpuMs.toFixed(0)} ms (${c.sidecarCpuPercentOfCore.toFixed(1)} % of one core over the wall time)`,
    `  sidecar RSS      before ${c.rssMb.before} MB, peak ${c.rssMb.peak} MB, after ${c.rssMb.after} MB (${c.rssMb.samples} samples)`,
    `  errors           ${c.errors}${c.errorMessages.length ? `: ${c.errorMessages.join("; ")}` : ""}`,
    "",
    ...renderResponses(responses),
    "",
    ...renderArtifacts(artifacts),
    "",
    ...renderSweep(sweep),
    "",
    ...renderSync(sync),
    "",
    ...renderRunnerModes(modes),
    "",
    ...renderIsolation(isolation),
    "",
    ...renderReplicas(replicas),
  ].join("\n");
}

/**
 * The runner-modes phase starts its own sidecars (and containers): its failure is reported in
 * its section and fails the run, but does not throw away the figures of the phases before it.
 */
async function runnerModesPhase(): Promise<{ modes: RunnerModes; failed: boolean }> {
  const ctx: PhaseContext = {
    coldUsers: COLD_USERS,
    warmIterations: WARM_ITERATIONS,
    apiKey: API_KEY,
    defer: (fn) => cleanups.push(fn),
    log,
  };
  try {
    return { modes: await runnerModes(ctx), failed: false };
  } catch (e) {
    if (cleaning) throw e; // a signal or the watchdog: the run is over anyway
    log(`runner modes failed: ${(e as Error).stack ?? String(e)}`);
    return { modes: failedRunnerModes(ctx, e), failed: true };
  }
}

/** Like the runner-modes phase; a mode that fails is reported in its column, the others go on. */
async function isolationPhaseOrFailure(): Promise<{ isolation: Isolation; failed: boolean }> {
  const ctx: IsolationContext = { users: COLD_USERS, apiKey: API_KEY, defer: (fn) => cleanups.push(fn), log };
  if (!RUNNERS) return { isolation: isolationNotRun(ctx, { off: "BENCH_RUNNERS=1 runs it" }), failed: false };
  try {
    const isolation = await isolationPhase(ctx);
    return { isolation, failed: Object.values(isolation.modes).some((m) => m.error) };
  } catch (e) {
    if (cleaning) throw e;
    log(`isolation failed: ${(e as Error).stack ?? String(e)}`);
    return { isolation: isolationNotRun(ctx, { error: e }), failed: true };
  }
}

/** On the latency phase's sidecar; like the runner-modes phase, its failure fails the run but keeps the rest. */
async function artifactsPhaseOrFailure(): Promise<{ artifacts: ArtifactsFigures; failed: boolean }> {
  if (!ARTIFACTS) return { artifacts: emptyArtifacts(ARTIFACTS_ITERATIONS, { skipped: "BENCH_ARTIFACTS=0" }), failed: false };
  try {
    return { artifacts: await artifactsPhase(ARTIFACTS_ITERATIONS, log), failed: false };
  } catch (e) {
    log(`artifacts phase failed: ${(e as Error).stack ?? e}`);
    return { artifacts: emptyArtifacts(ARTIFACTS_ITERATIONS, { error: (e as Error).message ?? String(e) }), failed: true };
  }
}

const REPLICAS_RESULTS_FILE = path.join(SIDECAR_DIR, "bench/results/replicas.json");

/** Like the runner-modes phase; its figures also go to bench/results/replicas.json. */
async function replicasPhaseOrFailure(): Promise<{ replicas: ReplicasFigures; failed: boolean }> {
  if (!REPLICAS) return { replicas: emptyReplicas(REPLICAS_STREAMS, REPLICAS_ITERATIONS, REPLICAS_PAIRS, { skipped: "BENCH_REPLICAS=1 runs it" }), failed: false };
  let out: { replicas: ReplicasFigures; failed: boolean };
  try {
    const replicas = await replicasPhase({ streams: REPLICAS_STREAMS, iterations: REPLICAS_ITERATIONS, pairs: REPLICAS_PAIRS, apiKey: API_KEY, defer: (fn) => cleanups.push(fn), log });
    out = { replicas, failed: replicas.load?.some((l) => l.errors > 0) ?? true };
  } catch (e) {
    if (cleaning) throw e;
    log(`replicas failed: ${(e as Error).stack ?? String(e)}`);
    out = { replicas: emptyReplicas(REPLICAS_STREAMS, REPLICAS_ITERATIONS, REPLICAS_PAIRS, { error: (e as Error).message ?? String(e) }), failed: true };
  }
  fs.mkdirSync(path.dirname(REPLICAS_RESULTS_FILE), { recursive: true });
  fs.writeFileSync(REPLICAS_RESULTS_FILE, JSON.stringify({ date: new Date().toISOString(), ...out.replicas }, null, 2) + "\n");
  log(`replicas results written to ${path.relative(process.cwd(), REPLICAS_RESULTS_FILE)}`);
  return out;
}

const SWARM_RESULTS_FILE = path.join(SIDECAR_DIR, "bench/results/swarm.json");

/** Like the replicas phase; its figures go to bench/results/swarm.json. */
async function swarmPhaseOrFailure(): Promise<{ swarm: SwarmFigures; failed: boolean }> {
  const sizes = { users: SWARM_USERS, loadUsers: SWARM_CHATS_USERS, chatsPerUser: SWARM_CHATS_PER_USER };
  let out: { swarm: SwarmFigures; failed: boolean };
  try {
    const swarm = await swarmPhase({ ...sizes, apiKey: API_KEY, defer: (fn) => cleanups.push(fn), log });
    out = { swarm, failed: !!swarm.skipped || !!swarm.load?.rounds.some((r) => r.errors > 0) || !!swarm.load?.startErrors };
  } catch (e) {
    if (cleaning) throw e;
    log(`swarm failed: ${(e as Error).stack ?? String(e)}`);
    out = { swarm: emptySwarm(sizes, { error: (e as Error).message ?? String(e) }), failed: true };
  }
  fs.mkdirSync(path.dirname(SWARM_RESULTS_FILE), { recursive: true });
  fs.writeFileSync(SWARM_RESULTS_FILE, JSON.stringify({ date: new Date().toISOString(), ...out.swarm }, null, 2) + "\n");
  log(`swarm results written to ${path.relative(process.cwd(), SWARM_RESULTS_FILE)}`);
  return out;
}

async function responsesPhaseOrFailure(sidecarUrl: string): Promise<{ responses: ResponsesFigures; failed: boolean }> {
  if (!RESPONSES) return { responses: emptyResponses(RESPONSES_ITERATIONS, { skipped: "BENCH_RESPONSES=0" }), failed: false };
  try {
    // The latency phase's user: its runner is warm.
    return { responses: await responsesPhase({ url: sidecarUrl, apiKey: API_KEY, userId: "bench-latency", iterations: RESPONSES_ITERATIONS, log }), failed: false };
  } catch (e) {
    if (cleaning) throw e;
    log(`responses failed: ${(e as Error).stack ?? String(e)}`);
    return { responses: emptyResponses(RESPONSES_ITERATIONS, { error: (e as Error).message ?? String(e) }), failed: true };
  }
}

/** Like the runner-modes phase; the rows measured before a failure are kept. */
async function sweepPhaseOrFailure(): Promise<{ sweep: SweepFigures; failed: boolean }> {
  const ctx: SweepContext = { points: SWEEP, maxUsers: SWEEP_MAX_USERS, apiKey: API_KEY, defer: (fn) => cleanups.push(fn), log };
  const into = emptySweep(SWEEP);
  try {
    return { sweep: await sweepPhase(ctx, into), failed: false };
  } catch (e) {
    if (cleaning) throw e;
    log(`sweep failed: ${(e as Error).stack ?? String(e)}`);
    return { sweep: { ...into, error: (e as Error).message ?? String(e) }, failed: true };
  }
}

/** Like the runner-modes phase: its failure fails the run but keeps the other figures. */
async function syncPhaseOrFailure(): Promise<{ sync: SyncFigures; failed: boolean }> {
  const ctx: SyncPhaseContext = {
    writes: SYNC_WRITES,
    iterations: SYNC_ITERATIONS,
    apiKey: API_KEY,
    defer: (fn) => cleanups.push(fn),
    log,
  };
  try {
    return { sync: await syncPhase(ctx), failed: false };
  } catch (e) {
    if (cleaning) throw e;
    log(`sync failed: ${(e as Error).stack ?? String(e)}`);
    return { sync: failedSync(ctx, e), failed: true };
  }
}

async function main(): Promise<boolean> {
  // Other work on the machine is the main source of noise: record how busy it was.
  const loadBefore = r2(os.loadavg()[0]!);
  ensureBuilt();
  if (ONLY === "swarm") {
    const { swarm, failed } = await swarmPhaseOrFailure();
    process.stdout.write(renderSwarm(swarm).join("\n") + "\n");
    return !failed;
  }
  if (ONLY === "replicas") {
    const { replicas, failed } = await replicasPhaseOrFailure();
    process.stdout.write(renderReplicas(replicas).join("\n") + "\n");
    return !failed;
  }
  const model = await startScriptedModel();
  cleanups.push(() => model.close());

  const env = scriptedEnv(model.baseURL, {
    LOG_LEVEL: "info",
    SIDECAR_API_KEYS: API_KEY,
    // Measure throughput, not the per-user cap: allow every chat of the concurrency phase.
    MAX_CONCURRENT_RUNS_PER_USER: String(Math.max(4, Math.ceil(CONCURRENCY / USERS))),
  });
  const sidecarRoot = path.dirname(env.WORKSPACE_ROOT!);
  const directRoot = tempDir("op-bench-direct-");
  const directDir = path.join(directRoot, "workspace");
  fs.mkdirSync(directDir);
  cleanups.push(() => {
    for (const d of [sidecarRoot, directRoot]) fs.rmSync(d, { recursive: true, force: true });
  });

  log("starting the sidecar and the direct opencode");
  // The direct server gets exactly the opencode settings the sidecar forwards to its runner.
  const opencodeEnv = Object.fromEntries(Object.entries(env).filter(([k]) => k.startsWith("OPENCODE_")));
  const direct = await launchDirect(opencodeEnv, directRoot);
  cleanups.push(() => direct.child.stop());
  const sidecar = launchSidecar(env);
  cleanups.push(() => sidecar.child.stop());
  const [sidecarUrl, directServer] = await Promise.all([sidecar.ready, direct.ready]);
  cleanups.push(() => directServer.close());
  const pid = sidecar.child.pid;

  const lat = await latency(sidecarUrl, pid, directServer, directDir);
  // Before the concurrency phase, whose new users' directories keep opencode busy a while.
  const responses = await responsesPhaseOrFailure(sidecarUrl);
  const conc = await concurrency(sidecarUrl, pid);
  const opencodeVersion = (await directServer.health()).version ?? "?";
  // Done with them: their opencode may still be busy with the concurrency phase's new user
  // directories, which would land on the runner-modes phase's cold starts.
  directServer.close();
  await Promise.all([sidecar.child.stop(), direct.child.stop()]);
  // Its own sidecar and direct opencode; they are stopped (cleanups) only at the very end.
  const sweep = await sweepPhaseOrFailure();
  // The sync phase stops its sidecars when it ends: the runner modes' cold starts need quiet.
  const sync = await syncPhaseOrFailure();
  const artifacts = await artifactsPhaseOrFailure();
  const { modes, failed } = await runnerModesPhase();
  const isolation = await isolationPhaseOrFailure();
  const replicas = await replicasPhaseOrFailure();
  const goals = targets(lat);
  const meta = {
    date: new Date().toISOString(),
    node: process.version,
    opencode: opencodeVersion,
    cpus: os.cpus().length,
    loadBefore,
    iterations: ITERATIONS,
    warmupChats: WARMUP_CHATS,
    coldUsers: COLD_USERS,
    warmIterations: WARM_ITERATIONS,
    syncWrites: SYNC_WRITES,
    syncIterations: SYNC_ITERATIONS,
    sweep: SWEEP.join(","),
    responsesIterations: RESPONSES ? RESPONSES_ITERATIONS : 0,
    artifactsIterations: ARTIFACTS ? ARTIFACTS_ITERATIONS : 0,
  };

  process.stdout.write(render(meta, lat, conc, goals, responses.responses, artifacts.artifacts, sweep.sweep, sync.sync, modes, isolation.isolation, replicas.replicas) + "\n");
  fs.mkdirSync(path.dirname(RESULTS_FILE), { recursive: true });
  const results = { meta, latency: lat, concurrency: conc, targets: goals, responses: responses.responses, artifacts: artifacts.artifacts, sweep: sweep.sweep, sync: sync.sync, runnerModes: modes, isolation: isolation.isolation, replicas: replicas.replicas };
  fs.writeFileSync(RESULTS_FILE, JSON.stringify(results, null, 2) + "\n");
  log(`results written to ${path.relative(process.cwd(), RESULTS_FILE)}`);
  return !failed && !responses.failed && !artifacts.failed && !sync.failed && !sweep.failed && !isolation.failed && !replicas.failed;
}

for (const signal of ["SIGINT", "SIGTERM"] as const) {
  process.once(signal, () => {
    log(`${signal}: cleaning up`);
    void cleanup().finally(() => process.exit(130));
  });
}
const watchdog = setTimeout(() => {
  log(`still running after ${BENCH_TIMEOUT_MS / 1000} s: giving up`);
  void cleanup().finally(() => process.exit(1));
}, BENCH_TIMEOUT_MS);

let exitCode = 0;
try {
  if (!(await main())) exitCode = 1;
} catch (e) {
  // Once a signal or the watchdog started the cleanup, failures are its echo: stay quiet.
  if (!cleaning) log(`failed: ${(e as Error).stack ?? String(e)}`);
  exitCode = 1;
}
clearTimeout(watchdog);
await cleanup();
// Pooled keep-alive sockets would hold the event loop open a little longer: end now.
process.exit(exitCode);
