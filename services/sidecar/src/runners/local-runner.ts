/**
 * `RUNNER_MODE=local`: one `opencode serve` process, spawned from the bundled binary and
 * supervised by the sidecar. All users share it; each user's sessions run in that user's
 * workspace directory.
 *
 * What this isolates: sessions and workspaces are separate per user, and the server is bound
 * to loopback behind a per-boot random password. What it does not: the agent's bash tool
 * runs as the sidecar's Unix user and can read any path that user can, other users'
 * workspaces included. Use `RUNNER_MODE=docker` when users must not trust each other.
 *
 * Supervision: a crashed process is restarted (with backoff when it keeps crashing); the
 * process is tied to the sidecar through a stdin pipe (bin/tie-to-parent.sh) so that it
 * never outlives it, not even a SIGKILL of the sidecar. opencode does not give memory back
 * after serving many directories, so with `maxRssBytes` set it is recycled (restarted) once
 * it has grown past that size and no turn is running; sessions live in its database.
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
import type { UserSpace } from "../workspace/user-space.js";
import { runnerProcessEnv } from "./opencode-config.js";
import { freePort } from "./free-port.js";
import { waitHealthy } from "./readiness.js";
import type { Runner, RunnerEndpoint, RunnerHealth } from "./runner.js";

const TIE_SCRIPT = fileURLToPath(new URL("../../bin/tie-to-parent.sh", import.meta.url));

export interface LocalRunnerOptions {
  binary: string;
  /** opencode's XDG data/config/state/cache dirs live under here (sessions survive restarts). */
  dataDir: string;
  runnerEnv: Record<string, string>;
  startTimeoutMs: number;
  log: Logger;
  /** Restart opencode when idle and its resident memory is above this. */
  maxRssBytes?: number;
  /** How often to check for that. */
  recycleCheckMs?: number;
}

interface Instance {
  /** Turns begun on this process: a fresh one is never recycled (that would only loop). */
  turns: number;
  proc: ChildProcess;
  pid: number;
  ready: Promise<RunnerEndpoint>;
  endpoint?: RunnerEndpoint;
  startedAt: number;
}

export class LocalRunner implements Runner {
  readonly mode = "local";
  private current?: Instance;
  private stopping = false;
  private crashes = 0;
  private restartTimer?: NodeJS.Timeout;
  private recycleTimer?: NodeJS.Timeout;
  private inUse = 0;

  constructor(private readonly opts: LocalRunnerOptions) {}

  async start(): Promise<void> {
    this.spawnInstance();
    if (this.opts.maxRssBytes) {
      this.recycleTimer = setInterval(() => void this.recycleIfBloated(), this.opts.recycleCheckMs ?? 30_000);
      this.recycleTimer.unref();
    }
  }

  async ensure(space: UserSpace): Promise<RunnerEndpoint> {
    if (this.stopping) throw new RunnerUnavailableError("The sidecar is shutting down", "shutting_down");
    if (!this.current) {
      clearTimeout(this.restartTimer);
      this.spawnInstance();
    }
    const endpoint = await this.current!.ready;
    return { ...endpoint, directory: space.workspaceDir };
  }

  /** Counts turns in flight: opencode is only recycled between turns. */
  use(): () => void {
    this.inUse++;
    if (this.current) this.current.turns++;
    let done = false;
    return () => {
      if (!done) this.inUse--;
      done = true;
    };
  }

  /** Restarts an idle opencode that has grown past `maxRssBytes`. Returns whether it did. */
  async recycleIfBloated(): Promise<boolean> {
    const inst = this.current;
    if (!inst?.endpoint || inst.turns === 0 || this.inUse > 0 || this.stopping || !this.opts.maxRssBytes) return false;
    const rss = treeRssBytes(inst.pid);
    if (rss <= this.opts.maxRssBytes) return false;
    // Only this sidecar can drive its opencode (random password), so `inUse` sees every turn.
    this.opts.log.info({ pid: inst.pid, rssMiB: Math.round(rss / 2 ** 20), maxMiB: Math.round(this.opts.maxRssBytes / 2 ** 20) }, "recycling the local opencode runner");
    this.current = undefined;
    inst.endpoint.events.close();
    await terminate(inst.proc);
    if (!this.stopping && !this.current) this.spawnInstance();
    return true;
  }

