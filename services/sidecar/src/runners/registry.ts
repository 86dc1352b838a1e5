/** Chooses the runner backend from the configuration. */
import { createRequire } from "node:module";
import path from "node:path";
import type { Config } from "../config/config.js";
import type { Logger } from "../log/logger.js";
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
      });
    case "shared":
      return new SharedRunner({
        baseUrl: config.opencodeBaseUrl!,
        username: config.opencodeServerUsername,
        password: config.opencodeServerPassword,
        startTimeoutMs: config.runnerStartTimeoutMs,
        log,
      });
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
