/**
 * The isolation phase (BENCH_RUNNERS=1): what one user's runner costs in each isolating mode,
 * side by side — local with a bubblewrap sandbox per user (LOCAL_SANDBOX=on), local without
 * one (LOCAL_SANDBOX=off), and docker (one container per user). One sidecar per mode, all on
 * one scripted model; BENCH_COLD_USERS users per mode, started one at a time, the modes taking
 * turns so that load from elsewhere on the machine hits them alike. Per user:
 * - cold start: the first request (no runner yet) → first token; from the sidecar's log, the
 *   request → runner healthy with its event stream open (local: "user opencode ready"; docker
 *   logs no such line) and → session created (every mode);
 * - the runner's CPU up to the end of that turn, then in the background until it goes quiet
 *   (settle.ts). opencode installs its plugin package into its config dir on first start:
 *   sandboxed, each user has their own config dir and pays for it, as in docker (the dir is on
 *   the user's data volume); unsandboxed, the dir is shared and only the first user pays;
 * - memory once quiet: PSS of the runner's process tree (local: the user's spawned process and
 *   everything below it; docker: the container's processes, read from the host) and, docker,
 *   the container's working set (engine stats); again at the end, all users up and idle;
 * - warm: the user's second request (a follow-up in the same chat), then a new chat.
 * Then a restart: every sidecar stops (a local runner ends with it; docker containers are
 * stopped as an idle stop does), new sidecars start on the same data, and each user's next
 * request starts their runner again, config dir already filled: is that cheaper?
 */
import { randomBytes } from "node:crypto";
import fs from "node:fs";
import path from "node:path";
import type Docker from "dockerode";
import { userHash } from "../src/workspace/user-space.js";
import { say, startScriptedModel } from "../test/fixtures/scripted-model.js";
import { descendants, scriptedEnv } from "../test/helpers/harness.js";
import type { Child } from "./children.js";
import { DockerRunner } from "../src/runners/docker-runner.js";
import { containerSample, probeEngine, removeBenchResources, runnerContainerId } from "./docker.js";
import { treeReading } from "./proc.js";
import { waitQuiet, type RunnerSample } from "./settle.js";
import { launchSidecar, SidecarChat } from "./sidecar.js";
import { spread, type Spread } from "./stats.js";
import { TURN_TIMEOUT_MS, type TurnResult } from "./turn.js";

export const ISOLATION_MODES = ["sandboxed", "unsandboxed", "docker"] as const;
export type IsolationMode = (typeof ISOLATION_MODES)[number];

/** How long every runner sits idle before the final memory reading. */
const IDLE_MS = 5000;
const TEXT = "hello from the isolation phase";
const PROMPT = say.text(TEXT);

export interface IsolationContext {
  users: number;
  apiKey: string;
  defer(fn: () => Promise<void> | void): void;
  log(msg: string): void;
}

/** One start of a user's runner (a cold start, or a restart on existing data). */
export interface StartFigures {
  ttftMs: number;
  /** Request → runner healthy and its event stream open (sidecar log); local modes only. */
  readyMs?: number;
  /** Request → opencode session created (sidecar log). */
  sessionMs?: number;
  /** CPU of the runner from its spawn to the end of the turn, ms. */
  turnCpuMs: number;
  /** CPU from the end of the turn until quiet (a plugin install awaited first, see start()), ms. */
  backgroundCpuMs: number;
  /** From the end of the turn until quiet, ms. */
  busyMs: number;
  /** It never went quiet within settle.ts's limit. */
  timedOut: boolean;
  /** The plugin package was installed into the runner's config dir during this start. */
  installedPlugin: boolean;
  /** Request → that install done. */
  pluginInstalledMs?: number;
}

export interface MemoryReading {
  pssMiB: number;
  rssMiB: number;
  /** docker: the container's working set (docker stats' figure). */
  workingSetMiB?: number;
  processes: number;
}

export interface UserFigures {
  user: string;
  cold: StartFigures;
  /** Quiet after the first turn. */
  afterFirstTurn: MemoryReading;
  secondRequestTtftMs: number;
  newChatTtftMs: number;
  /** Every runner of the phase up and idle for IDLE_MS. */
  idle: MemoryReading;
  restart?: StartFigures;
}

export interface ModeFigures {
  mode: IsolationMode;
  users: UserFigures[];
  error?: string;
}

export interface Isolation {
  users: number;
  idleMs: number;
  modes: Partial<Record<IsolationMode, ModeFigures>>;
  /** Modes not measured, and why (e.g. no Docker engine). */
  skipped: Partial<Record<IsolationMode, string>>;
  /** The phase was not run, and why. */
  off?: string;
  error?: string;
}

