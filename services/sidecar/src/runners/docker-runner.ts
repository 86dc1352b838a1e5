/**
 * `RUNNER_MODE=docker`: one opencode container per user, through dockerode. This is the mode
 * that isolates users from each other: each container sees only its own user's workspace.
 *
 * Per user `h` (the user hash):
 * - container `open-persona-runner-<h>`, labelled `open-persona.user=<h>` and
 *   `open-persona.managed=true`; non-root, all capabilities dropped, `no-new-privileges`,
 *   read-only root filesystem, memory/CPU/PID limits, no published ports;
 * - mounts: the user's workspace (a host directory) at /workspace, and a per-user named
 *   volume `open-persona-data-<h>` at /data (opencode's database: sessions survive the
 *   container being recreated). Never the workspace root, never the Docker socket;
 * - its opencode server password is HMAC(runner secret, h): a restarted sidecar still knows
 *   it, and another user's container on the same network cannot drive it.
 *
 * The sidecar reaches a runner at its address on RUNNER_NETWORK (a user-defined bridge the
 * sidecar creates if missing); runners reach the host as `host.docker.internal`.
 * Creating a user's runner is serialized per user; a container that exists (running or not)
 * is adopted, never duplicated; one that died is started again on the next request. Idle
 * runners are stopped (not removed) after RUNNER_IDLE_TIMEOUT; data is never deleted.
 */
import { createHmac } from "node:crypto";
import fs from "node:fs/promises";
import path from "node:path";
import type Docker from "dockerode";
import { RunnerUnavailableError } from "../errors/api-error.js";
import type { Logger } from "../log/logger.js";
import { OpencodeClient } from "../opencode/client.js";
import { EventHub } from "../opencode/event-hub.js";
import { KeyedMutex } from "../sessions/keyed-mutex.js";
import type { UserSpace } from "../workspace/user-space.js";
import { runnerProcessEnv } from "./opencode-config.js";
import { waitHealthy } from "./readiness.js";
import type { Runner, RunnerEndpoint, RunnerHealth } from "./runner.js";

export const LABEL_USER = "open-persona.user";
export const LABEL_MANAGED = "open-persona.managed";
const OPENCODE_PORT = 4096;
const CONTAINER_WORKSPACE = "/workspace";

export interface DockerRunnerOptions {
  docker: Docker;
  image: string;
  network: string;
  /** The workspace root as the Docker engine sees it (differs when the sidecar is in a container). */
  workspaceHostRoot: string;
  /** `uid:gid` the runner runs as; new workspaces are given to it when the sidecar is root. */
  user: string;
  memoryBytes?: number;
  nanoCpus?: number;
  pidsLimit?: number;
  /** 0 = never stop idle runners. */
  idleTimeoutMs: number;
  secret: string;
  runnerEnv: Record<string, string>;
  startTimeoutMs: number;
  log: Logger;
}

interface Live {
  containerId: string;
  endpoint: RunnerEndpoint;
  lastUsed: number;
}

/** Turns in flight per user hash; kept apart from `live` so a reconnect does not reset it. */
type InUse = Map<string, number>;

export class DockerRunner implements Runner {
  readonly mode = "docker";
  private readonly live = new Map<string, Live>();
  private readonly inUse: InUse = new Map();
  private readonly locks = new KeyedMutex();
  private reaper?: NodeJS.Timeout;
  private networkReady?: Promise<void>;

  constructor(private readonly opts: DockerRunnerOptions) {}

  static containerName(hash: string): string {
    return `open-persona-runner-${hash}`;
  }

  static volumeName(hash: string): string {
    return `open-persona-data-${hash}`;
  }

  /**
   * Ensures the network, then adopts the runners already running (by label) in the
   * background: a runner that is slow or broken must not hold up the sidecar's start.
   */
  async start(): Promise<void> {
    try {
      await this.ensureNetwork();
      const running = await this.opts.docker.listContainers({ filters: { label: [`${LABEL_MANAGED}=true`], status: ["running"] } });
      for (const c of running) {
        const hash = c.Labels[LABEL_USER];
        if (hash) void this.adopt(hash, c.Id);
      }
    } catch (e) {
      // The engine may come up later: ensure() retries and answers 503 meanwhile.
      this.opts.log.error({ err: (e as Error).message }, "docker runner could not start");
    }
    if (this.opts.idleTimeoutMs > 0) {
      const every = Math.max(1000, Math.min(30_000, Math.floor(this.opts.idleTimeoutMs / 4)));
      this.reaper = setInterval(() => void this.stopIdle(), every);
      this.reaper.unref();
    }
  }

