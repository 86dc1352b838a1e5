/**
 * How a turn's artifacts are shown, per client: the link itself, a markdown list for any
 * client that renders text, and for Open WebUI its `embeds` event (pages in a sandboxed
 * frame) with images inline in the text. Every URL is the sidecar's signed
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

/** Open WebUI's event for what it renders in a frame under the message (see openwebui-contract.md). */
export type OpenWebUIArtifactEvent = { type: "embeds"; data: { embeds: string[] } };

/**
 * The link a page is embedded by: `embed=1` adds a script that tells Open WebUI's frame the
 * page's height (a cross-origin frame cannot be measured from outside: without it, every
 * page shows in a 150 px box). The plain link serves the exact bytes.
 */
export function embedUrl(base: string, a: Artifact): string {
  return `${artifactUrl(base, a)}?embed=1`;
}

/**
 * For Open WebUI 0.12 (checked in a browser): pages as `embeds` (URLs: the frame loads our
 * link, which carries its own CSP sandbox, so it never runs in Open WebUI's origin whatever
 * the user's iframe settings); images and SVGs as markdown images in the text — Open WebUI
 * replaces an http(s) image of a `files` event with its logo, but shows markdown images, and
 * an SVG shown as an image runs no script and takes its own size; PDFs (a browser will not
 * show a PDF in a sandboxed frame) and the count of those not shown as links.
 */
export function openWebUIArtifacts(set: TurnArtifacts, base: string): { events: OpenWebUIArtifactEvent[]; text: string } {
  const pages = set.items.filter((a) => a.kind === "html");
  const events: OpenWebUIArtifactEvent[] = pages.length ? [{ type: "embeds", data: { embeds: pages.map((a) => embedUrl(base, a)) } }] : [];
  const images = set.items
    .filter((a) => a.kind === "image" || a.kind === "svg")
    .map((a) => `\n\n![${escapeMarkdown(a.path)}](${artifactUrl(base, a)})`)
    .join("");
  const { text: links } = linksMarkdown(
    set.items.filter((a) => a.kind === "pdf"),
    set.more,
    base,
  );
  return { events, text: images + links };
}
