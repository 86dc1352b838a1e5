/** Chooses the runner backend from the configuration. */
import { createRequire } from "node:module";
import path from "node:path";
import Docker from "dockerode";
import { ConfigError, type Config } from "../config/config.js";
import { FileSecrets, type SecretSource } from "../config/persistent-secret.js";
import type { Logger } from "../log/logger.js";
import { DockerRunner } from "./docker-runner.js";
import { LocalRunner } from "./local-runner.js";
import { detectCgroupLimiter, type CgroupLimiter, type ProcessLimits } from "./cgroup-limits.js";
import { sandboxProblem } from "./sandbox.js";
import type { Runner, RunnerUse } from "./runner.js";
import type { TurnLocks } from "../sessions/chat-sessions.js";
import { SharedRunner } from "./shared-runner.js";
import { SwarmRunner } from "./swarm-runner.js";

/** What replicas sharing a database share about runners: their start locks, their uses, the runner secret. */
export interface SharedRunnerState {
  userLocks: TurnLocks;
  use: RunnerUse;
  secrets: SecretSource;
}

export function createRunner(config: Config, log: Logger, shared?: SharedRunnerState): Runner {
  switch (config.runnerMode) {
    case "local":
      return new LocalRunner({
        binary: config.opencodeBinary ?? bundledOpencodeBinary(),
        runnerEnv: config.runnerEnv,
        startTimeoutMs: config.runnerStartTimeoutMs,
        log,
        // RUNNER_IDLE_TIMEOUT, shared with docker mode (where it was first used).
        idleTimeoutMs: config.docker.idleTimeoutMs,
        maxRssBytes: config.localMaxRssBytes,
        recycleCheckMs: config.localRecycleCheckMs,
        legacyDataDir: path.join(config.stateRoot, "opencode"),
        sharedConfigDir: path.join(config.stateRoot, "opencode-config"),
        sandbox: localSandbox(config, log),
        limits: localLimits(config, log),
      });
    case "shared":
      return new SharedRunner({
        baseUrl: config.opencodeBaseUrl!,
        username: config.opencodeServerUsername,
        password: config.opencodeServerPassword,
        startTimeoutMs: config.runnerStartTimeoutMs,
        log,
      });
    case "docker": {
      const d = config.docker;
      return new DockerRunner({ ...containerRunner(config, log, shared), subnetPool: d.subnetPool, runtime: d.runtime, workspaceHostRoot: d.workspaceHostRoot });
    }
    case "swarm":
      return new SwarmRunner({ ...containerRunner(config, log, shared), placement: config.swarm.placement });
  }
}

/** What docker and swarm modes build runners from alike: the engine, the container spec, the secret, the shared state. */
function containerRunner(config: Config, log: Logger, shared?: SharedRunnerState) {
  const d = config.docker;
  return {
    docker: dockerClient(d.host),
    image: d.image,
    network: d.network,
    selfContainer: d.selfContainer,
    user: d.user,
    memoryBytes: d.memoryBytes,
    nanoCpus: d.nanoCpus,
    pidsLimit: d.pidsLimit,
    idleTimeoutMs: d.idleTimeoutMs,
    secret: runnerSecret(config, shared),
    runnerEnv: config.runnerEnv,
    startTimeoutMs: config.runnerStartTimeoutMs,
    log,
    userLocks: shared?.userLocks,
    sharedUse: shared?.use,
  };
}

/** RUNNER_SECRET, else one generated once and kept (in the database for replicas, else under STATE_ROOT). */
function runnerSecret(config: Config, shared?: SharedRunnerState): string | (() => Promise<string>) {
  return config.docker.secret ?? (() => (shared?.secrets ?? new FileSecrets(config.stateRoot)).get("runner-secret"));
}

/**
 * Whether local mode sandboxes each user (runners/sandbox.ts). Without bubblewrap, one local
 * user on loopback (no keys) runs unsandboxed with a warning; users with keys are refused
 * unless the operator turned the sandbox off explicitly.
 */
function localSandbox(config: Config, log: Logger): { bwrap: string } | undefined {
  if (config.localSandbox === "off") {
    if (config.gatewayKeys.length || config.userKeys.size) log.warn("LOCAL_SANDBOX=off: users are NOT isolated from each other, the sidecar or the host");
    return undefined;
  }
  const problem = sandboxProblem(config.bwrapBinary);
  if (!problem) return { bwrap: config.bwrapBinary };
  const multiUser = config.gatewayKeys.length > 0 || config.userKeys.size > 0;
  if (config.localSandbox === "on" || multiUser) {
    throw new ConfigError("LOCAL_SANDBOX", `${problem}; local mode with keys needs the sandbox (or set LOCAL_SANDBOX=off to run users unisolated, or use RUNNER_MODE=docker)`);
  }
  log.warn({ reason: problem }, "local mode runs without a sandbox (one local user, loopback only)");
  return undefined;
}

/**
 * Per-user limits in local mode (RUNNER_MEMORY, RUNNER_CPUS, RUNNER_PIDS) through cgroups.
 * Where the sidecar may not create cgroups (not root, no delegated subtree) users run
 * without limits, with a warning: a fork bomb or a memory hog then reaches the host.
 */
function localLimits(config: Config, log: Logger): { limiter: CgroupLimiter; perUser: ProcessLimits } | undefined {
  const found = detectCgroupLimiter();
  if ("problem" in found) {
    log.warn({ reason: found.problem }, "local mode runs without per-user memory/process limits (cgroups unavailable)");
    return undefined;
  }
  const perUser = config.runnerLimits;
  log.info({ cgroup: `v${found.version}`, ...perUser }, "per-user limits in local mode");
  return { limiter: found, perUser };
}

export function dockerClient(host?: string): Docker {
  if (!host) return new Docker({ socketPath: "/var/run/docker.sock" });
  const u = new URL(host);
  if (u.protocol === "unix:") return new Docker({ socketPath: u.pathname });
  return new Docker({ host: u.hostname, port: Number(u.port) || 2375, protocol: u.protocol === "https:" ? "https" : "http" });
}

/** The binary that `opencode-ai` ships in its per-platform optional dependency. */
export function bundledOpencodeBinary(): string {
  const require = createRequire(import.meta.url);
  const arch = process.arch === "x64" ? "x64" : process.arch;
  const candidates = [`opencode-${process.platform}-${arch}`, `opencode-${process.platform}-${arch}-baseline`, `opencode-${process.platform}-${arch}-musl`];
  for (const pkg of candidates) {
    try {
      return path.join(path.dirname(require.resolve(`${pkg}/package.json`)), "bin", "opencode");
    } catch {
      /* try the next build */
    }
  }
  throw new Error(`No opencode binary for ${process.platform}-${arch}: is opencode-ai installed? (or set OPENCODE_BIN)`);
}
