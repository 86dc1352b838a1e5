/**
 * The HTTP surface, as a route table. Everything it needs is passed in, so tests build the
 * same app around real or substitute parts.
 */
import express, { type Express } from "express";
import type { Authenticator } from "./auth/identity.js";
import type { ChatService } from "./chat/chat-service.js";
import type { TurnRegistry } from "./chat/turn-registry.js";
import { chatCompletions } from "./http/chat-completions.js";
import { cancelResponse, createResponse, retrieveResponse } from "./http/responses.js";
import { authenticate, errorHandler, notFound, requestContext } from "./http/middleware.js";
import { listModels } from "./http/models.js";
import type { Logger } from "./log/logger.js";
import type { ResponseChats } from "./responses/response-index.js";
import type { BackgroundRuns } from "./responses/background-runs.js";
import type { Runner } from "./runners/runner.js";
import type { SyncService } from "./sync/sync-service.js";
import { syncStatus } from "./http/sync-status.js";
import { serveArtifact } from "./http/artifacts.js";
import type { ArtifactService } from "./artifacts/artifact-service.js";

export interface AppDeps {
  auth: Authenticator;
  chat: ChatService;
  turns: TurnRegistry;
  runner: Runner;
  sync?: SyncService;
  log: Logger;
  maxBodyBytes: number;
  keepAliveMs: number;
  maxImagesPerRequest: number;
  responses: ResponseChats;
  background: BackgroundRuns;
  artifacts?: ArtifactService;
  publicBaseUrl?: string;
}

export function createApp(deps: AppDeps): Express {
  const app = express();
  app.disable("x-powered-by");
  app.set("etag", false);

  app.get("/healthz", (_req, res) => {
    res.json({ status: "ok" });
  });
  app.get("/readyz", async (_req, res) => {
    const h = await deps.runner.health();
    res.status(h.ready ? 200 : 503).json({ status: h.ready ? "ready" : "unavailable", runner: deps.runner.mode, detail: h.detail });
  });

  app.use(requestContext(deps.log));
  // Opened by browsers, which have no API key: the token in the path is the capability.
  if (deps.artifacts) app.get("/v1/artifacts/:token/:name", serveArtifact(deps.artifacts));
  const v1 = express.Router();
  v1.use(authenticate(deps.auth));
  v1.get("/models", listModels);
  v1.get("/sync/status", syncStatus(deps.sync));
  const json = express.json({ limit: deps.maxBodyBytes, type: () => true });
  v1.post("/chat/completions", json, chatCompletions(deps));
  v1.post("/responses", json, createResponse(deps));
  v1.get("/responses/:id", retrieveResponse(deps));
  v1.post("/responses/:id/cancel", cancelResponse(deps));
  app.use("/v1", v1);
  app.use(notFound);
  app.use(errorHandler);
  return app;
}
