/**
 * The concurrency sweep (issue 8): N concurrent streaming chats for each N in BENCH_SWEEP
 * (default 1,10,20,40,80), through a local-mode sidecar and against one opencode called
 * directly, N by N.
 *
 * - Sidecar: N distinct users with one chat each, so local mode runs N opencode processes
 *   (one per user) and the load can spread over the host's cores.
 * - Direct: one `opencode serve` (direct.ts) with N chats in N directories — one process for
 *   all users, as local mode was before per-user processes (and as shared mode still is).
 *
 * Every measured turn is a follow-up in an open chat, streaming SWEEP_TOKENS pieces with
 * SWEEP_DELAY_MS between them at the model, so a stream that arrives in one burst shows as a
 * time to first token close to the total and inter-token gaps near 0. Per N and path: time to
 * first token, the gaps between streamed pieces (all turns pooled), each turn's total, the
 * batch's wall time, and CPU over the batch read from /proc — the sidecar's own process, and
 * the sum over the opencode processes that served it — in cores (CPU time / wall time).
 * Small N are repeated until each path has MIN_TURNS turns.
 *
 * Chats are opened first (a short first turn; for the sidecar that also starts the user's
 * process), and each batch starts once every opencode has gone quiet (settle.ts). The memory
 * of a user's opencode is read after its first prompt, once quiet. An opencode holds over half
 * a GiB after its first prompt, so before each N the phase checks how many new users' processes
 * fit in the memory available (and BENCH_SWEEP_MAX_USERS): when N do not, the N chats are
 * spread over as many users as fit, and the table's process count says so.
 */
import fs from "node:fs";
import path from "node:path";
import { say, startScriptedModel } from "../test/fixtures/scripted-model.js";
import { opencodePids, scriptedEnv, tempDir } from "../test/helpers/harness.js";
import { launchDirect, type DirectOpencode } from "./direct.js";
import { cpuTimeMs, pssBytes, rssBytes } from "./proc.js";
import { waitQuiet } from "./settle.js";
import { launchSidecar, SidecarChat } from "./sidecar.js";
import { median, p95, r2, spread, type Spread } from "./stats.js";
import type { Chat, TurnResult } from "./turn.js";

export const SWEEP_TOKENS = 40;
export const SWEEP_DELAY_MS = 20;
const PROMPT = say.slow(SWEEP_TOKENS, SWEEP_DELAY_MS);
const PROMPT_TEXT = "tok ".repeat(SWEEP_TOKENS);
const OPEN_TEXT = "sweep chat opened";
const OPEN = say.text(OPEN_TEXT);
/** Per N and path, at least this many measured turns (N = 1 runs 10 rounds of one). */
const MIN_TURNS = 10;
/** Chats opened at once: each of the sidecar's starts a new user's process (seconds of CPU). */
const OPEN_PARALLEL = 2;
/** Memory kept free when deciding how many users' processes fit (other work shares the host). */
const MEMORY_MARGIN_BYTES = 3 * 2 ** 30;
/** Before any reading: an idle opencode after its first prompt, with room for its busy peak. */
const FIRST_GUESS_PER_USER_BYTES = 600 * 2 ** 20;
const DIRECT_PER_DIRECTORY_BYTES = 100 * 2 ** 20;
/** Quiet (share of one core) for the processes together: an idle opencode alone uses ~0.5–1 %. */
const QUIET_BASE = 0.05;
const QUIET_PER_PROCESS = 0.01;

export type SweepPath = "sidecar" | "direct";

export interface SweepContext {
  points: number[];
  /** At most this many sidecar users (processes); fewer when they would not fit in memory. */
  maxUsers: number;
  apiKey: string;
  /** Registers an undo step; steps run in reverse order on success, error or signal. */
  defer(fn: () => Promise<void> | void): void;
  log(msg: string): void;
}

/** Quantiles of a large pooled sample (values not kept). */
export interface Summary {
  n: number;
  p50: number;
  p95: number;
  max: number;
}

