/**
 * The swarm phase (BENCH_ONLY=swarm): RUNNER_MODE=swarm on this machine's swarm
 * (scripts/swarm-setup.sh), runners pinned to the manager (the scripted model runs in this
 * process, reached as host.docker.internal).
 *
 * - Starts, in process: a SwarmRunner (reached through a forwarder container on the overlay
 *   network, test/fixtures/overlay-forwarder.ts) and, beside it, a DockerRunner, constructed
 *   as the registry builds them. BENCH_SWARM_USERS (5) users per mode, one start at a time,
 *   the modes alternating. A cold start is a new user: ensure() → the first streamed text of a
 *   turn in a new session, split by what the engine shows meanwhile (polled every
 *   POLL_MS): the service (container) exists, its task (container) runs, ensure() returns
 *   (opencode answers and its event stream is open), first token. A warm start from zero is the
 *   same user after the idle policy stopped its runner (scaled to zero; container stopped):
 *   ensure() → first token of a follow-up turn in the session it had.
 * - Load, the production path: the sidecar image (open-persona-sidecar:latest, refreshed from
 *   dist/) as a container with the Docker socket, RUNNER_MODE=swarm, on the overlay network,
 *   reaching runners by service name. BENCH_SWARM_CHATS_USERS (10) users are started (all at
 *   once), then BENCH_SWARM_CHATS_PER_USER (10) chats each stream at once: a new chat's first
 *   turn, then a follow-up turn in each chat; each reply LOAD_TOKENS pieces LOAD_DELAY_MS
 *   apart at the model. Time to first token, total, errors, wall time; memory (working set, as
 *   docker stats counts it) and CPU of the sidecar container and of every runner container.
 *
 * Everything the phase makes carries its run id (network, services, containers, volumes) and
 * is removed at the end.
 */
import { randomBytes } from "node:crypto";
import fs from "node:fs";
import os from "node:os";
import path from "node:path";
import { Writable } from "node:stream";
import Docker from "dockerode";
import { loadConfig } from "../src/config/config.js";
import { createLogger } from "../src/log/logger.js";
import { LABEL_MANAGED, LABEL_USER } from "../src/runners/docker-runner.js";
import { createRunner } from "../src/runners/registry.js";
import type { Runner, RunnerEndpoint } from "../src/runners/runner.js";
import { LABEL_NETWORK, SwarmRunner } from "../src/runners/swarm-runner.js";
import { userHash, userSpace, type UserSpace } from "../src/workspace/user-space.js";
import { startOverlayForwarder } from "../test/fixtures/overlay-forwarder.js";
import { say, scriptedOpencodeConfig, startScriptedModel } from "../test/fixtures/scripted-model.js";
import { tempDir } from "../test/helpers/harness.js";
import { refreshSidecarImage, startSidecarContainer, type SidecarContainer } from "../test/helpers/sidecar-container.js";
import { containerSample, removeBenchResources } from "./docker.js";
import { SidecarChat } from "./sidecar.js";
import { spread, type Spread } from "./stats.js";
import type { TurnResult } from "./turn.js";

export const LOAD_TOKENS = 5;
export const LOAD_DELAY_MS = 20;
const LOAD = say.slow(LOAD_TOKENS, LOAD_DELAY_MS);
const LOAD_TEXT = "tok ".repeat(LOAD_TOKENS);
const POLL_MS = 100;
/** Generous: ten opencode boots at once on a busy 2-core machine. */
const START_TIMEOUT_MS = 240_000;
const IMAGE = process.env.RUNNER_IMAGE || "open-persona-runner:latest";

export interface SwarmContext {
  users: number;
  loadUsers: number;
  chatsPerUser: number;
  apiKey: string;
  defer(fn: () => Promise<void> | void): void;
  log(msg: string): void;
}

/** One start, ms from ensure() called; a phase the poller did not see is absent. */
export interface StartSample {
  createdMs?: number;
  runningMs?: number;
  readyMs: number;
  firstTokenMs: number;
}

