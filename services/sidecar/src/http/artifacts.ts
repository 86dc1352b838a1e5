/**
 * `GET /v1/artifacts/{token}/{name}`: one version of one file the agent made, for a browser
 * that has no API key (the token is the capability; artifact-token.ts). What it serves can
 * never act in another origin's name: the exact type, no sniffing, pages and SVGs in a CSP
 * sandbox (an opaque origin, so never Open WebUI's nor the sidecar's), and no Referer that
 * would carry the token to whatever the page links to.
 */
import type { Request, Response } from "express";
import type { ArtifactService } from "../artifacts/artifact-service.js";

/** How browsers reach the sidecar: PUBLIC_BASE_URL when set, else the origin the request used. */
export function linkBase(req: Request, publicBaseUrl: string | undefined): string {
  return publicBaseUrl ?? `${req.protocol}://${req.get("host") ?? "localhost"}`;
}

/** Browsers may keep a version this long (it never changes; the link may expire sooner). */
const MAX_CACHE_S = 86_400;

/**
 * Appended to a page opened as an embed (`?embed=1`): tells the embedding frame the page's
 * height, the message Open WebUI's frames listen for (`iframe:height`). Capped, and sent only
 * on a change, so a page whose height follows the frame's (100vh) cannot grow it forever.
 */
const REPORT_HEIGHT = Buffer.from(
  `\n<script>(function(){var last=0;function post(){var d=document.documentElement,b=document.body;` +
    `var h=Math.min(2400,Math.ceil(Math.max(d.scrollHeight,b?b.scrollHeight:0)));` +
    `if(Math.abs(h-last)>1){last=h;parent.postMessage({type:"iframe:height",height:h},"*");}}` +
    `addEventListener("load",post);if(window.ResizeObserver)new ResizeObserver(post).observe(document.documentElement);post();})();</script>\n`,
);

export function serveArtifact(artifacts: ArtifactService) {
  return async (req: Request, res: Response): Promise<void> => {
    const opened = await artifacts.open(String(req.params.token), String(req.params.name));
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
    if (req.query.embed === "1" && opened.contentType.startsWith("text/html")) {
      res.send(Buffer.concat([opened.bytes, REPORT_HEIGHT]));
      return;
    }
    res.send(opened.bytes);
  };
}
