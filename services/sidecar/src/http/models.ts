/** `GET /v1/models`: the agents the sidecar offers, as OpenAI models. */
import type { Request, Response } from "express";

export interface ModelEntry {
  id: string;
  name: string;
  agent: "build" | "plan";
  description: string;
}

export const MODELS: readonly ModelEntry[] = [
  { id: "open-persona/build", name: "Open Persona (build)", agent: "build", description: "Coding agent that can edit files and run commands in your workspace" },
  { id: "open-persona/plan", name: "Open Persona (plan)", agent: "plan", description: "Read-only agent: analyses and plans, never edits or runs commands" },
];

const CREATED = Math.floor(Date.now() / 1000);

export function listModels(_req: Request, res: Response): void {
  // No `pipeline` key: it would make Open WebUI call /filter/inlet and /filter/outlet.
  res.json({
    object: "list",
    data: MODELS.map((m) => ({ id: m.id, object: "model", created: CREATED, owned_by: "open-persona", name: m.name, description: m.description })),
  });
}
