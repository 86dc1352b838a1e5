/**
 * The composition root: builds every part from the configuration and wires them together.
 * `main.ts` runs it; tests build the very same thing around a captured logger.
 */
import type { Express } from "express";
import { createApp } from "./app.js";
import { Authenticator } from "./auth/identity.js";
import { ChatService } from "./chat/chat-service.js";
import { TurnRegistry } from "./chat/turn-registry.js";
import type { Config } from "./config/config.js";
import type { Logger } from "./log/logger.js";
import { checkModel, modelSetup } from "./runners/model-check.js";
import { createRunner } from "./runners/registry.js";
import type { Runner } from "./runners/runner.js";
import { SessionStore } from "./sessions/session-store.js";
import { OpenWebUIClient } from "./sync/openwebui-client.js";
import { SyncFilter } from "./sync/sync-filter.js";
import { SyncService } from "./sync/sync-service.js";
import { FileSyncStore } from "./sync/file-sync-store.js";
import { PgSyncStore } from "./db/pg-sync-store.js";
import { TurnEvents } from "./chat/turn-events.js";
import { ResponseIndex } from "./responses/response-index.js";
import { BackgroundRuns } from "./responses/background-runs.js";
import { FileResponseStore } from "./responses/response-store.js";
import { PgPresence } from "./db/pg-presence.js";
import { PgResponseStore } from "./db/pg-response-store.js";
import { userSpace } from "./workspace/user-space.js";
import { diskWorkspaces } from "./workspace/disk-workspace-files.js";
import { runnerWorkspaces } from "./workspace/runner-workspace-files.js";
import { ArtifactService } from "./artifacts/artifact-service.js";
import { FileArtifactStore } from "./artifacts/artifact-store.js";
import { FileSecrets } from "./config/persistent-secret.js";
import { PgArtifactStore } from "./db/pg-artifact-store.js";
import { PgSecrets } from "./db/pg-secrets.js";
import { Database } from "./db/database.js";
import { PgChatSessions, PgTurnLocks, PgUserSlots } from "./db/pg-chat-state.js";
import { PgResponseIndex } from "./db/pg-response-index.js";
import { PgRunnerUse } from "./db/pg-runner-use.js";
import { FileChatSessions } from "./sessions/chat-sessions.js";

/** How long a turn's end may look for artifacts (a huge workspace must not hold the answer). */
const ARTIFACT_COLLECT_TIMEOUT_MS = 10_000;

export interface Sidecar {
  app: Express;
  auth: Authenticator;
  runner: Runner;
  sync?: SyncService;
  /** Starts the runner and resumes background sync (the HTTP server is the caller's). */
  start(): Promise<void>;
  /**
   * Refuses new turns, lets running ones finish for up to `graceMs`, then stops the rest with
   * an error their clients see. Resolves with how many had to be stopped.
   */
  drain(graceMs: number): Promise<number>;
  stop(): Promise<void>;
}

