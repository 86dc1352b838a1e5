/**
 * Which files are artifacts (something to look at) and what they are served as. The name
 * proposes, the bytes decide: a `.png` must start like an image, a `.pdf` like a PDF, and
 * HTML/SVG must be text. A file whose bytes disagree with its name is not shown.
 */
import path from "node:path";
import { isPdf, looksBinary, sniffImage } from "../media/file-signatures.js";

export type ArtifactKind = "html" | "svg" | "image" | "pdf";

export interface ViewableType {
  kind: ArtifactKind;
  contentType: string;
}

const EXTENSIONS: Record<string, ArtifactKind> = {
  ".html": "html",
  ".htm": "html",
  ".svg": "svg",
  ".png": "image",
  ".jpg": "image",
  ".jpeg": "image",
  ".gif": "image",
  ".webp": "image",
  ".pdf": "pdf",
};

/** Whether a file of this name may be an artifact (no I/O). */
export function viewableByName(name: string): boolean {
  return path.extname(name).toLowerCase() in EXTENSIONS;
}

/** An SVG names its root element early (after an XML declaration, a doctype, comments). */
const SVG_ROOT = /<svg[\s/>]/i;
const SVG_SNIFF_BYTES = 64 * 1024;

/** What `bytes` are served as, when they are what the name `name` says. */
export function viewableType(name: string, bytes: Buffer): ViewableType | undefined {
  switch (EXTENSIONS[path.extname(name).toLowerCase()]) {
    case "html":
      return looksBinary(bytes) ? undefined : { kind: "html", contentType: "text/html; charset=utf-8" };
    case "svg":
      if (looksBinary(bytes) || !SVG_ROOT.test(bytes.subarray(0, SVG_SNIFF_BYTES).toString("utf8"))) return undefined;
      return { kind: "svg", contentType: "image/svg+xml" };
    case "image": {
      // Served as what the bytes show: a JPEG saved as chart.png is still shown.
      const mime = sniffImage(bytes.subarray(0, 16));
      return mime ? { kind: "image", contentType: mime } : undefined;
    }
    case "pdf":
      return isPdf(bytes) ? { kind: "pdf", contentType: "application/pdf" } : undefined;
    default:
      return undefined;
  }
}

/** Kinds a browser runs as a document (scripts and all): served in a sandbox of their own. */
export function isActive(kind: ArtifactKind): boolean {
  return kind === "html" || kind === "svg";
}
