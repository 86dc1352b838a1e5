/**
 * Entry point: configuration → logger → runner → HTTP server, and an orderly shutdown that
 * leaves no opencode process behind.
 */
import { createApp } from "./app.js";
import { Authenticator } from "./auth/identity.js";
import { ChatService } from "./chat/chat-service.js";
import { ConfigError, loadConfig, type Config } from "./config/config.js";
import { createLogger } from "./log/logger.js";
import { createRunner } from "./runners/registry.js";
import { SessionStore } from "./sessions/session-store.js";

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
const runner = createRunner(config, log);
const chat = new ChatService({
  runner,
  store: new SessionStore(),
  workspaceRoot: config.workspaceRoot,
  stateRoot: config.stateRoot,
  maxConcurrentRunsPerUser: config.maxConcurrentRunsPerUser,
});
const auth = new Authenticator({ gatewayKeys: config.gatewayKeys, userKeys: config.userKeys, jwtSecret: config.openwebuiJwtSecret });
const app = createApp({ auth, chat, runner, log, maxBodyBytes: config.maxBodyBytes, keepAliveMs: config.keepAliveMs });

await runner.start();
const server = app.listen(config.port, config.host, () => {
  const addr = server.address();
  const port = typeof addr === "object" && addr ? addr.port : config.port;
  log.info({ host: config.host, port, runner: runner.mode, auth: auth.open ? "none (loopback only)" : "keys" }, "open-persona sidecar listening");
});
server.on("error", (e) => {
  log.fatal({ err: e.message }, "cannot listen");
  void shutdown(1);
});

let stopping = false;
async function shutdown(code: number): Promise<void> {
  if (stopping) return;
  stopping = true;
  log.info("shutting down");
  server.close();
  server.closeAllConnections();
  await runner.stop().catch((e) => log.error({ err: (e as Error).message }, "runner stop failed"));
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