/** A table row's figures for one mode: the spread over its users, when any had the value. */
export function spreadOf(m: ModeFigures | undefined, pick: (u: UserFigures) => number | undefined): Spread | undefined {
  const xs = (m?.users ?? []).map(pick).filter((x): x is number => x !== undefined);
  return xs.length ? spread(xs) : undefined;
}

/** One mode's sidecar, and how to find and read a user's runner. */
interface Side {
  mode: IsolationMode;
  env: Record<string, string>;
  child: Child;
  url: string;
  /** The runner's current root process on the host (local: the spawned process; docker: the container's init). */
  rootPid(hash: string): Promise<number>;
  /** CPU since the runner started and its memory (PSS, or the working set for docker). */
  sample(hash: string): Promise<RunnerSample>;
  /** The runner's config dir (opencode installs its plugin there), as the host sees it; undefined while there is none. */
  configDir(hash: string): Promise<string | undefined>;
}

const MiB = 2 ** 20;
const round = (bytes: number) => Math.round((bytes / MiB) * 10) / 10;

function modeEnv(mode: IsolationMode, ctx: IsolationContext, modelPort: number, docker: { network: string; image: string }): Record<string, string> {
  const common = { LOG_LEVEL: "info", SIDECAR_API_KEYS: ctx.apiKey, RUNNER_IDLE_TIMEOUT: "0" };
  if (mode === "docker") {
    const passed = Object.fromEntries(["RUNNER_MEMORY", "RUNNER_CPUS", "RUNNER_PIDS", "DOCKER_HOST"].flatMap((n) => (process.env[n] ? [[n, process.env[n]!]] : [])));
    return scriptedEnv(`http://host.docker.internal:${modelPort}/v1`, {
      ...common,
      RUNNER_MODE: "docker",
      RUNNER_NETWORK: docker.network,
      RUNNER_IMAGE: docker.image,
      ...passed,
    });
  }
  return scriptedEnv(`http://127.0.0.1:${modelPort}/v1`, { ...common, RUNNER_MODE: "local", LOCAL_SANDBOX: mode === "sandboxed" ? "on" : "off" });
}

/** The pino line `msg` logged for user `hash`, or undefined when none comes in time; resolves to its time (epoch ms). */
function logTime(child: Child, hash: string, msg: string): Promise<number | undefined> {
  const re = new RegExp(`^(?=.*"user":"${hash}")(?=.*"msg":"${msg}")`);
  return child.waitForLine(re, TURN_TIMEOUT_MS).then(
    (line) => (JSON.parse(line) as { time: number }).time,
    () => undefined,
  );
}

/**
 * The local runner's root process for the user: the sidecar's child (bin/tie-to-parent.sh)
 * whose working directory is the user's opencode dir (`<STATE_ROOT>/users/<hash>/opencode`).
 */
const children = (pid: number) => descendants(pid).filter((p) => ppid(p) === pid);

function ppid(pid: number): number | undefined {
  try {
    const stat = fs.readFileSync(`/proc/${pid}/stat`, "utf8");
    return Number(stat.slice(stat.lastIndexOf(")") + 2).split(" ")[1]);
  } catch {
    return undefined;
  }
}

function spawnedPid(sidecarPid: number, hash: string): number {
  for (const pid of children(sidecarPid)) {
    try {
      if (fs.readlinkSync(`/proc/${pid}/cwd`).includes(`/users/${hash}/`)) return pid;
    } catch {
      /* ended while we looked */
    }
  }
  throw new Error(`no runner process of user ${hash} below the sidecar (pid ${sidecarPid})`);
}

async function launch(mode: IsolationMode, env: Record<string, string>, engine: Docker | undefined, ctx: IsolationContext, phase: string): Promise<Side> {
  const sc = launchSidecar(env, { name: `${mode} sidecar (${phase})` });
  ctx.defer(() => sc.child.stop());
  const url = await sc.ready;
  const child = sc.child;
  if (mode === "docker") {
    const docker = engine!;
    const containerPid = async (hash: string) => {
      const id = await runnerContainerId(docker, hash);
      const pid = id ? (await docker.getContainer(id).inspect()).State.Pid : 0;
      if (!pid) throw new Error(`docker: no running runner container for user ${hash}`);
      return pid;
    };
    return {
      mode,
      env,
      child,
      url,
      rootPid: containerPid,
      sample: async (hash) => containerSample(docker, (await runnerContainerId(docker, hash))!),
      // XDG_CONFIG_HOME=/data/config, on the user's data volume (services/runner/Dockerfile).
      configDir: (hash) =>
        docker
          .getVolume(DockerRunner.volumeName(hash))
          .inspect()
          .then((v) => path.join(v.Mountpoint, "config"), () => undefined),
    };
  }
  const rootPid = async (hash: string) => spawnedPid(child.pid, hash);
  return {
    mode,
    env,
    child,
    url,
    rootPid,
    sample: async (hash) => {
      const t = treeReading(await rootPid(hash));
      return { cpuMs: t.cpuMs, memBytes: t.pssBytes };
    },
    // Sandboxed, each user has their own config dir; without a sandbox all share one (local-runner.ts).
    configDir: async (hash) => (mode === "sandboxed" ? path.join(env.STATE_ROOT!, "users", hash, "opencode/config") : path.join(env.STATE_ROOT!, "opencode-config")),
  };
}

