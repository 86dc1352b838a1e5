/**
 * The runner-modes phase: what a user waits for, and what a runner costs, in RUNNER_MODE=docker
 * (one opencode container per user) against RUNNER_MODE=local (one opencode process per user).
 *
 * - Cold start, docker: the first request of a new user (no container yet) through a
 *   docker-mode sidecar; the turn pays for creating and starting the container, opencode's
 *   boot inside it and the new session.
 * - Cold start, local: a fresh local-mode sidecar (fresh STATE_ROOT) spawned from nothing,
 *   timed from the spawn and, apart, from the first request sent once /readyz is ready (that
 *   request starts the user's opencode). Plus the local counterpart of a docker cold start: a
 *   new user on a sidecar already up (also the start of that user's opencode).
 * - Warm: an existing user's runner, first token of a new chat and of a follow-up turn.
 * - Memory per runner: each container's working set (docker stats) and the VmRSS of the user's
 *   local opencode process, right after the first prompt and after sitting idle.
 * - The work opencode goes on doing after the first turn (settle.ts): each cold start waits
 *   for the previous runner to go quiet, and the report says how long that took.
 *
 * Both modes share one scripted model (listening beyond loopback: containers reach it through
 * the host gateway as host.docker.internal) and alternate, so machine load hits both alike.
 * "Cold" means no runner yet, not cold disk caches: the image and the opencode binary were
 * read before, as on any server that has run once.
 */
import { randomBytes } from "node:crypto";
import fs from "node:fs";
import path from "node:path";
import type Docker from "dockerode";
import { userHash } from "../src/workspace/user-space.js";
import { say, startScriptedModel } from "../test/fixtures/scripted-model.js";
import { opencodePids, scriptedEnv } from "../test/helpers/harness.js";
import { containerSample, probeEngine, removeBenchResources, runnerContainerId } from "./docker.js";
import { cpuTimeMs, rssBytes } from "./proc.js";
import { waitQuiet, type Sampler, type Settled } from "./settle.js";
import { launchSidecar, SidecarChat } from "./sidecar.js";
import { spread, type Spread } from "./stats.js";
import type { TurnResult } from "./turn.js";

/** How long runners sit quiet (see settle.ts) before the idle memory reading. */
const IDLE_MS = 5000;
/** Warm chats per mode before the measured ones: the first turns after a cold start are slower. */
const WARM_WARMUP = 2;
/** /readyz poll interval while the local cold start is timed: the interval is measurement slack. */
const READY_POLL_MS = 10;

const TEXT = "hello from the runner modes";
const PROMPT = say.text(TEXT);

export interface PhaseContext {
  coldUsers: number;
  warmIterations: number;
  apiKey: string;
  /** Registers an undo step; steps run in reverse order on success, error or signal. */
  defer(fn: () => Promise<void> | void): void;
  log(msg: string): void;
}

export type { Spread };

export interface WarmFigures {
  newChatTtftMs: Spread;
  sameChatTtftMs: Spread;
}

export interface MemoryFigures {
  /** How the figure is taken. */
  measure: string;
  /** Right after the first turn ended. */
  afterFirstPromptMiB?: Spread;
  /** The highest reading while the runner was still busy after that turn. */
  peakMiB?: Spread;
  /** After going quiet and sitting idle for IDLE_MS (or longer: earlier runners wait for later ones). */
  idleMiB?: Spread;
  /** Why there are no figures (e.g. the engine keeps no memory accounting). */
  note?: string;
}

/** What opencode went on doing after the first turn, until it went quiet. */
export interface AfterFirstTurn {
  busyMs: Spread;
  cpuMs: Spread;
  /** Runners that were still busy when the wait gave up. */
  timedOut: number;
}

export interface DockerFigures {
  engine: string;
  image: string;
  limits: { memory: string; cpus: string };
  coldTtftMs: Spread;
  coldTotalMs: Spread;
  afterFirstTurn: AfterFirstTurn;
  warm: WarmFigures;
  memory: MemoryFigures;
}

export interface LocalFigures {
  coldSpawnToReadyMs: Spread;
  coldSpawnToFirstTokenMs: Spread;
  coldRequestTtftMs: Spread;
  /** A new user on a sidecar already running (starts their opencode): the local counterpart of a docker cold start. */
  newUserTtftMs: Spread;
  afterFirstTurn: AfterFirstTurn;
  warm: WarmFigures;
  memory: MemoryFigures;
}