export interface StartFigures {
  n: number;
  /** The service (docker: container) exists. */
  createdMs?: Spread;
  /** Its task (container) runs. */
  runningMs?: Spread;
  /** ensure() returned: opencode answers, its event stream is open. */
  readyMs: Spread;
  firstTokenMs: Spread;
  samples: StartSample[];
}

export interface LoadRound {
  name: string;
  streams: number;
  wallMs: number;
  ttftMs?: Spread;
  totalMs?: Spread;
  errors: number;
  errorMessages: string[];
  /** During the round, MiB: the sidecar container's highest reading; each runner's, after. */
  sidecarPeakMiB?: number;
  runnersAfterMiB?: Spread;
  runnersTotalAfterMiB?: number;
  /** CPU used during the round, ms: the sidecar container, all runner containers. */
  sidecarCpuMs?: number;
  runnersCpuMs?: number;
}

export interface SwarmFigures {
  users: number;
  loadUsers: number;
  chatsPerUser: number;
  skipped?: string;
  error?: string;
  machine?: { cpus: number; node: string; engine?: string; nodes?: number; loadBefore: number[]; loadAfter?: number[] };
  starts?: { swarmCold?: StartFigures; swarmWarm?: StartFigures; dockerCold?: StartFigures; dockerWarm?: StartFigures };
  load?: {
    /** All users' first requests at once (not streamed): their runners' cold starts (wall, and each one's answer). */
    startWallMs: number;
    startTtftMs: Spread;
    startErrors: number;
    sidecarIdleMiB?: number;
    rounds: LoadRound[];
  };
  notes: string[];
}

export function emptySwarm(ctx: Pick<SwarmContext, "users" | "loadUsers" | "chatsPerUser">, why: { skipped?: string; error?: string } = {}): SwarmFigures {
  return { users: ctx.users, loadUsers: ctx.loadUsers, chatsPerUser: ctx.chatsPerUser, notes: [], ...why };
}

/** A time budget for the whole phase (the run's watchdog adds it). */
export function swarmBudgetMs(users: number, loadUsers: number): number {
  return 5 * 60_000 + users * 4 * 90_000 + loadUsers * 30_000;
}

const sleep = (ms: number) => new Promise((r) => setTimeout(r, ms));
const mib = (b: number) => Math.round((b / 2 ** 20) * 10) / 10;
const load = () => os.loadavg().map((x) => Math.round(x * 100) / 100);

function startFigures(samples: StartSample[]): StartFigures {
  const opt = (xs: Array<number | undefined>) => {
    const known = xs.filter((x): x is number => x !== undefined);
    return known.length === xs.length && known.length ? spread(known) : undefined;
  };
  return {
    n: samples.length,
    createdMs: opt(samples.map((s) => s.createdMs)),
    runningMs: opt(samples.map((s) => s.runningMs)),
    readyMs: spread(samples.map((s) => s.readyMs)),
    firstTokenMs: spread(samples.map((s) => s.firstTokenMs)),
    samples: samples.map((s) => Object.fromEntries(Object.entries(s).map(([k, v]) => [k, Math.round(v as number)])) as unknown as StartSample),
  };
}

/** What the engine shows of a user's runner: it exists, it runs (a task or container not in `before`). */
type Probe = () => Promise<{ exists: boolean; running: boolean }>;

/**
 * ensure() and a first streamed token, with the engine polled meanwhile. `session`: a turn in
 * that session (warm start); else in a new one.
 */
