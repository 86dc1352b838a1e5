/**
 * `RUNNER_MODE=local`: one `opencode serve` process per user, spawned from the bundled binary
 * and supervised by the sidecar. One process for everyone used about one core at most (issue
 * 8); a process per user lets the number of processes, and the cores used, follow the load.
 * The price (bench/sweep.ts measures it): about half a GiB per user whose process runs, a
 * start of seconds on a user's first request and after an idle stop, and more CPU per turn
 * than one busy shared process spends — so it pays off on hosts with cores to spare.
 *
 * Per user `h` (the user hash), a process:
 * - is started on the user's first request; concurrent first requests share one start
 *   (serialized per user, as in DockerRunner), and no process runs before anyone asks;
 * - runs inside a bubblewrap sandbox (runners/sandbox.ts) where bwrap works: it sees its
 *   own workspace and opencode dirs, read-only system dirs, nothing of the sidecar or of
 *   other users; and inside its own cgroups (runners/cgroup-limits.ts) with RUNNER_MEMORY,
 *   RUNNER_CPUS and RUNNER_PIDS as limits, where the sidecar may create cgroups;
 * - listens on its own loopback port behind its own random password (new at every start);
 * - keeps its data (sessions: opencode's SQLite database) under the user's state dir,
 *   `<STATE_ROOT>/users/<h>/opencode/{data,config,state,cache,home}`, so chats survive a
 *   stop, a crash and a sidecar restart. Sandboxed, the config dir is the user's own
 *   (opencode writes to it, and installs its plugin package there in the background: 64 MB,
 *   ~10 s of CPU at a user's first start). Unsandboxed, one config dir serves all users
 *   (`sharedConfigDir`), so that install happens once;
 * - is stopped after `idleTimeoutMs` (RUNNER_IDLE_TIMEOUT) without a turn, and only when no
 *   turn is in flight (`use()`); with `maxRssBytes` set it is also stopped ("recycled") once
 *   it has grown past that size between turns (opencode does not give memory back). Either
 *   way the next request starts a fresh one on the same data;
 * - that dies (a crash, a kill) is replaced on the user's next request; turns running on it
 *   end with the event hub's final `stream.lost`;
 * - never outlives the sidecar, not even a SIGKILL of it: it is tied to the sidecar through
 *   a stdin pipe (bin/tie-to-parent.sh).
 *
 * Without the sandbox (LOCAL_SANDBOX=off, or no bwrap with a single loopback user) the
 * agent's bash tool runs as the sidecar's Unix user and can read whatever that user can:
 * other workspaces, STATE_ROOT, /proc. registry.ts refuses that when users have keys unless
 * the operator turned the sandbox off explicitly.
 *
 * Up to issue 8 all users shared one process with its data in `STATE_ROOT/opencode`. Sessions
 * there are not found by the per-user processes: the chat code recreates a lost session,
 * seeded with the conversation the client resends (chat/chat-service.ts).
 */
import { spawn, type ChildProcess } from "node:child_process";
import { randomBytes } from "node:crypto";
import fs from "node:fs";
import path from "node:path";
import { createInterface } from "node:readline";
import { fileURLToPath } from "node:url";
import { RunnerUnavailableError } from "../errors/api-error.js";
import type { Logger } from "../log/logger.js";
import { OpencodeClient } from "../opencode/client.js";
import { EventHub } from "../opencode/event-hub.js";
import { KeyedMutex } from "../sessions/keyed-mutex.js";
import type { UserSpace } from "../workspace/user-space.js";
import { runnerProcessEnv } from "./opencode-config.js";
import { freePort } from "./free-port.js";
import { waitHealthy } from "./readiness.js";
import { bwrapArgs } from "./sandbox.js";
import type { CgroupLimiter, ProcessLimits, UserCgroup } from "./cgroup-limits.js";
import type { Runner, RunnerEndpoint, RunnerHealth, RunnerState } from "./runner.js";
import { RunnerUses } from "./runner-uses.js";