export interface RunnerModes {
  coldUsers: number;
  warmIterations: number;
  idleMs: number;
  /** The whole phase was not run. */
  skipped?: string;
  /** Only the local mode was measured. */
  dockerSkipped?: string;
  /** The phase failed part-way; the other phases' figures still stand. */
  error?: string;
  local?: LocalFigures;
  docker?: DockerFigures;
}

const mib = (bytes: number) => bytes / 2 ** 20;
const sleep = (ms: number) => new Promise((r) => setTimeout(r, ms));

function expectText(r: TurnResult, what: string): TurnResult {
  if (r.text.trimEnd() !== TEXT) throw new Error(`${what}: unexpected text ${JSON.stringify(r.text.slice(0, 80))}`);
  return r;
}

/** A runner that has served its first prompt: who owns it and how to read it. */
interface Runner {
  url: string;
  user: string;
  sample: Sampler;
  /** Local mode: the sidecar process (its users' opencode processes are below it). */
  sidecarPid?: number;
  /** From its first turn's end until it went quiet. */
  settled?: Settled;
  stop?(): Promise<void>;
}

/** Waits for the runner's work after its first turn to end (keeping what was seen). */
async function settle(r: Runner, what: string, ctx: PhaseContext): Promise<void> {
  r.settled = await waitQuiet(r.sample);
  if (r.settled.timedOut) ctx.log(`runner modes: ${what} was still busy ${Math.round(r.settled.busyMs / 1000)} s after its turn; going on`);
}

interface DockerSide {
  docker: Docker;
  url: string;
  users: string[];
}

/** A docker-mode sidecar on its own network; what it creates is removed on cleanup. */
async function startDockerSide(ctx: PhaseContext, docker: Docker, image: string, modelPort: number, run: string): Promise<DockerSide> {
  const network = `op-bench-${run}`;
  const users = Array.from({ length: ctx.coldUsers }, (_, i) => `bench-cold-${run}-${i + 1}`);
  const env = scriptedEnv(`http://host.docker.internal:${modelPort}/v1`, {
    RUNNER_MODE: "docker",
    RUNNER_NETWORK: network,
    RUNNER_IMAGE: image,
    // Never stop a runner during the phase: the idle reading needs it running.
    RUNNER_IDLE_TIMEOUT: "0",
    LOG_LEVEL: "info",
    SIDECAR_API_KEYS: ctx.apiKey,
    ...passThrough("RUNNER_MEMORY", "RUNNER_CPUS", "RUNNER_PIDS", "DOCKER_HOST"),
  });
  const root = path.dirname(env.WORKSPACE_ROOT!);
  // Undone in reverse: stop the sidecar (nothing recreates runners after that), remove the
  // containers, volumes and network, then the workspaces they had mounted.
  ctx.defer(() => fs.rmSync(root, { recursive: true, force: true }));
  ctx.defer(async () => {
    for (const problem of await removeBenchResources(docker, users.map(userHash), network)) ctx.log(`cleanup: ${problem}`);
  });
  const sc = launchSidecar(env, { name: "docker-mode sidecar" });
  ctx.defer(() => sc.child.stop());
  return { docker, url: await sc.ready, users };
}

function passThrough(...names: string[]): Record<string, string> {
  return Object.fromEntries(names.flatMap((n) => (process.env[n] ? [[n, process.env[n]!]] : [])));
}

async function coldDockerUser(side: DockerSide, k: number, apiKey: string): Promise<{ turn: TurnResult; runner: Runner }> {
  const user = side.users[k]!;
  const turn = expectText(await new SidecarChat(side.url, apiKey, user).turn(PROMPT), `docker cold start ${k + 1}`);
  const id = await runnerContainerId(side.docker, userHash(user));
  if (!id) throw new Error(`no runner container for ${user} after its first turn`);
  return { turn, runner: { url: side.url, user, sample: () => containerSample(side.docker, id) } };
}

interface LocalCold {
  spawnToReadyMs: number;
  spawnToFirstTokenMs: number;
  turn: TurnResult;
  runner: Runner;
}