async function timedStart(runner: Runner, space: UserSpace, makeProbe: () => Promise<Probe>, reply: string, session?: string): Promise<{ sample: StartSample; session: string }> {
  const probe = await makeProbe();
  const t0 = performance.now();
  let createdMs: number | undefined;
  let runningMs: number | undefined;
  let polling = true;
  const poller = (async () => {
    while (polling) {
      const seen = await probe().catch(() => ({ exists: false, running: false }));
      const at = performance.now() - t0;
      if (seen.exists) createdMs ??= at;
      if (seen.running) runningMs ??= at;
      if (runningMs !== undefined) return;
      await sleep(POLL_MS);
    }
  })();
  let ep: RunnerEndpoint;
  try {
    ep = await runner.ensure(space);
  } finally {
    polling = false;
  }
  const readyMs = performance.now() - t0;
  await poller;
  const id = session ?? (await ep.client.createSession(ep.directory, "bench: swarm")).id;
  const firstAt = await firstToken(ep, id, reply);
  return { sample: { createdMs, runningMs, readyMs, firstTokenMs: firstAt - t0 }, session: id };
}

/** Prompts and resolves with performance.now() at the first streamed text; the turn is then awaited. */
async function firstToken(ep: RunnerEndpoint, sessionId: string, reply: string): Promise<number> {
  let first: number | undefined;
  let off = () => {};
  const done = new Promise<void>((resolve, reject) => {
    const timer = setTimeout(() => reject(new Error("turn not done within 120 s")), 120_000);
    off = ep.events.subscribe(sessionId, (e) => {
      if (e.type === "message.part.delta" && e.field === "text") first ??= performance.now();
      if (e.type === "session.idle" || (e.type === "session.status" && e.status.type === "idle")) {
        clearTimeout(timer);
        resolve();
      }
      if (e.type === "stream.lost") {
        clearTimeout(timer);
        reject(new Error(`event stream lost: ${e.reason}`));
      }
    });
  });
  try {
    await ep.client.promptAsync(sessionId, ep.directory, { parts: [{ type: "text", text: say.text(reply) }] });
    await done;
  } finally {
    off();
  }
  if (first === undefined) throw new Error("the turn streamed no text");
  return first;
}

interface Side {
  mode: "swarm" | "docker";
  runner: Runner;
  space(i: number): UserSpace;
  /** Made before the start: what ran before it does not count. */
  probe(space: UserSpace): () => Promise<Probe>;
}

/** Captures a runner's log (errors end up in the report's notes). */
function quietLog(): { log: ReturnType<typeof createLogger>; errors: string[] } {
  const errors: string[] = [];
  const sink = new Writable({
    write(chunk, _enc, cb) {
      for (const line of chunk.toString("utf8").split("\n").filter(Boolean)) {
        try {
          const r = JSON.parse(line) as { level?: number; msg?: string; err?: string };
          if ((r.level ?? 0) >= 50) errors.push(`${r.msg}${r.err ? `: ${r.err}` : ""}`);
        } catch {
          /* not JSON */
        }
      }
      cb();
    },
  });
  return { log: createLogger("warn", sink), errors };
}