const TIE_SCRIPT = fileURLToPath(new URL("../../bin/tie-to-parent.sh", import.meta.url));
const XDG_DIRS = ["data", "config", "state", "cache", "home"] as const;

export interface LocalRunnerOptions {
  binary: string;
  runnerEnv: Record<string, string>;
  startTimeoutMs: number;
  log: Logger;
  /** Stop a user's process after this long without a turn (data kept); 0 = never. */
  idleTimeoutMs: number;
  /** Stop a user's process between turns once its resident memory is above this. */
  maxRssBytes?: number;
  /** How often to check for that. */
  recycleCheckMs?: number;
  /** The single shared data dir of earlier releases: only mentioned in the log when found. */
  legacyDataDir?: string;
  /** XDG_CONFIG_HOME for every user's process (see the module comment). */
  sharedConfigDir: string;
  /** Run each process in a bubblewrap sandbox (runners/sandbox.ts) with this bwrap binary. */
  sandbox?: { bwrap: string };
  /** Put each user's processes in their own cgroups with these limits (runners/cgroup-limits.ts). */
  limits?: { limiter: CgroupLimiter; perUser: ProcessLimits };
}

/** One user's opencode process. */
interface Instance {
  readonly hash: string;
  /** bin/tie-to-parent.sh; opencode is its child. */
  readonly proc: ChildProcess;
  readonly pid: number;
  readonly startedAt: number;
  /** The user's cgroups, when limits apply; removed once the process has exited. */
  readonly cgroup?: UserCgroup;
  ready: Promise<RunnerEndpoint>;
  endpoint?: RunnerEndpoint;
  /** Requests served (for the log). */
  turns: number;
  lastUsed: number;
  exited: boolean;
  /** Being stopped on purpose (idle, recycle, shutdown): its exit is not an error. */
  retiring: boolean;
}

export class LocalRunner implements Runner {
  readonly mode = "local";
  /** Each user's opencode is a process of this machine: the workspace is on its disk. */
  readonly workspaceReads = "disk";
  private readonly live = new Map<string, Instance>();
  /** Turns in flight per user hash; kept apart from `live` so a replaced process does not reset it. */
  private readonly uses: RunnerUses;
  private readonly locks = new KeyedMutex();
  /** How each user's last process ended (for state()): by policy (idle, memory) or not. */
  private readonly ended = new Map<string, "idle-stopped" | "gone">();
  private stopping = false;
  private reaper?: NodeJS.Timeout;
  private recycleTimer?: NodeJS.Timeout;
  /** Why the runner cannot serve (no binary, or the latest start failed); cleared by a good start. */
  private problem?: string;

  constructor(private readonly opts: LocalRunnerOptions) {
    this.uses = new RunnerUses(opts.log);
  }

  /** Spawns nothing: processes start on demand. */
  async start(): Promise<void> {
    this.checkBinary();
    const { idleTimeoutMs, maxRssBytes, legacyDataDir } = this.opts;
    if (idleTimeoutMs > 0) {
      const every = Math.max(1000, Math.min(30_000, Math.floor(idleTimeoutMs / 4)));
      this.reaper = setInterval(() => void this.stopIdle().catch((e) => this.opts.log.error({ err: (e as Error).message }, "idle check failed")), every);
      this.reaper.unref();
    }
    if (maxRssBytes) {
      this.recycleTimer = setInterval(
        () => void this.recycleIfBloated().catch((e) => this.opts.log.error({ err: (e as Error).message }, "memory check failed")),
        this.opts.recycleCheckMs ?? 30_000,
      );
      this.recycleTimer.unref();
    }
    if (legacyDataDir && fs.existsSync(legacyDataDir)) {
      this.opts.log.info(
        { dir: legacyDataDir },
        "the shared opencode data dir of earlier releases is no longer used (each user has their own); existing chats continue in new sessions, and it can be removed",
      );
    }
  }

