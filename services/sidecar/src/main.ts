/**
 * Entry point: configuration → logger → sidecar → HTTP server, and an orderly shutdown that
 * leaves no opencode process behind.
 */
import { ConfigError, loadConfig, type Config } from "./config/config.js";
import { createLogger } from "./log/logger.js";
import { buildSidecar, type Sidecar } from "./sidecar.js";

let config: Config;
try {
  config = loadConfig();
} catch (e) {
  if (e instanceof ConfigError) {
    process.stderr.write(`open-persona: invalid configuration: ${e.message}\n`);
    process.exit(2);
  }
  throw e;
}

const log = createLogger(config.logLevel);
let sidecar: Sidecar;
try {
  sidecar = buildSidecar(config, log);
} catch (e) {
  // Some settings can only be checked against the machine (e.g. whether bubblewrap runs).
  if (e instanceof ConfigError) {
    process.stderr.write(`open-persona: invalid configuration: ${e.message}\n`);
    process.exit(2);
  }
  throw e;
}

await sidecar.start();
const server = sidecar.app.listen(config.port, config.host, () => {
  const addr = server.address();
  const port = typeof addr === "object" && addr ? addr.port : config.port;
  log.info(
    { host: config.host, port, runner: sidecar.runner.mode, auth: sidecar.auth.open ? "none (loopback only)" : "keys", sync: !!sidecar.sync },
    "open-persona sidecar listening",
  );
});
server.on("error", (e) => {
  log.fatal({ err: e.message }, "cannot listen");
  void shutdown(1);
});

let stopping = false;
/**
 * Stop accepting, let running turns finish for up to SHUTDOWN_GRACE_MS, end the rest with an
 * in-band error (never a cut mid-token), then stop the runners.
 */
async function shutdown(code: number): Promise<void> {
  if (stopping) return;
  stopping = true;
  log.info({ graceMs: config.shutdownGraceMs }, "shutting down: letting running turns finish");
  server.close();
  server.closeIdleConnections();
  const stopped = await sidecar.drain(config.shutdownGraceMs).catch((e) => {
    log.error({ err: (e as Error).message }, "could not drain running turns");
    return -1;
  });
  if (stopped) log.warn({ turns: stopped }, "stopped turns still running after the grace period");
  server.closeAllConnections();
  await sidecar.stop().catch((e) => log.error({ err: (e as Error).message }, "shutdown failed"));
  process.exit(code);
}
process.on("SIGTERM", () => void shutdown(0));
process.on("SIGINT", () => void shutdown(0));
process.on("uncaughtException", (e) => {
  log.fatal({ err: e.message, stack: e.stack }, "uncaught exception");
  void shutdown(1);
});
process.on("unhandledRejection", (e) => {
  log.error({ err: e instanceof Error ? e.message : String(e) }, "unhandled rejection");
});
