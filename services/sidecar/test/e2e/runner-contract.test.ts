/**
 * The runner contract (test/contract/runner.contract.ts) against every backend, for real:
 * - local: the bundled opencode, one sandboxed (bubblewrap) process per user;
 * - shared: one real `opencode serve` (test/fixtures/opencode-server.ts's environment), on a
 *   fixed port so that it can be killed and started again on the same data;
 * - docker: runner containers on the local engine;
 * - swarm: runner services on this machine's swarm (scripts/swarm-setup.sh), pinned to the
 *   manager (the scripted model is on this host), reached from this process through a
 *   forwarder container on the overlay network (test/fixtures/overlay-forwarder.ts).
 * Runners reach the scripted model on this host: at 127.0.0.1 (local, shared) or as
 * host.docker.internal (containers). Each run uses its own names and user ids, and removes
 * what it made by name and label.
 */
import { spawn, type ChildProcess } from "node:child_process";
import { randomBytes, randomUUID } from "node:crypto";
import fs from "node:fs";
import path from "node:path";
import Docker from "dockerode";
import { afterAll, beforeAll } from "vitest";
import { loadConfig } from "../../src/config/config.js";
import { createLogger } from "../../src/log/logger.js";
import { LABEL_MANAGED, LABEL_USER } from "../../src/runners/docker-runner.js";
import { freePort } from "../../src/runners/free-port.js";
import { bundledOpencodeBinary, createRunner } from "../../src/runners/registry.js";
import { SharedRunner } from "../../src/runners/shared-runner.js";
import { LABEL_NETWORK, SwarmRunner } from "../../src/runners/swarm-runner.js";
import { userHash, userSpace, type UserSpace } from "../../src/workspace/user-space.js";
import { describeRunnerContract, type RunnerBackend, type RunnerCount } from "../contract/runner.contract.js";
import { opencodeServeEnv } from "../fixtures/opencode-server.js";
import { startOverlayForwarder, type OverlayForwarder } from "../fixtures/overlay-forwarder.js";
import { scriptedOpencodeConfig, startScriptedModel, type ScriptedModel } from "../fixtures/scripted-model.js";
import { DockerTestUsers } from "../helpers/docker-users.js";
import { opencodePids, SIDECAR_DIR, tempDir, waitFor } from "../helpers/harness.js";
import { cleanSwarm } from "../helpers/swarm.js";

const docker = new Docker({ socketPath: "/var/run/docker.sock" });
const RUN = randomUUID().slice(0, 8);
const SECRET = `contract-secret-${RUN}-0123456789`;
const LABELS = { "open-persona.test": RUN };
/** Quiet: the kills below make the runners log errors, as they must (CONTRACT_LOG_LEVEL=debug to see them). */
const log = createLogger(
  process.env.CONTRACT_LOG_LEVEL ?? "fatal",
  process.env.CONTRACT_LOG_FILE ? fs.createWriteStream(process.env.CONTRACT_LOG_FILE, { flags: "a" }) : undefined,
);
/** The idle timer never fires during the run: the suite calls stopIdle() with a far `now`. */
const IDLE_S = "3600";

let model: ScriptedModel;
let root: string;

beforeAll(async () => {
  model = await startScriptedModel(0, "0.0.0.0");
  root = tempDir("op-runner-contract-");
});
afterAll(async () => {
  await model?.close();
  if (root) fs.rmSync(root, { recursive: true, force: true });
});

const opencodeEnv = (host: string) => ({
  OPENCODE_CONFIG_CONTENT: JSON.stringify(scriptedOpencodeConfig(`http://${host}:${model.port}/v1`)),
  OPENCODE_DISABLE_MODELS_FETCH: "1",
  OPENCODE_DISABLE_LSP_DOWNLOAD: "1",
});

