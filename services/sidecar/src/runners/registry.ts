/** Chooses the runner backend from the configuration. */
import { randomBytes } from "node:crypto";
import fs from "node:fs";
import { createRequire } from "node:module";
import path from "node:path";
import Docker from "dockerode";
import type { Config } from "../config/config.js";
import type { Logger } from "../log/logger.js";
import { DockerRunner } from "./docker-runner.js";
import { LocalRunner } from "./local-runner.js";
import type { Runner } from "./runner.js";
import { SharedRunner } from "./shared-runner.js";

export function createRunner(config: Config, log: Logger): Runner {
  switch (config.runnerMode) {
    case "local":
      return new LocalRunner({
        binary: config.opencodeBinary ?? bundledOpencodeBinary(),
        dataDir: path.join(config.stateRoot, "opencode"),
        runnerEnv: config.runnerEnv,
        startTimeoutMs: config.runnerStartTimeoutMs,
        log,
        maxRssBytes: config.localMaxRssBytes,
        recycleCheckMs: config.localRecycleCheckMs,
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
      return new DockerRunner({
        docker: dockerClient(d.host),
        image: d.image,
        network: d.network,
        workspaceHostRoot: d.workspaceHostRoot,
        user: d.user,
        memoryBytes: d.memoryBytes,
        nanoCpus: d.nanoCpus,
        pidsLimit: d.pidsLimit,
        idleTimeoutMs: d.idleTimeoutMs,
        secret: d.secret ?? persistentSecret(path.join(config.stateRoot, "runner-secret")),
        runnerEnv: config.runnerEnv,
        startTimeoutMs: config.runnerStartTimeoutMs,
        log,
      });
    }
  }
}

export function dockerClient(host?: string): Docker {
  if (!host) return new Docker({ socketPath: "/var/run/docker.sock" });
  const u = new URL(host);
  if (u.protocol === "unix:") return new Docker({ socketPath: u.pathname });
  return new Docker({ host: u.hostname, port: Number(u.port) || 2375, protocol: u.protocol === "https:" ? "https" : "http" });
}

/** A secret generated once and kept under STATE_ROOT, so restarts derive the same passwords. */
function persistentSecret(file: string): string {
  try {
    return fs.readFileSync(file, "utf8").trim();
  } catch {
    fs.mkdirSync(path.dirname(file), { recursive: true });
    const secret = randomBytes(32).toString("base64url");
    fs.writeFileSync(file, secret, { mode: 0o600, flag: "wx" });
    return secret;
  }
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