export interface SweepRow {
  n: number;
  path: SweepPath;
  /** opencode processes serving the batch. */
  processes: number;
  turns: number;
  ttftMs: Spread;
  gapMs: Summary;
  totalMs: Spread;
  /** One batch of N concurrent turns, median over the rounds. */
  wallMs: number;
  /** CPU time over the batches / their wall time; the sidecar's own process only. */
  sidecarCores?: number;
  /** The same for the opencode processes (summed). */
  opencodeCores: number;
  sidecarCpuMsPerTurn?: number;
  opencodeCpuMsPerTurn: number;
  errors: number;
  errorMessages: string[];
}

export interface SweepMemory {
  /** One user's opencode after its first prompt, idle (quiet): VmRSS and PSS, MiB. */
  idleUserRssMiB?: Spread;
  idleUserPssMiB?: Spread;
  /** At the largest N measured, idle: all of the sidecar's opencode processes, and the direct one. */
  atN?: number;
  sidecarProcesses?: number;
  sidecarPssSumMiB?: number;
  directRssMiB?: number;
  directPssMiB?: number;
}

export interface SweepFigures {
  points: number[];
  prompt: string;
  tokens: number;
  delayMs: number;
  rows: SweepRow[];
  memory: SweepMemory;
  /** N whose chats were spread over fewer than N users, and why. */
  fewerUsers: Array<{ n: number; users: number; why: string }>;
  /** N that were not measured, and why. */
  skippedPoints: Array<{ n: number; why: string }>;
  /** The whole phase was not run. */
  skipped?: string;
  /** The phase failed part-way; the rows measured before stand. */
  error?: string;
}

const mib = (bytes: number) => r2(bytes / 2 ** 20);

function summary(values: number[]): Summary {
  return { n: values.length, p50: r2(median(values)), p95: r2(p95(values)), max: r2(values.reduce((a, b) => Math.max(a, b), 0)) };
}

/** BENCH_SWEEP: comma-separated N, or 0 / off to skip the phase. */
export function sweepPoints(raw: string | undefined): number[] {
  if (raw === undefined || raw === "") return [1, 10, 20, 40, 80];
  if (raw === "0" || raw === "off") return [];
  const points = raw.split(",").map((x) => Number(x.trim()));
  if (points.some((n) => !Number.isInteger(n) || n < 1 || n > 500)) throw new Error(`BENCH_SWEEP must be a comma-separated list of integers in 1..500 (or 0), got "${raw}"`);
  return [...new Set(points)].sort((a, b) => a - b);
}

function memAvailableBytes(): number {
  const m = /^MemAvailable:\s+(\d+)\s+kB/m.exec(fs.readFileSync("/proc/meminfo", "utf8"));
  return m ? Number(m[1]) * 1024 : Infinity;
}

/** Sum over processes that may end meanwhile (an ended one counts 0). */
function sumOver(pids: number[], read: (pid: number) => number): number {
  let total = 0;
  for (const pid of pids) {
    try {
      total += read(pid);
    } catch {
      /* gone */
    }
  }
  return total;
}

function expectText(r: TurnResult, expected: string, what: string): TurnResult {
  if (r.text.trimEnd() !== expected.trimEnd()) throw new Error(`${what}: unexpected text ${JSON.stringify(r.text.slice(0, 80))}`);
  return r;
}

export function emptySweep(points: number[], extra: Partial<SweepFigures> = {}): SweepFigures {
  return {
    points,
    prompt: `say.slow(${SWEEP_TOKENS}, ${SWEEP_DELAY_MS}) as a follow-up turn`,
    tokens: SWEEP_TOKENS,
    delayMs: SWEEP_DELAY_MS,
    rows: [],
    memory: {},
    fewerUsers: [],
    skippedPoints: [],
    ...extra,
  };
}