  async ensure(space: UserSpace): Promise<RunnerEndpoint> {
    this.assertRunning();
    const hot = this.live.get(space.hash);
    if (hot?.endpoint && !hot.exited && !hot.retiring) return this.touch(hot, hot.endpoint);
    const unlock = await this.locks.acquire(space.hash);
    try {
      this.assertRunning();
      let inst = this.live.get(space.hash);
      // Gone while we waited for the lock (exited, or stopped by the reaper): start another.
      if (!inst || inst.exited || inst.retiring) inst = await this.spawnInstance(space);
      try {
        return this.touch(inst, await inst.ready);
      } catch (e) {
        if (!this.stopping) this.problem = `opencode did not start: ${(e as Error).message}`;
        await this.retire(inst);
        this.ended.set(space.hash, "gone");
        throw e;
      }
    } finally {
      unlock();
    }
  }

  /** Counts the user's turns in flight: their process is only stopped between turns. */
  use(space: UserSpace): () => void {
    return this.uses.use(space.hash, () => {
      const inst = this.live.get(space.hash);
      if (inst) inst.lastUsed = Date.now();
    });
  }


  current(space: UserSpace): RunnerEndpoint | undefined {
    const inst = this.live.get(space.hash);
    return inst?.endpoint && !inst.exited && !inst.retiring ? inst.endpoint : undefined;
  }

  async state(space: UserSpace): Promise<RunnerState> {
    const inst = this.live.get(space.hash);
    if (inst && !inst.exited && !inst.retiring) return inst.endpoint ? "ready" : "starting";
    // Ended before this process started (a sidecar restart): its data says it ran.
    return this.ended.get(space.hash) ?? (fs.existsSync(path.join(space.stateDir, "opencode", "data")) ? "gone" : "absent");
  }

  /** Cheap: no process is asked. Ready while the binary is there and user processes start. */
  async health(): Promise<RunnerHealth> {
    if (this.stopping) return { ready: false, detail: "shutting down" };
    if (this.problem) return { ready: false, detail: this.problem };
    let running = 0;
    for (const inst of this.live.values()) if (inst.endpoint && !inst.exited) running++;
    return { ready: true, detail: `${running} user opencode process(es) running, ${this.live.size - running} starting` };
  }

  async stop(): Promise<void> {
    this.stopping = true;
    clearInterval(this.reaper);
    clearInterval(this.recycleTimer);
    await Promise.all([...this.live.values()].map((inst) => this.retire(inst)));
    this.opts.limits?.limiter.close();
  }

  /**
   * Stops the processes of users idle for longer than the timeout. Only this sidecar knows a
   * process's password, so `use()` sees every turn that runs on it.
   */
  async stopIdle(now = Date.now()): Promise<string[]> {
    const idle = (inst: Instance) => this.live.get(inst.hash) === inst && !this.uses.has(inst.hash) && now - inst.lastUsed >= this.opts.idleTimeoutMs;
    return this.retireWhere(idle, (inst) =>
      this.opts.log.info({ user: inst.hash, idleS: Math.round((now - inst.lastUsed) / 1000) }, "stopping an idle user's opencode (data kept)"),
    );
  }

  /** Stops, between turns, the processes that have grown past `maxRssBytes`; returns their users. */
  async recycleIfBloated(): Promise<string[]> {
    const max = this.opts.maxRssBytes;
    if (!max) return [];
    const bloated = (inst: Instance) =>
      this.live.get(inst.hash) === inst && !!inst.endpoint && !this.uses.has(inst.hash) && treeRssBytes(inst.pid) > max;
    return this.retireWhere(bloated, (inst) =>
      this.opts.log.info(
        { user: inst.hash, pid: inst.pid, turns: inst.turns, rssMiB: Math.round(treeRssBytes(inst.pid) / 2 ** 20), maxMiB: Math.round(max / 2 ** 20) },
        "recycling a user's opencode (the next request starts a fresh one)",
      ),
    );
  }