/** A local-mode sidecar from nothing (fresh STATE_ROOT), then its first request. */
async function coldLocalSidecar(ctx: PhaseContext, modelPort: number, k: number, run: string): Promise<LocalCold> {
  const env = scriptedEnv(`http://127.0.0.1:${modelPort}/v1`, { LOG_LEVEL: "info", SIDECAR_API_KEYS: ctx.apiKey });
  const root = path.dirname(env.WORKSPACE_ROOT!);
  ctx.defer(() => fs.rmSync(root, { recursive: true, force: true }));
  const sc = launchSidecar(env, { name: `local-mode sidecar ${k + 1}`, readyPollMs: READY_POLL_MS });
  ctx.defer(() => sc.child.stop());
  const url = await sc.ready;
  const readyAt = performance.now();
  const user = `bench-local-${run}-${k + 1}`;
  const turn = expectText(await new SidecarChat(url, ctx.apiKey, user).turn(PROMPT), `local cold start ${k + 1}`);
  // The opencode server is the sidecar's grandchild (bin/tie-to-parent.sh sits between).
  const [pid] = opencodePids(sc.child.pid);
  if (pid === undefined) throw new Error(`no opencode process below local-mode sidecar ${k + 1}`);
  return {
    spawnToReadyMs: readyAt - sc.spawnedAt,
    spawnToFirstTokenMs: readyAt - sc.spawnedAt + turn.ttftMs,
    turn,
    runner: {
      url,
      user,
      sample: async () => ({ cpuMs: cpuTimeMs(pid), memBytes: rssBytes(pid) }),
      sidecarPid: sc.child.pid,
      stop: () => sc.child.stop(),
    },
  };
}

const toSpread = (xs: Array<number | undefined>, scale = (x: number) => x): Spread | undefined => {
  const known = xs.filter((x): x is number => x !== undefined).map(scale);
  return known.length ? spread(known) : undefined;
};

/** Memory after the first turn and at its peak (seen while settling), and now, idle. */
async function memoryFigures(runners: Runner[], measure: string): Promise<MemoryFigures> {
  const idle = await Promise.all(runners.map((r) => r.sample().then((x) => x.memBytes, () => undefined)));
  const afterFirstPromptMiB = toSpread(runners.map((r) => r.settled?.firstMemBytes), mib);
  const peakMiB = toSpread(runners.map((r) => r.settled?.peakMemBytes), mib);
  const idleMiB = toSpread(idle, mib);
  if (!afterFirstPromptMiB && !idleMiB) return { measure, note: "no memory figures: the engine reports no memory usage" };
  return { measure, afterFirstPromptMiB, peakMiB, idleMiB };
}

function afterFirstTurn(runners: Runner[]): AfterFirstTurn {
  const settled = runners.flatMap((r) => (r.settled ? [r.settled] : []));
  return {
    busyMs: spread(settled.map((s) => s.busyMs)),
    cpuMs: spread(settled.map((s) => s.cpuMs)),
    timedOut: settled.filter((s) => s.timedOut).length,
  };
}

interface WarmTarget {
  mode: "docker" | "local";
  url: string;
  user: string;
}

/**
 * New chats of an existing user, each followed by a turn in the same chat; the modes take
 * turns going first, as in the latency phase, so that drift hits both alike.
 */
async function warm(targets: WarmTarget[], ctx: PhaseContext): Promise<Map<WarmTarget["mode"], WarmFigures>> {
  const samples = new Map(targets.map((t) => [t.mode, { fresh: [] as number[], same: [] as number[] }]));
  for (let i = 0; i < WARM_WARMUP + ctx.warmIterations; i++) {
    const order = i % 2 === 0 ? targets : [...targets].reverse();
    for (const t of order) {
      const chat = new SidecarChat(t.url, ctx.apiKey, t.user);
      const fresh = expectText(await chat.turn(PROMPT), `${t.mode} warm new chat`);
      const same = expectText(await chat.turn(PROMPT), `${t.mode} warm follow-up`);
      if (i < WARM_WARMUP) continue;
      samples.get(t.mode)!.fresh.push(fresh.ttftMs);
      samples.get(t.mode)!.same.push(same.ttftMs);
    }
  }
  return new Map([...samples].map(([mode, s]) => [mode, { newChatTtftMs: spread(s.fresh), sameChatTtftMs: spread(s.same) }]));
}

/** The section's record of a phase that threw. */
export function failedRunnerModes(ctx: PhaseContext, e: unknown): RunnerModes {
  return { coldUsers: ctx.coldUsers, warmIterations: ctx.warmIterations, idleMs: IDLE_MS, error: (e as Error).message ?? String(e) };
}

