/** `GET /v1/sync/status`: the caller's own knowledge-base sync state (never anyone else's). */
import type { Request, Response } from "express";
import type { SyncService } from "../sync/sync-service.js";
import { requireIdentity } from "./middleware.js";

export function syncStatus(sync: SyncService | undefined) {
  return async (_req: Request, res: Response): Promise<void> => {
    const identity = requireIdentity(res);
    if (!sync) {
      res.json({ enabled: false, reason: "OPENWEBUI_URL and OPENWEBUI_API_KEY are not set" });
      return;
    }
    const status = await sync.status(identity);
    res.json(status.enabled ? status : { ...status, reason: "only Open WebUI users (forwarded by the gateway) have a knowledge base" });
  };
}
