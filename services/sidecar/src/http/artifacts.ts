/**
 * `GET /v1/artifacts/{token}/{name}`: one version of one file the agent made, for a browser
 * that has no API key (the token is the capability; artifact-token.ts). What it serves can
 * never act in another origin's name: the exact type, no sniffing, pages and SVGs in a CSP
 * sandbox (an opaque origin, so never Open WebUI's nor the sidecar's), and no Referer that
 * would carry the token to whatever the page links to.
 */
import fs from "node:fs/promises";
import type { Request, Response } from "express";
import type { ArtifactService } from "../artifacts/artifact-service.js";
import { NotFoundError } from "../errors/api-error.js";

/** How browsers reach the sidecar: PUBLIC_BASE_URL when set, else the origin the request used. */
export function linkBase(req: Request, publicBaseUrl: string | undefined): string {
  return publicBaseUrl ?? `${req.protocol}://${req.get("host") ?? "localhost"}`;
}

/** Browsers may keep a version this long (it never changes; the link may expire sooner). */
const MAX_CACHE_S = 86_400;

export function serveArtifact(artifacts: ArtifactService) {
  return async (req: Request, res: Response): Promise<void> => {
    const opened = await artifacts.open(String(req.params.token), String(req.params.name));
    if (!(await fs.stat(opened.file).catch(() => undefined))) throw new NotFoundError("This artifact is no longer stored", "artifact_not_found");
    const active = opened.contentType.startsWith("text/html") || opened.contentType === "image/svg+xml";
    res.set({
      "Content-Type": opened.contentType,
      "X-Content-Type-Options": "nosniff",
      "Referrer-Policy": "no-referrer",
      "Cache-Control": `private, max-age=${Math.min(opened.maxAgeS, MAX_CACHE_S)}, immutable`,
      "Content-Disposition": `inline; filename*=UTF-8''${encodeURIComponent(opened.name)}`,
      // Scripts may run (a page's charts), but in an origin of their own. A PDF gets no
      // sandbox: browsers refuse to show a sandboxed PDF at all.
      ...(active ? { "Content-Security-Policy": "sandbox allow-scripts" } : opened.contentType.startsWith("image/") ? { "Content-Security-Policy": "sandbox" } : {}),
    });
    await new Promise<void>((resolve, reject) => res.sendFile(opened.file, { lastModified: false, etag: false }, (e) => (e && !res.headersSent ? reject(e) : resolve())));
  };
}