export async function runnerModes(ctx: PhaseContext): Promise<RunnerModes> {
  const base = { coldUsers: ctx.coldUsers, warmIterations: ctx.warmIterations, idleMs: IDLE_MS };
  if (process.env.BENCH_DOCKER === "0") return { ...base, skipped: "BENCH_DOCKER=0" };

  const image = process.env.RUNNER_IMAGE || "open-persona-runner:latest";
  const engine = await probeEngine(image);
  if (!engine.ok) ctx.log(`runner modes: ${engine.why}; measuring the local mode only`);
  const model = await startScriptedModel(0, "0.0.0.0");
  ctx.defer(() => model.close());
  const run = randomBytes(4).toString("hex");
  const side = engine.ok ? await startDockerSide(ctx, engine.docker, image, model.port, run) : undefined;

  ctx.log(`runner modes: cold starts, ${ctx.coldUsers} per mode${side ? "" : " (local only)"}`);
  const dockerColds: Array<{ turn: TurnResult; runner: Runner }> = [];
  const localColds: LocalCold[] = [];
  for (let k = 0; k < ctx.coldUsers; k++) {
    // Each cold start runs alone: it begins once the runner before it has gone quiet.
    if (side) {
      const c = await coldDockerUser(side, k, ctx.apiKey);
      await settle(c.runner, `docker runner ${k + 1}`, ctx);
      dockerColds.push(c);
    }
    const l = await coldLocalSidecar(ctx, model.port, k, run);
    await settle(l.runner, `local opencode ${k + 1}`, ctx);
    localColds.push(l);
  }

  ctx.log(`runner modes: ${IDLE_MS / 1000} s idle, then memory`);
  await sleep(IDLE_MS);
  const dockerMemory = side
    ? await memoryFigures(
        dockerColds.map((c) => c.runner),
        "container working set = docker stats usage − inactive file cache (whole cgroup: opencode + init + its tmpfs)",
      )
    : undefined;
  const localMemory = await memoryFigures(
    localColds.map((l) => l.runner),
    "VmRSS of the user's opencode process (one per user)",
  );
  // One local sidecar is enough from here on; the others would only add noise.
  const [localMain, ...localRest] = localColds.map((l) => l.runner);
  await Promise.all(localRest.map((r) => r.stop?.()));

  ctx.log(`runner modes: new users on a running local-mode sidecar (${ctx.coldUsers})`);
  const newUser: number[] = [];
  // Every opencode process of the sidecar: each new user gets their own.
  const allLocal: Sampler = async () => {
    let cpuMs = 0;
    for (const pid of opencodePids(localMain!.sidecarPid!)) cpuMs += cpuTimeMs(pid);
    return { cpuMs };
  };
  for (let k = 0; k < ctx.coldUsers; k++) {
    const chat = new SidecarChat(localMain!.url, ctx.apiKey, `bench-local-new-${run}-${k + 1}`);
    newUser.push(expectText(await chat.turn(PROMPT), "local new user").ttftMs);
    // A new user's process and directory set off the same background work as a first turn.
    await waitQuiet(allLocal);
  }

  ctx.log(`runner modes: warm turns (${WARM_WARMUP} warm-up + ${ctx.warmIterations} per mode)`);
  const targets: WarmTarget[] = [{ mode: "local", url: localMain!.url, user: localMain!.user }];
  if (side) targets.unshift({ mode: "docker", url: side.url, user: dockerColds[0]!.runner.user });
  const warmed = await warm(targets, ctx);

  const local: LocalFigures = {
    coldSpawnToReadyMs: spread(localColds.map((l) => l.spawnToReadyMs)),
    coldSpawnToFirstTokenMs: spread(localColds.map((l) => l.spawnToFirstTokenMs)),
    coldRequestTtftMs: spread(localColds.map((l) => l.turn.ttftMs)),
    newUserTtftMs: spread(newUser),
    afterFirstTurn: afterFirstTurn(localColds.map((l) => l.runner)),
    warm: warmed.get("local")!,
    memory: localMemory,
  };
  if (!side || !engine.ok) return { ...base, dockerSkipped: engine.ok ? "not run" : engine.why, local };
  const docker: DockerFigures = {
    engine: engine.version,
    image,
    limits: { memory: process.env.RUNNER_MEMORY || "none", cpus: process.env.RUNNER_CPUS || "none" },
    coldTtftMs: spread(dockerColds.map((c) => c.turn.ttftMs)),
    coldTotalMs: spread(dockerColds.map((c) => c.turn.totalMs)),
    afterFirstTurn: afterFirstTurn(dockerColds.map((c) => c.runner)),
    warm: warmed.get("docker")!,
    memory: dockerMemory!,
  };
  return { ...base, local, docker };
}