export async function swarmPhase(ctx: SwarmContext): Promise<SwarmFigures> {
  const docker = new Docker({ socketPath: "/var/run/docker.sock" });
  const figures = emptySwarm(ctx);
  const info = (await docker.info()) as { Swarm?: { LocalNodeState?: string; ControlAvailable?: boolean; Nodes?: number } };
  if (info.Swarm?.LocalNodeState !== "active" || !info.Swarm.ControlAvailable) {
    return { ...figures, skipped: "this engine is not a swarm manager (bash scripts/swarm-setup.sh)" };
  }
  const { Version } = await docker.version();
  figures.machine = { cpus: os.cpus().length, node: process.version, engine: Version, nodes: info.Swarm.Nodes, loadBefore: load() };

  const run = randomBytes(4).toString("hex");
  const network = `op-bench-swarm-${run}`;
  const dockerNetwork = `op-bench-dk-${run}`;
  const labels = { "open-persona.bench": run };
  const secret = `bench-swarm-${run}-0123456789abcdef`;
  const root = tempDir("op-bench-swarm-");
  const swarmHashes: string[] = [];
  const dockerHashes: string[] = [];
  ctx.defer(() => fs.rmSync(root, { recursive: true, force: true }));
  ctx.defer(async () => {
    for (const p of await removeBenchResources(docker, dockerHashes, dockerNetwork)) ctx.log(`swarm: cleanup: ${p}`);
  });
  ctx.defer(() => removeSwarmResources(docker, network, swarmHashes, ctx.log));

  const model = await startScriptedModel(0, "0.0.0.0");
  ctx.defer(() => model.close());
  const opencodeEnv = {
    OPENCODE_CONFIG_CONTENT: JSON.stringify(scriptedOpencodeConfig(`http://host.docker.internal:${model.port}/v1`)),
    OPENCODE_DISABLE_MODELS_FETCH: "1",
  };
  const baseEnv = (mode: string, net: string) => ({
    RUNNER_MODE: mode,
    RUNNER_NETWORK: net,
    RUNNER_SECRET: secret,
    RUNNER_IMAGE: IMAGE,
    RUNNER_IDLE_TIMEOUT: "3600",
    RUNNER_PLACEMENT: "node.role==manager",
    RUNNER_START_TIMEOUT_MS: String(START_TIMEOUT_MS),
    WORKSPACE_ROOT: path.join(root, mode, "workspaces"),
    STATE_ROOT: path.join(root, mode, "state"),
    ...opencodeEnv,
  });

  // ---- starts, in process ----
  await docker.createNetwork({ Name: network, Driver: "overlay", Attachable: true, Labels: { [LABEL_MANAGED]: "true", ...labels } });
  const forwarder = await startOverlayForwarder(docker, network, `op-bench-fwd-${run}`, labels);
  ctx.defer(() => forwarder.close().catch(() => {}));
  const swarmLog = quietLog();
  const dockerLog = quietLog();
  const sc = loadConfig(baseEnv("swarm", network));
  const swarmRunner = new SwarmRunner({
    docker,
    image: sc.docker.image,
    network,
    placement: sc.swarm.placement,
    selfContainer: sc.docker.selfContainer,
    fetch: forwarder.fetch,
    user: sc.docker.user,
    memoryBytes: sc.docker.memoryBytes,
    nanoCpus: sc.docker.nanoCpus,
    pidsLimit: sc.docker.pidsLimit,
    idleTimeoutMs: sc.docker.idleTimeoutMs,
    secret,
    runnerEnv: sc.runnerEnv,
    startTimeoutMs: sc.runnerStartTimeoutMs,
    log: swarmLog.log,
  });
  const dockerRunner = createRunner(loadConfig(baseEnv("docker", dockerNetwork)), dockerLog.log);
  await Promise.all([swarmRunner.start(), dockerRunner.start()]);
  ctx.defer(() => swarmRunner.stop());
  ctx.defer(() => dockerRunner.stop());

  const users = (mode: string, into: string[]) => (i: number) => {
    const hash = userHash(`bench-${mode}-${run}-${i}@example.com`);
    if (!into.includes(hash)) into.push(hash);
    const e = baseEnv(mode, "");
    return userSpace(e.WORKSPACE_ROOT, e.STATE_ROOT, hash);
  };
  const sides: Side[] = [
    {
      mode: "swarm",
      runner: swarmRunner,
      space: users("swarm", swarmHashes),
      probe: (space) => async () => {
        type Task = { ID?: string; DesiredState?: string; Status?: { State?: string } };
        const name = SwarmRunner.serviceName(space.hash);
        // Not there yet (a cold start): no tasks.
        const tasks = async () => ((await docker.listTasks({ filters: { service: [name] } }).catch(() => [])) as Task[]);
        // A warm start: the tasks of the service's earlier lives do not count.
        const before = new Set((await tasks()).map((t) => t.ID ?? ""));
        return async () => {
          const exists = await docker
            .getService(name)
            .inspect()
            .then(
              () => true,
              () => false,
            );
          const now = exists ? await tasks() : [];
          return { exists, running: now.some((t) => t.Status?.State === "running" && t.DesiredState === "running" && !before.has(t.ID ?? "")) };
        };
      },
    },
    {
      mode: "docker",
      runner: dockerRunner,
      space: users("docker", dockerHashes),
      probe: (space) => async () => async () => {
        const found = await docker.listContainers({ all: true, filters: { label: [`${LABEL_USER}=${space.hash}`] } });
        return { exists: found.length > 0, running: found.some((c) => c.State === "running") };
      },
    },
  ];

  const cold = new Map<string, StartSample[]>(sides.map((s) => [s.mode, []]));
  const warm = new Map<string, StartSample[]>(sides.map((s) => [s.mode, []]));
  const sessions = new Map<string, string>();
  ctx.log(`swarm: cold starts, ${ctx.users} users per mode (swarm, docker alternating)`);
  for (let i = 0; i < ctx.users; i++) {
    for (const side of i % 2 ? [...sides].reverse() : sides) {
      const space = side.space(i);
      const { sample, session } = await timedStart(side.runner, space, side.probe(space), "cold");
      sessions.set(space.hash, session);
      cold.get(side.mode)!.push(sample);
      ctx.log(`swarm: ${side.mode} cold ${i + 1}: ready ${Math.round(sample.readyMs)} ms, first token ${Math.round(sample.firstTokenMs)} ms`);
    }
  }
  ctx.log("swarm: idle stop (scale to zero / stop the containers), then warm starts from zero");
  for (const side of sides) await side.runner.stopIdle(Date.now() + 24 * 3_600_000);
  for (let i = 0; i < ctx.users; i++) {
    for (const side of i % 2 ? [...sides].reverse() : sides) {
      const space = side.space(i);
      const { sample } = await timedStart(side.runner, space, side.probe(space), "warm", sessions.get(space.hash));
      warm.get(side.mode)!.push(sample);
      ctx.log(`swarm: ${side.mode} warm ${i + 1}: ready ${Math.round(sample.readyMs)} ms, first token ${Math.round(sample.firstTokenMs)} ms`);
    }
  }
  figures.starts = {
    swarmCold: startFigures(cold.get("swarm")!),
    swarmWarm: startFigures(warm.get("swarm")!),
    dockerCold: startFigures(cold.get("docker")!),
    dockerWarm: startFigures(warm.get("docker")!),
  };
  for (const e of [...swarmLog.errors, ...dockerLog.errors]) figures.notes.push(`runner log: ${e}`);
  // Out of the way of the load: its sidecar would adopt these services (same network).
  await swarmRunner.stop();
  await dockerRunner.stop();
  await removeSwarmResources(docker, network, swarmHashes, ctx.log, { keepNetwork: true });
  for (const p of await removeBenchResources(docker, dockerHashes, dockerNetwork)) ctx.log(`swarm: cleanup: ${p}`);

  // ---- load, through a sidecar container on the overlay network ----
  ctx.log("swarm: refreshing the sidecar image from dist/");
  refreshSidecarImage();
  const stateDir = path.join(root, "sidecar-state");
  fs.mkdirSync(stateDir, { recursive: true });
  const sidecar: SidecarContainer = await startSidecarContainer(docker, {
    name: `op-bench-sidecar-${run}`,
    stateDir,
    labels,
    env: {
      ...baseEnv("swarm", network),
      WORKSPACE_ROOT: "/data/workspaces",
      STATE_ROOT: "/data/state",
      RUNNER_IDLE_TIMEOUT: "0",
      SIDECAR_API_KEYS: ctx.apiKey,
      MAX_CONCURRENT_RUNS_PER_USER: String(Math.max(4, ctx.chatsPerUser)),
      LOG_LEVEL: "info",
    },
  });
  ctx.defer(() => sidecar.remove().catch(() => {}));
  const loadUsers = Array.from({ length: ctx.loadUsers }, (_, i) => `bench-load-${run}-${i}@example.com`);
  for (const u of loadUsers) swarmHashes.push(userHash(u));

  ctx.log(`swarm: ${ctx.loadUsers} users' first requests at once (their runner services start)`);
  const t0 = performance.now();
  const started = await Promise.allSettled(loadUsers.map((u) => firstRequest(sidecar.url, ctx.apiKey, u)));
  const startWallMs = performance.now() - t0;
  const startOk = started.flatMap((o) => (o.status === "fulfilled" ? [o.value] : []));
  const startErrors = started.flatMap((o) => (o.status === "rejected" ? [(o.reason as Error).message] : []));
  for (const e of new Set(startErrors)) figures.notes.push(`start: ${e}`);
  const sidecarId = (await docker.getContainer(sidecar.name).inspect()).Id;
  const sidecarIdle = await containerSample(docker, sidecarId).catch(() => undefined);
  figures.load = {
    startWallMs: Math.round(startWallMs),
    startTtftMs: spread(startOk),
    startErrors: startErrors.length,
    sidecarIdleMiB: sidecarIdle?.memBytes !== undefined ? mib(sidecarIdle.memBytes) : undefined,
    rounds: [],
  };

  const chats = loadUsers.flatMap((u) => Array.from({ length: ctx.chatsPerUser }, () => new SidecarChat(sidecar.url, ctx.apiKey, u)));
  for (const name of ["new chats (first turn)", "follow-up turns (same chats)"]) {
    ctx.log(`swarm: ${chats.length} concurrent streams: ${name}`);
    figures.load.rounds.push(await loadRound(docker, network, sidecarId, chats, name));
  }
  figures.machine.loadAfter = load();
  const logs = await sidecar.logs().catch(() => "");
  const errorLines = logs.split("\n").filter((l) => /"level":(50|60)/.test(l));
  if (errorLines.length) figures.notes.push(`sidecar logged ${errorLines.length} error(s), e.g. ${errorLines[0]!.slice(0, 300)}`);
  return figures;
}

