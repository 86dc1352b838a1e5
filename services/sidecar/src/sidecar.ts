/**
 * The composition root: builds every part from the configuration and wires them together.
 * `main.ts` runs it; tests build the very same thing around a captured logger.
 */
import type { Express } from "express";
import { createApp } from "./app.js";
import { Authenticator } from "./auth/identity.js";
import { ChatService } from "./chat/chat-service.js";
import type { Config } from "./config/config.js";
import type { Logger } from "./log/logger.js";
import { createRunner } from "./runners/registry.js";
import type { Runner } from "./runners/runner.js";
import { SessionStore } from "./sessions/session-store.js";
import { OpenWebUIClient } from "./sync/openwebui-client.js";
import { SyncFilter } from "./sync/sync-filter.js";
import { SyncService } from "./sync/sync-service.js";

export interface Sidecar {
  app: Express;
  auth: Authenticator;
  runner: Runner;
  sync?: SyncService;
  /** Starts the runner and resumes background sync (the HTTP server is the caller's). */
  start(): Promise<void>;
  stop(): Promise<void>;
}

export function buildSidecar(config: Config, log: Logger): Sidecar {
  const runner = createRunner(config, log);
  const sync = config.sync
    ? new SyncService({
        client: new OpenWebUIClient({ baseUrl: config.sync.openwebuiUrl, apiKey: config.sync.apiKey }),
        filter: new SyncFilter({ maxBytes: config.sync.maxBytes, allowHtml: config.sync.allowHtml }),
        workspaceRoot: config.workspaceRoot,
        stateRoot: config.stateRoot,
        kbPrefix: config.sync.kbPrefix,
        debounceMs: config.sync.debounceMs,
        maxDelayMs: Math.max(5000, config.sync.debounceMs * 4),
        maxBackoffMs: config.sync.maxBackoffMs,
        log: log.child({ component: "sync" }),
      })
    : undefined;
  const chat = new ChatService({
    runner,
    store: new SessionStore(),
    workspaceRoot: config.workspaceRoot,
    stateRoot: config.stateRoot,
    maxConcurrentRunsPerUser: config.maxConcurrentRunsPerUser,
    observer: sync,
  });
  const auth = new Authenticator({ gatewayKeys: config.gatewayKeys, userKeys: config.userKeys, jwtSecret: config.openwebuiJwtSecret });
  const app = createApp({ auth, chat, runner, sync, log, maxBodyBytes: config.maxBodyBytes, keepAliveMs: config.keepAliveMs });
  return {
    app,
    auth,
    runner,
    sync,
    start: async () => {
      await runner.start();
      // Not awaited: reconciliation talks to Open WebUI, which may be down; it retries.
      void sync?.start().catch((e) => log.error({ err: (e as Error).message }, "sync could not start"));
    },
    stop: async () => {
      sync?.stop();
      await sync?.flush();
      await runner.stop();
    },
  };
}