  private async adopt(hash: string, containerId: string): Promise<void> {
    const unlock = await this.locks.acquire(hash);
    try {
      if (this.live.has(hash)) return;
      await this.connect(hash, containerId);
      this.opts.log.info({ user: hash, container: containerId.slice(0, 12) }, "adopted running runner");
    } catch (e) {
      this.opts.log.warn({ user: hash, err: (e as Error).message }, "could not adopt runner; it will be restarted on demand");
    } finally {
      unlock();
    }
  }

  async ensure(space: UserSpace): Promise<RunnerEndpoint> {
    const hash = space.hash;
    const unlock = await this.locks.acquire(hash);
    try {
      const cached = this.live.get(hash);
      if (cached?.endpoint.events.isOpen) {
        cached.lastUsed = Date.now();
        return cached.endpoint;
      }
      // Lost or never seen: find the container again (it may have died or been removed).
      this.forget(hash);
      await this.ensureNetwork();
      const id = await this.startContainer(space);
      return (await this.connect(hash, id)).endpoint;
    } finally {
      unlock();
    }
  }

  use(space: UserSpace): () => void {
    const hash = space.hash;
    this.inUse.set(hash, (this.inUse.get(hash) ?? 0) + 1);
    let done = false;
    return () => {
      if (done) return;
      done = true;
      const left = (this.inUse.get(hash) ?? 1) - 1;
      if (left > 0) this.inUse.set(hash, left);
      else this.inUse.delete(hash);
      const live = this.live.get(hash);
      if (live) live.lastUsed = Date.now();
    };
  }

  async health(): Promise<RunnerHealth> {
    try {
      await this.opts.docker.ping();
      return { ready: true, detail: `docker engine up, ${this.live.size} runner(s) connected` };
    } catch (e) {
      return { ready: false, detail: `docker engine unreachable: ${(e as Error).message}` };
    }
  }

  /** Closes connections; runner containers keep running and are adopted by the next sidecar. */
  async stop(): Promise<void> {
    clearInterval(this.reaper);
    for (const hash of [...this.live.keys()]) this.forget(hash);
  }

  /**
   * Stops runners idle for longer than the timeout: no turn of the sidecar's in flight, and
   * no session busy in opencode (a run another sidecar started, or one still finishing).
   */
  async stopIdle(now = Date.now()): Promise<string[]> {
    const stopped: string[] = [];
    for (const [hash, live] of [...this.live]) {
      if (now - live.lastUsed < this.opts.idleTimeoutMs || this.inUse.has(hash)) continue;
      const unlock = await this.locks.acquire(hash);
      try {
        if (this.live.get(hash) !== live || now - live.lastUsed < this.opts.idleTimeoutMs || this.inUse.has(hash)) continue;
        if (await this.busy(live.endpoint)) continue;
        this.forget(hash);
        await this.opts.docker.getContainer(live.containerId).stop({ t: 10 }).catch(() => {});
        this.opts.log.info({ user: hash }, "stopped idle runner (data kept)");
        stopped.push(hash);
      } finally {
        unlock();
      }
    }
    return stopped;
  }

  private async busy(ep: RunnerEndpoint): Promise<boolean> {
    try {
      const status = await ep.client.sessionStatus(ep.directory);
      return Object.values(status).some((s) => s.type !== "idle");
    } catch {
      return false;
    }
  }

  private forget(hash: string): void {
    const live = this.live.get(hash);
    if (!live) return;
    live.endpoint.events.close();
    this.live.delete(hash);
  }

  private async connect(hash: string, containerId: string): Promise<Live> {
    const info = await this.opts.docker.getContainer(containerId).inspect();
    const ip = info.NetworkSettings.Networks[this.opts.network]?.IPAddress;
    if (!ip) throw new RunnerUnavailableError(`Runner container is not on network ${this.opts.network}`, "runner_network");
    const client = new OpencodeClient(`http://${ip}:${OPENCODE_PORT}`, { username: "opencode", password: this.password(hash) });
    await waitHealthy(client, this.opts.startTimeoutMs, () => false).catch(async (e: Error) => {
      const logs = await this.tail(containerId);
      this.opts.log.error({ user: hash, logs }, "runner did not become healthy");
      throw new RunnerUnavailableError(`Your agent runner did not become ready: ${e.message}`, "runner_timeout");
    });
    const events = new EventHub(client, this.opts.log.child({ runner: "docker", user: hash }));
    events.start();
    if (!(await events.waitOpen(10_000))) {
      events.close();
      throw new RunnerUnavailableError("The runner's event stream did not open", "runner_events");
    }
    const live: Live = { containerId, endpoint: { client, events, directory: CONTAINER_WORKSPACE }, lastUsed: Date.now() };
    this.live.set(hash, live);
    return live;
  }