/** The opencode server processes of this test process whose data dir is `dataDir`. */
function opencodeProcesses(dataDir: string): number[] {
  return opencodePids(process.pid).filter((pid) => {
    try {
      return fs.readFileSync(`/proc/${pid}/environ`, "utf8").split("\0").includes(`XDG_DATA_HOME=${dataDir}`);
    } catch {
      return false; // ended while we looked
    }
  });
}

function processCount(dataDir: string): RunnerCount {
  const n = opencodeProcesses(dataDir).length;
  return { exist: n, running: n };
}

function roots(mode: string) {
  return { workspaceRoot: path.join(root, mode, "workspaces"), stateRoot: path.join(root, mode, "state") };
}

/** A user id of this run and backend (user hashes, and so volume names, differ across backends). */
const userId = (mode: string, name: string) => `${mode}-${name}-${RUN}@example.com`;

// ---------------------------------------------------------------------------------------------
// local

function localEnv(): Record<string, string> {
  const { workspaceRoot, stateRoot } = roots("local");
  return { RUNNER_MODE: "local", LOCAL_SANDBOX: "on", RUNNER_IDLE_TIMEOUT: IDLE_S, WORKSPACE_ROOT: workspaceRoot, STATE_ROOT: stateRoot, ...opencodeEnv("127.0.0.1") };
}

const local: RunnerBackend = {
  make: async () => {
    const runner = createRunner(loadConfig(localEnv()), log);
    await runner.start();
    return runner;
  },
  newUser: (name) => {
    const { workspaceRoot, stateRoot } = roots("local");
    return userSpace(workspaceRoot, stateRoot, userHash(userId("local", name)));
  },
  count: async (space) => processCount(path.join(space.stateDir, "opencode", "data")),
  perUser: true,
  idlePolicy: true,
  keepsRunners: false,
  kills: [
    {
      how: "its opencode process killed",
      act: async (space) => {
        const pids = opencodeProcesses(path.join(space.stateDir, "opencode", "data"));
        if (pids.length !== 1) throw new Error(`expected one opencode of the user, found ${pids.length}`);
        process.kill(pids[0]!, "SIGKILL");
      },
      reads: "gone",
    },
  ],
};

// ---------------------------------------------------------------------------------------------
// shared: one `opencode serve`, restartable on the same port and data

class SharedServer {
  readonly password = randomBytes(24).toString("base64url");
  port = 0;
  dir = "";
  private child?: ChildProcess;

  get url(): string {
    return `http://127.0.0.1:${this.port}`;
  }
  get dataDir(): string {
    return path.join(this.dir, "data");
  }

  /** Starts it (again: same port, same data) and waits until it answers. */
  async up(): Promise<void> {
    if (!this.port) {
      this.port = await freePort();
      this.dir = path.join(root, "shared", "server");
    }
    const env = opencodeServeEnv(this.dir, opencodeEnv("127.0.0.1"), this.password);
    const child = spawn(path.join(SIDECAR_DIR, "bin/tie-to-parent.sh"), [bundledOpencodeBinary(), "serve", "--hostname", "127.0.0.1", "--port", String(this.port)], {
      cwd: this.dir,
      stdio: ["pipe", "ignore", "ignore"],
      env,
    });
    this.child = child;
    const auth = `Basic ${Buffer.from(`opencode:${this.password}`).toString("base64")}`;
    const healthy = async () =>
      (await fetch(`${this.url}/global/health`, { headers: { authorization: auth }, signal: AbortSignal.timeout(2000) }).catch(() => undefined))?.ok ?? false;
    await waitFor(healthy, 60_000, "the shared opencode server to answer");
  }

  /** SIGKILL to opencode itself (not the tie script): a crash. */
  kill(): void {
    for (const pid of opencodeProcesses(this.dataDir)) process.kill(pid, "SIGKILL");
  }