  /** Retires each live process that passes `test`, checked again under its user's lock. */
  private async retireWhere(test: (inst: Instance) => boolean, announce: (inst: Instance) => void): Promise<string[]> {
    const done: string[] = [];
    for (const inst of [...this.live.values()]) {
      if (this.stopping || !test(inst)) continue;
      const unlock = await this.locks.acquire(inst.hash);
      try {
        // A turn may have begun, or the process changed, while we waited for the lock.
        if (this.stopping || !test(inst)) continue;
        announce(inst);
        await this.retire(inst);
        done.push(inst.hash);
      } finally {
        unlock();
      }
    }
    return done;
  }

  private assertRunning(): void {
    if (this.stopping) throw new RunnerUnavailableError("The sidecar is shutting down", "shutting_down");
  }

  private touch(inst: Instance, ep: RunnerEndpoint): RunnerEndpoint {
    inst.turns++;
    inst.lastUsed = Date.now();
    return ep;
  }

  /**
   * Whether the binary is there and executable. Cheap on purpose (`opencode --version` costs
   * most of a second of CPU): a binary that is there but cannot run shows as a failed start.
   */
  private checkBinary(): void {
    const { binary, log } = this.opts;
    try {
      fs.accessSync(binary, fs.constants.X_OK);
      log.info({ binary }, "local opencode runner ready (one opencode per user, started on demand)");
    } catch (e) {
      this.problem = `the opencode binary ${binary} is not executable: ${(e as NodeJS.ErrnoException).code ?? (e as Error).message}`;
      log.error({ binary, err: (e as Error).message }, "local opencode runner cannot run opencode");
    }
  }

  /** Spawns the user's process and registers it; `ready` settles once it answers and streams events. */
  private async spawnInstance(space: UserSpace): Promise<Instance> {
    const { binary, log } = this.opts;
    const hash = space.hash;
    const root = path.join(space.stateDir, "opencode");
    for (const d of XDG_DIRS) fs.mkdirSync(path.join(root, d), { recursive: true, mode: 0o700 });
    fs.mkdirSync(this.opts.sharedConfigDir, { recursive: true, mode: 0o700 });
    // The sandbox mounts it: it must exist before the user's first file does.
    fs.mkdirSync(space.workspaceDir, { recursive: true });
    const port = await freePort();
    this.assertRunning();
    const password = randomBytes(24).toString("base64url");
    const env = {
      PATH: process.env.PATH ?? "/usr/bin:/bin",
      ...runnerProcessEnv(this.opts.runnerEnv),
      // Sandboxed, each user has their own config dir (see runners/sandbox.ts).
      ...xdgEnv(root, this.opts.sandbox ? path.join(root, "config") : this.opts.sharedConfigDir),
      OPENCODE_SERVER_PASSWORD: password,
      OPENCODE_SERVER_USERNAME: "opencode",
    };
    const sandbox = this.opts.sandbox ? [this.opts.sandbox.bwrap, ...bwrapArgs({ workspaceDir: space.workspaceDir, dataDir: root, binary })] : [];
    const cgroup = this.opts.limits?.limiter.forUser(hash, this.opts.limits.perUser);
    const joinCgroups = cgroup?.procsFiles.flatMap((f) => ["--cgroup", f]) ?? [];
    const proc = spawn(TIE_SCRIPT, [...joinCgroups, ...sandbox, binary, "serve", "--hostname", "127.0.0.1", "--port", String(port)], {
      env,
      cwd: root,
      stdio: ["pipe", "pipe", "pipe"],
    });
    const startedAt = Date.now();
    const inst: Instance = {
      hash,
      proc,
      pid: proc.pid ?? -1,
      startedAt,
      cgroup,
      ready: undefined!,
      turns: 0,
      lastUsed: startedAt,
      exited: false,
      retiring: false,
    };
    const ulog = log.child({ runner: "local", user: hash });
    for (const stream of [proc.stdout!, proc.stderr!]) {
      createInterface({ input: stream }).on("line", (line) => ulog.debug({ line }, "opencode output"));
    }
    proc.on("exit", (code, signal) => this.onExit(inst, code, signal));
    // A spawn failure (e.g. the tie script is missing) arrives as an error, then maybe no exit.
    proc.on("error", (e) => {
      ulog.error({ err: e.message }, "could not spawn opencode");
      this.onExit(inst, null, null);
    });
    this.live.set(hash, inst);
    ulog.info({ pid: inst.pid, port, sandboxed: !!this.opts.sandbox, limited: !!cgroup }, "user opencode spawned");

    inst.ready = (async () => {
      const client = new OpencodeClient(`http://127.0.0.1:${port}`, { username: "opencode", password });
      await waitHealthy(client, this.opts.startTimeoutMs, () => inst.exited);
      const events = new EventHub(client, ulog);
      events.start();
      if (!(await events.waitOpen(10_000)) || inst.exited) {
        events.close();
        throw new RunnerUnavailableError("opencode's event stream did not open", "runner_events");
      }
      inst.endpoint = { client, events, directory: space.workspaceDir };
      this.problem = undefined;
      ulog.info({ pid: inst.pid, ms: Date.now() - startedAt }, "user opencode ready");
      return inst.endpoint;
    })();
    return inst;
  }