  async health(): Promise<RunnerHealth> {
    const ep = this.current?.endpoint;
    if (!ep) return { ready: false, detail: this.current ? "starting" : "not running" };
    try {
      const h = await ep.client.health(1500);
      return { ready: h.healthy && ep.events.isOpen, detail: `opencode ${h.version ?? "?"} pid ${this.current!.pid}` };
    } catch {
      return { ready: false, detail: "opencode not answering" };
    }
  }

  /** The running opencode process id (for diagnostics and tests). */
  get pid(): number | undefined {
    return this.current?.pid;
  }

  async stop(): Promise<void> {
    this.stopping = true;
    clearTimeout(this.restartTimer);
    clearInterval(this.recycleTimer);
    const inst = this.current;
    this.current = undefined;
    if (!inst) return;
    inst.endpoint?.events.close();
    await terminate(inst.proc);
  }

  private spawnInstance(): void {
    const { dataDir, binary, log } = this.opts;
    for (const d of ["data", "config", "state", "cache"]) fs.mkdirSync(path.join(dataDir, d), { recursive: true });
    const password = randomBytes(24).toString("base64url");
    const portReady = freePort();
    const inst = { startedAt: Date.now(), turns: 0 } as Instance;

    inst.ready = portReady.then(async (port) => {
      const env = {
        PATH: process.env.PATH ?? "/usr/bin:/bin",
        HOME: path.join(dataDir, "home"),
        ...runnerProcessEnv(this.opts.runnerEnv),
        XDG_DATA_HOME: path.join(dataDir, "data"),
        XDG_CONFIG_HOME: path.join(dataDir, "config"),
        XDG_STATE_HOME: path.join(dataDir, "state"),
        XDG_CACHE_HOME: path.join(dataDir, "cache"),
        OPENCODE_SERVER_PASSWORD: password,
        OPENCODE_SERVER_USERNAME: "opencode",
      };
      fs.mkdirSync(env.HOME, { recursive: true });
      const proc = spawn(TIE_SCRIPT, [binary, "serve", "--hostname", "127.0.0.1", "--port", String(port)], {
        env,
        cwd: dataDir,
        stdio: ["pipe", "pipe", "pipe"],
      });
      inst.proc = proc;
      inst.pid = proc.pid ?? -1;
      for (const stream of [proc.stdout!, proc.stderr!]) {
        createInterface({ input: stream }).on("line", (line) => log.debug({ runner: "local", line }, "opencode output"));
      }
      proc.on("exit", (code, signal) => this.onExit(inst, code, signal));
      log.info({ pid: inst.pid, port }, "local opencode runner spawned");

      const client = new OpencodeClient(`http://127.0.0.1:${port}`, { username: "opencode", password });
      await waitHealthy(client, this.opts.startTimeoutMs, () => proc.exitCode !== null || proc.signalCode !== null);
      const events = new EventHub(client, log.child({ runner: "local" }));
      events.start();
      if (!(await events.waitOpen(10_000))) throw new RunnerUnavailableError("opencode event stream did not open", "runner_events");
      inst.endpoint = { client, events, directory: "" };
      log.info({ pid: inst.pid, ms: Date.now() - inst.startedAt }, "local opencode runner ready");
      return inst.endpoint;
    });
    // A failed start is reported to whoever awaits `ready`; don't crash on an unobserved one.
    inst.ready.catch((e) => log.error({ err: (e as Error).message }, "local opencode runner failed to start"));
    this.current = inst;
  }

  private onExit(inst: Instance, code: number | null, signal: NodeJS.Signals | null): void {
    inst.endpoint?.events.close();
    if (this.current !== inst) return;
    this.current = undefined;
    if (this.stopping) return;
    // Back off when it keeps dying right after starting; restart at once after a long run.
    this.crashes = Date.now() - inst.startedAt < 10_000 ? this.crashes + 1 : 0;
    const delay = Math.min(30_000, this.crashes === 0 ? 0 : 500 * 2 ** this.crashes);
    this.opts.log.error({ pid: inst.pid, code, signal, restartInMs: delay }, "local opencode runner exited");
    this.restartTimer = setTimeout(() => {
      if (!this.current && !this.stopping) this.spawnInstance();
    }, delay);
  }
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

async function terminate(proc: ChildProcess): Promise<void> {
  if (proc.exitCode !== null || proc.signalCode !== null) return;
  const exited = new Promise<void>((r) => proc.once("exit", () => r()));
  proc.kill("SIGTERM");
  const timer = setTimeout(() => proc.kill("SIGKILL"), 5000);
  await exited;
  clearTimeout(timer);
}