/**
 * Whether opencode (1.18) has installed @opencode-ai/plugin in the config dir: npm writes
 * package-lock.json last, after node_modules.
 */
function hasPlugin(configDir: string | undefined): boolean {
  if (!configDir) return false;
  return ["node_modules/@opencode-ai/plugin", "package-lock.json"].every((p) => fs.existsSync(path.join(configDir, "opencode", p)));
}

/** A ceiling for the background install (it takes seconds; on a loaded machine, tens). */
const INSTALL_TIMEOUT_MS = 90_000;

/** Waits for the plugin install to finish; the time it finished (performance.now()), or undefined when it did not. */
async function pluginInstalled(configDir: () => Promise<string | undefined>): Promise<number | undefined> {
  const deadline = performance.now() + INSTALL_TIMEOUT_MS;
  while (performance.now() < deadline) {
    if (hasPlugin(await configDir())) return performance.now();
    await new Promise((r) => setTimeout(r, 200));
  }
  return undefined;
}

function expectText(r: TurnResult, what: string): TurnResult {
  if (r.text.trim() !== TEXT) throw new Error(`${what}: unexpected text ${JSON.stringify(r.text.slice(0, 80))}`);
  return r;
}

/** One start of the user's runner by the first request of `chat` (a new chat), then until the runner is quiet. */
async function start(side: Side, user: string, chat: SidecarChat, ctx: IsolationContext, what: string): Promise<StartFigures> {
  const hash = userHash(user);
  const pluginBefore = hasPlugin(await side.configDir(hash));
  // Waiters first: the lines come while the request is in flight.
  const ready = side.mode === "docker" ? Promise.resolve(undefined) : logTime(side.child, hash, "user opencode ready");
  const session = logTime(side.child, hash, "opencode session created");
  const sentAt = Date.now();
  const t0 = performance.now();
  const turn = expectText(await chat.turn(PROMPT), `${side.mode} ${what}`);
  const endAt = performance.now();
  const atEnd = await side.sample(hash);
  // The install waits on the network at times: a quiet window then would end waitQuiet early.
  const installedAt = pluginBefore ? undefined : await pluginInstalled(() => side.configDir(hash));
  if (!pluginBefore && installedAt === undefined) ctx.log(`isolation: ${side.mode} ${what}: no plugin install within ${INSTALL_TIMEOUT_MS / 1000} s`);
  const settleFrom = performance.now();
  const settled = await waitQuiet(() => side.sample(hash));
  if (settled.timedOut) ctx.log(`isolation: ${side.mode} ${what} still busy after ${Math.round(settled.busyMs / 1000)} s; going on`);
  const quiet = await side.sample(hash);
  const since = (t: number | undefined) => (t === undefined ? undefined : t - sentAt);
  return {
    ttftMs: turn.ttftMs,
    readyMs: since(await ready),
    sessionMs: since(await session),
    turnCpuMs: atEnd.cpuMs,
    backgroundCpuMs: quiet.cpuMs - atEnd.cpuMs,
    // settle.ts counts until its quiet window began.
    busyMs: settleFrom - endAt + settled.busyMs,
    timedOut: settled.timedOut,
    installedPlugin: installedAt !== undefined,
    pluginInstalledMs: installedAt === undefined ? undefined : installedAt - t0,
  };
}

async function memory(side: Side, user: string): Promise<MemoryReading> {
  const hash = userHash(user);
  const tree = treeReading(await side.rootPid(hash));
  const workingSet = side.mode === "docker" ? (await side.sample(hash)).memBytes : undefined;
  return {
    pssMiB: round(tree.pssBytes),
    rssMiB: round(tree.rssBytes),
    workingSetMiB: workingSet === undefined ? undefined : round(workingSet),
    processes: tree.pids.length,
  };
}

/** Runs `fn` for a mode, recording its failure on the mode (the other modes go on). */
async function guarded(m: ModeFigures, ctx: IsolationContext, fn: () => Promise<void>): Promise<void> {
  if (m.error) return;
  try {
    await fn();
  } catch (e) {
    m.error = (e as Error).message ?? String(e);
    ctx.log(`isolation: ${m.mode} failed: ${(e as Error).stack ?? m.error}`);
  }
}