/**
 * A user's first request, not streamed, with room for a cold start under load (SidecarChat
 * gives a turn TURN_TIMEOUT_MS): its time to the whole answer, ms.
 */
async function firstRequest(url: string, apiKey: string, userId: string): Promise<number> {
  const t0 = performance.now();
  const res = await fetch(`${url}/v1/chat/completions`, {
    method: "POST",
    headers: { authorization: `Bearer ${apiKey}`, "content-type": "application/json", "x-openwebui-user-id": userId },
    body: JSON.stringify({ model: "open-persona/build", messages: [{ role: "user", content: say.text("started") }] }),
    signal: AbortSignal.timeout(START_TIMEOUT_MS + 30_000),
  });
  const body = (await res.json()) as { choices?: Array<{ message?: { content?: string } }>; error?: { message?: string } };
  if (!res.ok || body.choices?.[0]?.message?.content?.trim() !== "started") throw new Error(`first request: ${res.status} ${body.error?.message ?? JSON.stringify(body).slice(0, 120)}`);
  return performance.now() - t0;
}

/** The runner containers of this phase's services (tasks on this engine). */
async function runnerContainers(docker: Docker, network: string): Promise<string[]> {
  const found = await docker.listContainers({ filters: { label: [`${LABEL_NETWORK}=${network}`] } });
  return found.filter((c) => c.Labels[LABEL_USER]).map((c) => c.Id);
}

