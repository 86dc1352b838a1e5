/**
 * How a turn's artifacts are shown, per client: the link itself, a markdown list for any
 * client that renders text, and the events Open WebUI renders under a message (`embeds` in a
 * sandboxed frame for pages and SVGs, `files` for images). Every URL is the sidecar's signed
 * link; the agent's text never becomes one. File names are the agent's: escaped wherever
 * they appear.
 */
import type { Artifact, TurnArtifacts } from "./artifact-service.js";

/** `base` is how browsers reach the sidecar (PUBLIC_BASE_URL, else the request's own origin). */
export function artifactUrl(base: string, a: Artifact): string {
  // encodeURIComponent leaves ( ) ! ' * alone: a ")" would end a markdown link early.
  const name = encodeURIComponent(a.name).replace(/[()!'*]/g, (c) => `%${c.charCodeAt(0).toString(16).toUpperCase()}`);
  return `${base}/v1/artifacts/${a.token}/${name}`;
}

/** A link in the markdown list: where its text is (Responses annotations point at it). */
export interface LinkSpan {
  url: string;
  title: string;
  start: number;
  end: number;
}

/** Markdown-significant characters, and anything that could end the line or open markup. */
function escapeMarkdown(s: string): string {
  return s.replace(/[\u0000-\u001f\u007f]/g, " ").replace(/[\\`*_{}[\]()<>#+!|~&"]/g, (c) => `\\${c}`);
}

const KIND_LABEL: Record<Artifact["kind"], string> = { html: "web page", svg: "SVG image", image: "image", pdf: "PDF" };

function moreLine(more: number): string {
  return `- …and ${more} more file${more === 1 ? "" : "s"} from this turn, not shown`;
}

/** "**Files from this turn**" and one line per link; `items` may be a subset of the turn's. */
export function linksMarkdown(items: Artifact[], more: number, base: string): { text: string; links: LinkSpan[] } {
  if (!items.length && !more) return { text: "", links: [] };
  let text = "\n\n**Files from this turn**\n";
  const links: LinkSpan[] = [];
  for (const a of items) {
    const url = artifactUrl(base, a);
    const link = `[${escapeMarkdown(a.path)}](${url})`;
    links.push({ url, title: a.path, start: text.length + 2, end: text.length + 2 + link.length });
    text += `- ${link} (${KIND_LABEL[a.kind]})\n`;
  }
  if (more) text += `${moreLine(more)}\n`;
  return { text, links };
}

/** Open WebUI's event types for what it renders itself (see openwebui-contract.md). */
export type OpenWebUIArtifactEvent =
  | { type: "embeds"; data: { embeds: string[] } }
  | { type: "files"; data: { files: Array<{ type: "image"; url: string; name: string }> } };

/**
 * For Open WebUI: pages and SVGs as `embeds` (URLs: the frame loads our link, which carries
 * its own CSP sandbox, so it never runs in Open WebUI's origin whatever the user's iframe
 * settings), images as `files`, and PDFs (a browser will not show a PDF in a sandboxed frame)
 * plus the count of those not shown as markdown lines under the answer.
 */
export function openWebUIArtifacts(set: TurnArtifacts, base: string): { events: OpenWebUIArtifactEvent[]; text: string } {
  const events: OpenWebUIArtifactEvent[] = [];
  const embeds = set.items.filter((a) => a.kind === "html" || a.kind === "svg").map((a) => artifactUrl(base, a));
  if (embeds.length) events.push({ type: "embeds", data: { embeds } });
  const images = set.items.filter((a) => a.kind === "image").map((a) => ({ type: "image" as const, url: artifactUrl(base, a), name: a.name }));
  if (images.length) events.push({ type: "files", data: { files: images } });
  const { text } = linksMarkdown(
    set.items.filter((a) => a.kind === "pdf"),
    set.more,
    base,
  );
  return { events, text };
}