  /** Stops a process (if still running) and forgets it; the user's data stays. */
  private async retire(inst: Instance): Promise<void> {
    inst.retiring = true;
    if (!this.stopping) this.ended.set(inst.hash, "idle-stopped");
    if (this.live.get(inst.hash) === inst) this.live.delete(inst.hash);
    inst.endpoint?.events.close();
    await terminate(inst);
  }

  private onExit(inst: Instance, code: number | null, signal: NodeJS.Signals | null): void {
    if (inst.exited) return;
    inst.exited = true;
    inst.cgroup?.remove();
    // Final: turns running on it end with stream.lost (chat/agent-run.ts).
    inst.endpoint?.events.close();
    if (this.live.get(inst.hash) === inst) this.live.delete(inst.hash);
    const fields = { user: inst.hash, pid: inst.pid, code, signal, ranS: Math.round((Date.now() - inst.startedAt) / 1000) };
    if (!inst.retiring && !this.stopping) this.ended.set(inst.hash, "gone");
    if (inst.retiring || this.stopping) this.opts.log.info(fields, "user opencode stopped");
    else this.opts.log.error(fields, "user opencode exited; the user's next request starts a new one");
  }
}

function xdgEnv(root: string, configDir: string): Record<string, string> {
  return {
    HOME: path.join(root, "home"),
    XDG_DATA_HOME: path.join(root, "data"),
    XDG_CONFIG_HOME: configDir,
    XDG_STATE_HOME: path.join(root, "state"),
    XDG_CACHE_HOME: path.join(root, "cache"),
  };
}

/** Resident memory of a process and its descendants (Linux /proc; 0 when unreadable). */
function treeRssBytes(pid: number): number {
  let total = 0;
  const visit = (p: number) => {
    try {
      const kb = /VmRSS:\s+(\d+)/.exec(fs.readFileSync(`/proc/${p}/status`, "utf8"))?.[1];
      total += Number(kb ?? 0) * 1024;
      for (const c of fs.readFileSync(`/proc/${p}/task/${p}/children`, "utf8").split(" ").filter(Boolean)) visit(Number(c));
    } catch {
      /* gone, or not Linux */
    }
  };
  visit(pid);
  return total;
}

/**
 * Ends the tie script and so opencode. Closing its stdin makes the script's watcher end
 * opencode (TERM, then KILL after 5 s) even if the script itself has to be killed below.
 */
async function terminate(inst: Instance): Promise<void> {
  const { proc } = inst;
  if (inst.exited || proc.exitCode !== null || proc.signalCode !== null) return;
  const exited = new Promise<void>((r) => {
    proc.once("exit", () => r());
    proc.once("error", () => r());
  });
  proc.stdin?.destroy();
  proc.kill("SIGTERM");
  const timer = setTimeout(() => proc.kill("SIGKILL"), 10_000);
  await exited;
  clearTimeout(timer);
}