async function loadRound(docker: Docker, network: string, sidecarId: string, chats: SidecarChat[], name: string): Promise<LoadRound> {
  const runners = await runnerContainers(docker, network);
  const sampleAll = async (ids: string[]) => Promise.all(ids.map((id) => containerSample(docker, id).catch(() => undefined)));
  const [sidecarBefore, ...runnersBefore] = await sampleAll([sidecarId, ...runners]);
  let peak = sidecarBefore?.memBytes ?? 0;
  let sampling = true;
  const sampler = (async () => {
    while (sampling) {
      const s = await containerSample(docker, sidecarId).catch(() => undefined);
      if (s?.memBytes) peak = Math.max(peak, s.memBytes);
      await sleep(250);
    }
  })();
  const t0 = performance.now();
  const outcomes = await Promise.allSettled(chats.map((c) => c.turn(LOAD)));
  const wallMs = performance.now() - t0;
  sampling = false;
  await sampler;
  const [sidecarAfter, ...runnersAfter] = await sampleAll([sidecarId, ...runners]);
  const ok: TurnResult[] = [];
  const errors: string[] = [];
  for (const o of outcomes) {
    if (o.status === "rejected") errors.push((o.reason as Error).message);
    else if (o.value.text.trimEnd() !== LOAD_TEXT.trimEnd()) errors.push(`unexpected text ${JSON.stringify(o.value.text.slice(0, 60))}`);
    else ok.push(o.value);
  }
  const mem = runnersAfter.flatMap((s) => (s?.memBytes !== undefined ? [s.memBytes] : []));
  const cpu = (before: Array<{ cpuMs: number } | undefined>, after: Array<{ cpuMs: number } | undefined>) =>
    Math.round(after.reduce((sum, a, i) => sum + (a && before[i] ? a.cpuMs - before[i]!.cpuMs : 0), 0));
  return {
    name,
    streams: chats.length,
    wallMs: Math.round(wallMs),
    ttftMs: ok.length ? spread(ok.map((r) => r.ttftMs)) : undefined,
    totalMs: ok.length ? spread(ok.map((r) => r.totalMs)) : undefined,
    errors: errors.length,
    errorMessages: [...new Set(errors)].slice(0, 5),
    sidecarPeakMiB: peak ? mib(Math.max(peak, sidecarAfter?.memBytes ?? 0)) : undefined,
    runnersAfterMiB: mem.length ? spread(mem.map(mib)) : undefined,
    runnersTotalAfterMiB: mem.length ? mib(mem.reduce((a, b) => a + b, 0)) : undefined,
    sidecarCpuMs: sidecarBefore && sidecarAfter ? Math.round(sidecarAfter.cpuMs - sidecarBefore.cpuMs) : undefined,
    runnersCpuMs: cpu(runnersBefore, runnersAfter),
  };
}