  async down(): Promise<void> {
    const child = this.child;
    if (!child || child.exitCode !== null || child.signalCode !== null) return;
    const exited = new Promise((r) => child.once("exit", r));
    child.stdin?.end(); // tie-to-parent's signal: TERM to opencode, KILL 5 s later
    child.kill("SIGTERM");
    await Promise.race([exited, new Promise((r) => setTimeout(r, 10_000))]);
    if (child.exitCode === null && child.signalCode === null) child.kill("SIGKILL");
  }
}

const server = new SharedServer();
afterAll(() => server.down());

const shared: RunnerBackend = {
  make: async () => {
    if (!server.port) await server.up();
    const runner = new SharedRunner({ baseUrl: server.url, username: "opencode", password: server.password, startTimeoutMs: 60_000, log });
    await runner.start();
    return runner;
  },
  newUser: (name) => {
    const { workspaceRoot, stateRoot } = roots("shared");
    const space = userSpace(workspaceRoot, stateRoot, userHash(userId("shared", name)));
    // The server is the operator's: the sidecar makes the directory it sends it.
    fs.mkdirSync(space.workspaceDir, { recursive: true });
    return space;
  },
  count: async () => processCount(server.dataDir),
  perUser: false,
  idlePolicy: false,
  keepsRunners: false,
  kills: [
    {
      how: "the server killed, then restarted by its operator",
      act: async () => {
        server.kill();
        await waitFor(() => opencodeProcesses(server.dataDir).length === 0, 10_000, "the shared server to die");
      },
      reads: "gone",
      revive: () => server.up(),
    },
  ],
};

// ---------------------------------------------------------------------------------------------
// docker

const DOCKER_NETWORK = `op-contract-${RUN}`;
const dockerUsers = new DockerTestUsers(docker, RUN, DOCKER_NETWORK);
afterAll(() => dockerUsers.removeAll(), 120_000);

function dockerEnv(): Record<string, string> {
  const { workspaceRoot, stateRoot } = roots("docker");
  return {
    RUNNER_MODE: "docker",
    RUNNER_NETWORK: DOCKER_NETWORK,
    RUNNER_SECRET: SECRET,
    RUNNER_IDLE_TIMEOUT: IDLE_S,
    WORKSPACE_ROOT: workspaceRoot,
    STATE_ROOT: stateRoot,
    ...opencodeEnv("host.docker.internal"),
  };
}

async function containersOf(space: UserSpace) {
  return docker.listContainers({ all: true, filters: { label: [`${LABEL_USER}=${space.hash}`, `${LABEL_MANAGED}=true`] } });
}

const dockerBackend: RunnerBackend = {
  make: async () => {
    const runner = createRunner(loadConfig(dockerEnv()), log);
    await runner.start();
    return runner;
  },
  newUser: (name) => {
    const { workspaceRoot, stateRoot } = roots("docker");
    return userSpace(workspaceRoot, stateRoot, userHash(dockerUsers.track(userId("docker", name))));
  },
  count: async (space) => {
    const list = await containersOf(space);
    return { exist: list.length, running: list.filter((c) => c.State === "running").length };
  },
  perUser: true,
  idlePolicy: true,
  keepsRunners: true,
  kills: [
    {
      how: "its container killed",
      act: async (space) => {
        for (const c of await containersOf(space)) await docker.getContainer(c.Id).kill();
      },
      reads: "gone",
    },
    {
      how: "its container removed",
      act: async (space) => {
        for (const c of await containersOf(space)) await docker.getContainer(c.Id).remove({ force: true });
      },
      reads: "gone",
    },
  ],
};

// ---------------------------------------------------------------------------------------------
// swarm

const SWARM_NETWORK = `op-contract-sw-${RUN}`;
const swarmHashes: string[] = [];
let forwarder: OverlayForwarder | undefined;