/** Runs the sweep; rows measured before a failure are kept in `into`. */
export async function sweepPhase(ctx: SweepContext, into: SweepFigures = emptySweep(ctx.points)): Promise<SweepFigures> {
  if (ctx.points.length === 0) return { ...into, skipped: "BENCH_SWEEP=0" };
  const model = await startScriptedModel();
  ctx.defer(() => model.close());
  // No idle stops during the phase: each user's process must live from its first turn on.
  // A user may have many chats at once when not every user's process fits in memory.
  const env = scriptedEnv(model.baseURL, {
    LOG_LEVEL: "info",
    SIDECAR_API_KEYS: ctx.apiKey,
    RUNNER_IDLE_TIMEOUT: "0",
    MAX_CONCURRENT_RUNS_PER_USER: String(Math.max(4, ...ctx.points)),
  });
  const sidecarRoot = path.dirname(env.WORKSPACE_ROOT!);
  const directRoot = tempDir("op-bench-sweep-direct-");
  ctx.defer(() => {
    for (const d of [sidecarRoot, directRoot]) fs.rmSync(d, { recursive: true, force: true });
  });
  const opencodeEnv = Object.fromEntries(Object.entries(env).filter(([k]) => k.startsWith("OPENCODE_")));
  const direct = await launchDirect(opencodeEnv, directRoot);
  ctx.defer(() => direct.child.stop());
  const sidecar = launchSidecar(env, { name: "sweep sidecar" });
  ctx.defer(() => sidecar.child.stop());
  try {
    const [url, server] = await Promise.all([sidecar.ready, direct.ready]);
    ctx.defer(() => server.close());
    await measure(ctx, into, url, server, direct.child.pid, sidecar.child.pid, directRoot);
    return into;
  } finally {
    // 80 idle opencode processes would weigh on the phases after this one.
    await Promise.all([sidecar.child.stop(), direct.child.stop()]);
  }
}