/**
 * Removes the phase's runner services (by their network label), waits for their containers to
 * go, then their volumes and (unless kept) the overlay network. Problems are logged, not thrown.
 */
async function removeSwarmResources(docker: Docker, network: string, hashes: string[], log: (m: string) => void, opts: { keepNetwork?: boolean } = {}): Promise<void> {
  const attempt = async (what: string, fn: () => Promise<unknown>) => {
    try {
      await fn();
    } catch (e) {
      if ((e as { statusCode?: number }).statusCode !== 404) log(`swarm: cleanup: ${what}: ${(e as Error).message}`);
    }
  };
  const services = await docker.listServices({ filters: { label: [`${LABEL_NETWORK}=${network}`] } }).catch(() => []);
  for (const s of services) await attempt(`service ${s.Spec?.Name}`, () => docker.getService(s.ID).remove());
  const deadline = Date.now() + 60_000;
  while (Date.now() < deadline) {
    const left = await docker.listContainers({ all: true, filters: { label: [`${LABEL_NETWORK}=${network}`] } }).catch(() => []);
    if (!left.length) break;
    await sleep(500);
  }
  for (const h of hashes) {
    for (const v of [SwarmRunner.workspaceVolume(h), SwarmRunner.dataVolume(h)]) await attempt(`volume ${v}`, () => docker.getVolume(v).remove());
  }
  if (!opts.keepNetwork) await attempt(`network ${network}`, () => docker.getNetwork(network).remove());
}