/** The section's record of a phase not run, or one that threw. */
export function isolationNotRun(ctx: IsolationContext, why: { off?: string; error?: unknown }): Isolation {
  const error = why.error === undefined ? undefined : ((why.error as Error).message ?? String(why.error));
  return { users: ctx.users, idleMs: IDLE_MS, modes: {}, skipped: {}, off: why.off, error };
}

export async function isolationPhase(ctx: IsolationContext): Promise<Isolation> {
  const result: Isolation = { users: ctx.users, idleMs: IDLE_MS, modes: {}, skipped: {} };
  const image = process.env.RUNNER_IMAGE || "open-persona-runner:latest";
  const engine = await probeEngine(image);
  if (!engine.ok) result.skipped.docker = engine.why;
  const modes = ISOLATION_MODES.filter((m) => m !== "docker" || engine.ok);

  const model = await startScriptedModel(0, "0.0.0.0");
  ctx.defer(() => model.close());
  const run = randomBytes(4).toString("hex");
  const users = Array.from({ length: ctx.users }, (_, i) => `bench-iso-${run}-${i + 1}`);
  const network = `op-bench-iso-${run}`;
  const docker = engine.ok ? engine.docker : undefined;
  const envs = new Map(modes.map((m) => [m, modeEnv(m, ctx, model.port, { network, image })]));
  // Undone in reverse: the sidecars stop first (deferred at launch), then the docker
  // resources go, then the data roots.
  ctx.defer(() => {
    for (const env of envs.values()) fs.rmSync(path.dirname(env.WORKSPACE_ROOT!), { recursive: true, force: true });
  });
  if (docker) {
    ctx.defer(async () => {
      for (const problem of await removeBenchResources(docker, users.map(userHash), network)) ctx.log(`cleanup: ${problem}`);
    });
  }

  const figures = new Map(modes.map((m) => [m, { mode: m, users: [] } as ModeFigures]));
  for (const m of modes) result.modes[m] = figures.get(m)!;
  const sides = new Map<IsolationMode, Side>();
  ctx.log(`isolation: starting ${modes.length} sidecars (${modes.join(", ")})`);
  await Promise.all(modes.map((m) => guarded(figures.get(m)!, ctx, async () => void sides.set(m, await launch(m, envs.get(m)!, docker, ctx, "first")))));

  ctx.log(`isolation: cold starts, ${ctx.users} users per mode, one at a time`);
  for (const user of users) {
    for (const m of modes) {
      const f = figures.get(m)!;
      await guarded(f, ctx, async () => {
        const side = sides.get(m)!;
        const chat = new SidecarChat(side.url, ctx.apiKey, user);
        const cold = await start(side, user, chat, ctx, "cold start");
        const afterFirstTurn = await memory(side, user);
        const second = expectText(await chat.turn(PROMPT), `${m} second request`);
        const fresh = expectText(await new SidecarChat(side.url, ctx.apiKey, user).turn(PROMPT), `${m} new chat`);
        f.users.push({ user, cold, afterFirstTurn, secondRequestTtftMs: second.ttftMs, newChatTtftMs: fresh.ttftMs, idle: afterFirstTurn });
      });
    }
  }

  ctx.log(`isolation: ${IDLE_MS / 1000} s idle, then memory`);
  await new Promise((r) => setTimeout(r, IDLE_MS));
  for (const m of modes) {
    const f = figures.get(m)!;
    await guarded(f, ctx, async () => {
      for (const u of f.users) u.idle = await memory(sides.get(m)!, u.user);
    });
  }

  ctx.log("isolation: restart (runners stopped, data kept), one user at a time");
  await Promise.all(
    modes.map((m) =>
      guarded(figures.get(m)!, ctx, async () => {
        await sides.get(m)!.child.stop();
        // What an idle stop does to a docker runner; a local runner ended with its sidecar.
        if (m === "docker") {
          for (const u of users) {
            const id = await runnerContainerId(docker!, userHash(u));
            if (id) await docker!.getContainer(id).stop({ t: 10 }).catch(() => {});
          }
        }
        sides.set(m, await launch(m, envs.get(m)!, docker, ctx, "restart"));
      }),
    ),
  );
  for (const user of users) {
    for (const m of modes) {
      const f = figures.get(m)!;
      await guarded(f, ctx, async () => {
        const u = f.users.find((x) => x.user === user);
        const side = sides.get(m)!;
        if (u) u.restart = await start(side, user, new SidecarChat(side.url, ctx.apiKey, user), ctx, "restart");
      });
    }
  }
  return result;
}