async function measure(
  ctx: SweepContext,
  into: SweepFigures,
  url: string,
  server: DirectOpencode,
  directLauncherPid: number,
  sidecarPid: number,
  directRoot: string,
): Promise<void> {
  const [directPid] = opencodePids(directLauncherPid);
  if (directPid === undefined) throw new Error("no opencode process below the direct launcher");
  const sidecarOpencodes = () => opencodePids(sidecarPid);

  const chats: Record<SweepPath, Chat[]> = { sidecar: [], direct: [] };
  /** The sidecar user of each chat (by index), and how many users there are. */
  const userOf: number[] = [];
  let users = 0;
  const newChat: Record<SweepPath, (i: number) => Chat> = {
    sidecar: (i) => new SidecarChat(url, ctx.apiKey, `bench-sweep-user-${userOf[i]! + 1}`),
    direct: (i) => {
      const dir = path.join(directRoot, "workspaces", String(i + 1));
      fs.mkdirSync(dir, { recursive: true });
      return server.newChat(dir);
    },
  };
  /** Opens chats up to `n` (first turns, OPEN_PARALLEL at a time). */
  const open = async (name: SweepPath, n: number) => {
    const pending = Array.from({ length: Math.max(0, n - chats[name].length) }, (_, k) => chats[name].length + k);
    const opened = pending.map((i) => newChat[name](i));
    const next = [...opened.keys()];
    await Promise.all(
      Array.from({ length: OPEN_PARALLEL }, async () => {
        for (let k = next.shift(); k !== undefined; k = next.shift()) {
          const what = `${name} chat ${pending[k]! + 1} opening`;
          const t = await opened[k]!.turn(OPEN).catch((e: Error) => {
            throw new Error(`${what}: ${e.message}`);
          });
          expectText(t, OPEN_TEXT, what);
        }
      }),
    );
    chats[name].push(...opened);
  };
  const quiet = async (what: string) => {
    const pids = [...sidecarOpencodes(), directPid, sidecarPid];
    const s = await waitQuiet(async () => ({ cpuMs: sumOver(pids, cpuTimeMs) }), QUIET_BASE + QUIET_PER_PROCESS * pids.length);
    if (s.timedOut) ctx.log(`sweep: still busy ${Math.round(s.busyMs / 1000)} s after ${what}; going on`);
  };

  const idleRss: number[] = [];
  const idlePss: number[] = [];
  for (const [k, n] of ctx.points.entries()) {
    // Each new user holds an opencode from here on: as many as fit (with room for a busy peak).
    const perUser = idlePss.length ? 1.5 * Math.max(...idlePss) : FIRST_GUESS_PER_USER_BYTES;
    // The direct opencode grows too, with each new directory (~70 MiB each, opencode-server.md).
    const available = memAvailableBytes() - MEMORY_MARGIN_BYTES - (n - chats.direct.length) * DIRECT_PER_DIRECTORY_BYTES;
    const fit = Math.max(0, Math.floor(available / perUser));
    const target = Math.min(n, users + fit, ctx.maxUsers);
    if (target === 0) {
      const why = `no user process fits: ${(Math.max(0, available) / 2 ** 30).toFixed(1)} GiB available beyond a 3 GiB margin`;
      ctx.log(`sweep: N=${n} skipped: ${why}`);
      into.skippedPoints.push({ n, why });
      continue;
    }
    if (target < n) {
      const why =
        target === ctx.maxUsers && users + fit > target
          ? `BENCH_SWEEP_MAX_USERS=${ctx.maxUsers}`
          : `memory: ~${(perUser / 2 ** 20).toFixed(0)} MiB per new user process, ${(Math.max(0, available) / 2 ** 30).toFixed(1)} GiB available beyond a 3 GiB margin`;
      ctx.log(`sweep: N=${n}: ${n} chats over ${target} users (${why})`);
      into.fewerUsers.push({ n, users: target, why });
    }
    for (let i = chats.sidecar.length; i < n; i++) userOf[i] = users < target ? users++ : i % target;
    ctx.log(`sweep: N=${n}: opening ${n - chats.sidecar.length} chats per path`);
    const before = new Set(sidecarOpencodes());
    await open("sidecar", n);
    await open("direct", n);
    await quiet(`opening the chats for N=${n}`);
    for (const pid of sidecarOpencodes().filter((p) => !before.has(p))) {
      idleRss.push(rssBytes(pid));
      idlePss.push(pssBytes(pid));
    }

    const rounds = Math.ceil(MIN_TURNS / n);
    const order: SweepPath[] = k % 2 === 0 ? ["sidecar", "direct"] : ["direct", "sidecar"];
    for (const name of order) {
      ctx.log(`sweep: N=${n} ${name}: ${rounds} round(s) of ${n} concurrent streams`);
      const ok: TurnResult[] = [];
      const errors: string[] = [];
      const walls: number[] = [];
      let wallSum = 0;
      let opencodeCpu = 0;
      let sidecarCpu = 0;
      let processes = 0;
      for (let r = 0; r < rounds; r++) {
        await quiet(`the previous batch`);
        const pids = name === "sidecar" ? sidecarOpencodes() : [directPid];
        processes = Math.max(processes, pids.length);
        const oc0 = sumOver(pids, cpuTimeMs);
        const sc0 = cpuTimeMs(sidecarPid);
        const t0 = performance.now();
        const outcomes = await Promise.allSettled(
          chats[name].slice(0, n).map((chat, i) => chat.turn(PROMPT).then((t) => expectText(t, PROMPT_TEXT, `${name} chat ${i + 1}`))),
        );
        const wall = performance.now() - t0;
        opencodeCpu += sumOver(pids, cpuTimeMs) - oc0;
        sidecarCpu += cpuTimeMs(sidecarPid) - sc0;
        walls.push(wall);
        wallSum += wall;
        for (const o of outcomes) {
          if (o.status === "fulfilled") ok.push(o.value);
          else errors.push((o.reason as Error).message);
        }
      }
      const turns = ok.length + errors.length;
      into.rows.push({
        n,
        path: name,
        processes,
        turns,
        ttftMs: spread(ok.map((t) => t.ttftMs)),
        gapMs: summary(ok.flatMap((t) => t.gapsMs)),
        totalMs: spread(ok.map((t) => t.totalMs)),
        wallMs: r2(median(walls)),
        // The direct path does not go through the sidecar (its CPU then is noise, not reported).
        sidecarCores: name === "sidecar" ? r2(sidecarCpu / wallSum) : undefined,
        opencodeCores: r2(opencodeCpu / wallSum),
        sidecarCpuMsPerTurn: name === "sidecar" ? r2(sidecarCpu / turns) : undefined,
        opencodeCpuMsPerTurn: r2(opencodeCpu / turns),
        errors: errors.length,
        errorMessages: errors.slice(0, 5),
      });
    }
    // Idle figures at the largest N measured so far.
    await quiet(`N=${n}`);
    const pids = sidecarOpencodes();
    into.memory = {
      idleUserRssMiB: spread(idleRss.map(mib)),
      idleUserPssMiB: spread(idlePss.map(mib)),
      atN: n,
      sidecarProcesses: pids.length,
      sidecarPssSumMiB: mib(sumOver(pids, pssBytes)),
      directRssMiB: mib(rssBytes(directPid)),
      directPssMiB: mib(pssBytes(directPid)),
    };
  }
}