function swarmEnv(): Record<string, string> {
  const { workspaceRoot, stateRoot } = roots("swarm");
  return {
    RUNNER_MODE: "swarm",
    RUNNER_NETWORK: SWARM_NETWORK,
    RUNNER_SECRET: SECRET,
    RUNNER_IDLE_TIMEOUT: IDLE_S,
    // The scripted model listens on this host: runners must run on its engine.
    RUNNER_PLACEMENT: "node.role==manager",
    WORKSPACE_ROOT: workspaceRoot,
    STATE_ROOT: stateRoot,
    ...opencodeEnv("host.docker.internal"),
  };
}

interface SwarmTask {
  DesiredState?: string;
  Status?: { State?: string; ContainerStatus?: { ContainerID?: string } };
}
async function runningTasks(space: UserSpace): Promise<SwarmTask[]> {
  const tasks = (await docker.listTasks({ filters: { service: [SwarmRunner.serviceName(space.hash)] } })) as SwarmTask[];
  return tasks.filter((t) => t.Status?.State === "running" && t.DesiredState === "running");
}

const swarm: RunnerBackend = {
  make: async () => {
    if (!forwarder) {
      // The sidecar would create the network too; the forwarder must be on it before.
      await docker.createNetwork({ Name: SWARM_NETWORK, Driver: "overlay", Attachable: true, Labels: { [LABEL_MANAGED]: "true", ...LABELS } });
      forwarder = await startOverlayForwarder(docker, SWARM_NETWORK, `op-contract-fwd-${RUN}`, LABELS);
    }
    const c = loadConfig(swarmEnv());
    const d = c.docker;
    // As the registry builds it, plus the way in from this host.
    const runner = new SwarmRunner({
      docker,
      image: d.image,
      network: d.network,
      placement: c.swarm.placement,
      selfContainer: d.selfContainer,
      fetch: forwarder.fetch,
      user: d.user,
      memoryBytes: d.memoryBytes,
      nanoCpus: d.nanoCpus,
      pidsLimit: d.pidsLimit,
      idleTimeoutMs: d.idleTimeoutMs,
      secret: d.secret!,
      runnerEnv: c.runnerEnv,
      startTimeoutMs: c.runnerStartTimeoutMs,
      log,
    });
    await runner.start();
    return runner;
  },
  newUser: (name) => {
    const { workspaceRoot, stateRoot } = roots("swarm");
    const space = userSpace(workspaceRoot, stateRoot, userHash(userId("swarm", name)));
    swarmHashes.push(space.hash);
    return space;
  },
  count: async (space) => {
    const services = await docker.listServices({ filters: { label: [`${LABEL_USER}=${space.hash}`, `${LABEL_NETWORK}=${SWARM_NETWORK}`] } });
    return { exist: services.length, running: (await runningTasks(space)).length };
  },
  perUser: true,
  idlePolicy: true,
  keepsRunners: true,
  kills: [
    {
      // The service still wants its replica: state() says starting until the new task's
      // event stream is open (then ready again, without any ensure()).
      how: "its task's container killed, Swarm replacing it",
      act: async (space) => {
        const [task] = await runningTasks(space);
        const id = task?.Status?.ContainerStatus?.ContainerID;
        if (!id) throw new Error("no running task container");
        await docker.getContainer(id).kill();
      },
      reads: "starting",
    },
    {
      how: "its service removed",
      act: async (space) => {
        await docker.getService(SwarmRunner.serviceName(space.hash)).remove();
      },
      reads: "gone",
    },
  ],
};

afterAll(async () => {
  await forwarder?.close().catch((e: Error) => console.warn(`cleanup: forwarder: ${e.message}`));
  const volumes = swarmHashes.flatMap((h) => [SwarmRunner.workspaceVolume(h), SwarmRunner.dataVolume(h)]);
  await cleanSwarm(SWARM_NETWORK, volumes);
}, 180_000);

describeRunnerContract("local", () => local);
describeRunnerContract("shared", () => shared);
describeRunnerContract("docker", () => dockerBackend);
describeRunnerContract("swarm", () => swarm);