export function buildSidecar(config: Config, log: Logger): Sidecar {
  const db = config.database ? new Database({ ...config.database, log: log.child({ component: "db" }) }) : undefined;
  // Secrets the sidecar makes itself: one STATE_ROOT's, or, with replicas, the database's.
  const secrets = db ? new PgSecrets(db) : new FileSecrets(config.stateRoot);
  const runner = createRunner(config, log, db && { userLocks: new PgTurnLocks(db, log.child({ component: "db" }), "runner"), use: new PgRunnerUse(db, log.child({ component: "db" })), secrets });
  // Where the sync and the artifacts read workspaces: WORKSPACE_READS, `auto` the runner mode's own choice.
  const reads = config.workspaceReads === "auto" ? runner.workspaceReads : config.workspaceReads;
  const workspaces = reads === "runner" ? runnerWorkspaces(runner) : diskWorkspaces;
  log.info({ workspaceReads: reads }, "where workspaces are read (WORKSPACE_READS)");
  const sync = config.sync
    ? new SyncService({
        client: new OpenWebUIClient({ baseUrl: config.sync.openwebuiUrl, apiKey: config.sync.apiKey }),
        filter: new SyncFilter({ maxBytes: config.sync.maxBytes, allowHtml: config.sync.allowHtml }),
        workspaceRoot: config.workspaceRoot,
        stateRoot: config.stateRoot,
        // Replicas share the outbox, manifest and KB id (each change sent once); else files.
        store: db ? new PgSyncStore(db, log.child({ component: "sync" })) : new FileSyncStore({ stateRoot: config.stateRoot, log: log.child({ component: "sync" }) }),
        workspaces,
        kbPrefix: config.sync.kbPrefix,
        debounceMs: config.sync.debounceMs,
        maxDelayMs: Math.max(5000, config.sync.debounceMs * 4),
        maxBackoffMs: config.sync.maxBackoffMs,
        log: log.child({ component: "sync" }),
      })
    : undefined;
  const events = new TurnEvents();
  sync?.subscribe(events);
  const artifacts = config.artifacts
    ? new ArtifactService({
        // The workspace rules of the sync (secrets, ignored paths…), whatever its own settings.
        filter: new SyncFilter({ maxBytes: config.artifacts.maxBytes, allowHtml: true }),
        workspaces,
        store: db ? new PgArtifactStore(db) : new FileArtifactStore(config.stateRoot),
        signingKey: async () => config.artifacts!.signingKey ?? (await secrets.get("artifact-key")),
        maxBytes: config.artifacts.maxBytes,
        maxPerTurn: config.artifacts.maxPerTurn,
        ttlS: config.artifacts.urlTtlS,
        collectTimeoutMs: ARTIFACT_COLLECT_TIMEOUT_MS,
        log: log.child({ component: "artifacts" }),
      })
    : undefined;
  const chat = new ChatService({
    runner,
    ...(db
      ? {
          store: new PgChatSessions(db),
          turnLocks: new PgTurnLocks(db, log.child({ component: "db" })),
          slots: new PgUserSlots(db, config.maxConcurrentRunsPerUser, log.child({ component: "db" })),
        }
      : { store: new FileChatSessions(new SessionStore({ log: log.child({ component: "sessions" }) })) }),
    workspaceRoot: config.workspaceRoot,
    stateRoot: config.stateRoot,
    maxConcurrentRunsPerUser: config.maxConcurrentRunsPerUser,
    limits: { ...config.turn, modelConfigured: !!config.opencodeModel },
    events,
    artifacts,
  });
  const turns = new TurnRegistry();
  const stateDirOf = (hash: string) => userSpace(config.workspaceRoot, config.stateRoot, hash).stateDir;
  const responses = db ? new PgResponseIndex(db) : new ResponseIndex(stateDirOf);
  const presence = db && new PgPresence(db, log.child({ component: "db" }));
  const background = new BackgroundRuns(presence ? new PgResponseStore(db!, presence, log.child({ component: "responses" })) : new FileResponseStore(stateDirOf));
  const auth = new Authenticator({ gatewayKeys: config.gatewayKeys, userKeys: config.userKeys, jwtSecret: config.openwebuiJwtSecret, jwtMaxAgeS: config.openwebuiJwtMaxAgeS });
  const app = createApp({ auth, chat, turns, runner, sync, log, maxBodyBytes: config.maxBodyBytes, keepAliveMs: config.keepAliveMs, maxImagesPerRequest: config.maxImagesPerRequest, responses, background, artifacts, publicBaseUrl: config.publicBaseUrl });
  return {
    app,
    auth,
    runner,
    sync,
    start: async () => {
      void checkModel(modelSetup(config.runnerEnv), log.child({ component: "model" }));
      // Before anything is served: the schema replicas share, migrated once whoever starts first.
      await db?.waitReachable(config.database!.connectWithinMs);
      await db?.migrate();
      await presence?.start();
      await runner.start();
      artifacts?.start();
      // Not awaited: reconciliation talks to Open WebUI, which may be down; it retries.
      void sync?.start().catch((e) => log.error({ err: (e as Error).message }, "sync could not start"));
    },
    drain: (graceMs) => turns.drain(graceMs),
    stop: async () => {
      artifacts?.stop();
      sync?.stop();
      await sync?.flush();
      await runner.stop();
      await presence?.stop();
      await db?.close();
    },
  };
}