  /** Starts the user's container, creating it when it does not exist. Returns its id. */
  private async startContainer(space: UserSpace): Promise<string> {
    const hash = space.hash;
    const { docker, log } = this.opts;
    const name = DockerRunner.containerName(hash);
    let container = docker.getContainer(name);
    let info = await container.inspect().catch((e: { statusCode?: number; message?: string }) => {
      if (e.statusCode === 404) return undefined;
      throw engineError(e);
    });
    if (!info) {
      await this.prepareWorkspace(space.workspaceDir);
      container = await docker.createContainer(this.spec(hash)).catch((e: { statusCode?: number; message?: string }) => {
        if (e.statusCode === 409) return docker.getContainer(name); // created concurrently by another sidecar
        if (e.statusCode === 404) {
          throw new RunnerUnavailableError(
            `Runner image ${this.opts.image} not found: build it with \`npm run build:runner-image\``,
            "runner_image_missing",
          );
        }
        throw engineError(e);
      });
      info = await container.inspect();
      log.info({ user: hash, container: info.Id.slice(0, 12) }, "runner container created");
    }
    if (!info.State.Running) {
      await container.start().catch((e: { statusCode?: number; message?: string }) => {
        if (e.statusCode !== 304) throw engineError(e); // 304: already started
      });
      log.info({ user: hash, container: info.Id.slice(0, 12) }, "runner container started");
    }
    return info.Id;
  }

  private spec(hash: string): Docker.ContainerCreateOptions {
    const o = this.opts;
    const env = {
      ...runnerProcessEnv(o.runnerEnv),
      OPENCODE_SERVER_PASSWORD: this.password(hash),
      OPENCODE_SERVER_USERNAME: "opencode",
    };
    return {
      name: DockerRunner.containerName(hash),
      Image: o.image,
      User: o.user,
      WorkingDir: CONTAINER_WORKSPACE,
      Env: Object.entries(env).map(([k, v]) => `${k}=${v}`),
      Labels: { [LABEL_USER]: hash, [LABEL_MANAGED]: "true" },
      HostConfig: {
        Binds: [`${path.join(o.workspaceHostRoot, hash)}:${CONTAINER_WORKSPACE}:rw`],
        Mounts: [{ Type: "volume", Source: DockerRunner.volumeName(hash), Target: "/data", ReadOnly: false }],
        NetworkMode: o.network,
        CapDrop: ["ALL"],
        SecurityOpt: ["no-new-privileges"],
        ReadonlyRootfs: true,
        Tmpfs: { "/tmp": "rw,nosuid,nodev,size=512m" },
        Memory: o.memoryBytes,
        NanoCpus: o.nanoCpus,
        PidsLimit: o.pidsLimit,
        ExtraHosts: ["host.docker.internal:host-gateway"],
        // An init as PID 1: opencode gets SIGTERM on stop (PID 1 ignores it otherwise, and
        // every stop would wait out the timeout) and the bash tool's orphans are reaped.
        Init: true,
        RestartPolicy: { Name: "no" },
        PortBindings: {},
        PublishAllPorts: false,
      },
    };
  }

  /** The workspace must exist before Docker bind-mounts it, and belong to the runner user. */
  private async prepareWorkspace(dir: string): Promise<void> {
    await fs.mkdir(dir, { recursive: true });
    if (process.getuid?.() === 0) {
      const [uid, gid] = this.opts.user.split(":").map(Number);
      await fs.chown(dir, uid!, gid ?? uid!);
    }
  }

  private password(hash: string): string {
    return createHmac("sha256", this.opts.secret).update(`opencode-server-password:${hash}`).digest("base64url");
  }

  private async tail(containerId: string): Promise<string> {
    try {
      const buf = (await this.opts.docker.getContainer(containerId).logs({ stdout: true, stderr: true, tail: 20 })) as unknown as Buffer;
      // Strip Docker's 8-byte stream frame headers for a readable log line.
      return buf.toString("utf8").replace(/[\x00-\x08]/g, "").slice(-2000);
    } catch {
      return "";
    }
  }

  private ensureNetwork(): Promise<void> {
    this.networkReady ??= (async () => {
      const { docker, network, log } = this.opts;
      const found = await docker.listNetworks({ filters: { name: [network] } }).catch((e) => {
        throw engineError(e);
      });
      if (found.some((n) => n.Name === network)) return;
      await docker
        .createNetwork({ Name: network, Driver: "bridge", CheckDuplicate: true, Labels: { [LABEL_MANAGED]: "true" } })
        .catch((e: { statusCode?: number; message?: string }) => {
          if (e.statusCode !== 409) throw engineError(e);
        });
      log.info({ network }, "created runner network");
    })().catch((e) => {
      this.networkReady = undefined;
      throw e;
    });
    return this.networkReady;
  }
}

function engineError(e: { message?: string }): RunnerUnavailableError {
  return new RunnerUnavailableError(`The Docker engine failed: ${e.message ?? "unknown error"}`, "docker_engine");
}
