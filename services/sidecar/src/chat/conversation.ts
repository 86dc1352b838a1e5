/**
 * What the sidecar takes from a chat-completions conversation (`messages`). The agent keeps
 * its own context in its session, so only the latest user turn is sent; the rest is used to
 * derive a chat key and, when a session has to be recreated, to seed it. `chatTurn` is the
 * whole translation into the API-neutral turn input (turn-input.ts).
 */
import { createHash } from "node:crypto";
import { BadRequestError } from "../errors/api-error.js";
import { sniffImage } from "../media/file-signatures.js";
import type { PromptPart } from "../opencode/client.js";
import type { ChatMessage, ContentPart } from "./request-schema.js";
import { titleFrom, type PastMessage, type TurnInput } from "./turn-input.js";

export function textOf(m: ChatMessage | undefined): string {
  if (!m || m.content == null) return "";
  if (typeof m.content === "string") return m.content;
  return m.content
    .filter((p): p is { type: "text"; text: string } => p.type === "text" && typeof (p as { text?: unknown }).text === "string")
    .map((p) => p.text)
    .join("\n");
}

/** The trailing user messages: what is new since the assistant last spoke. */
export function latestUserTurn(messages: ChatMessage[]): ChatMessage[] {
  let i = messages.length;
  while (i > 0 && messages[i - 1]!.role !== "assistant") i--;
  return messages.slice(i).filter((m) => m.role === "user");
}

/** Everything before the latest user turn (used to seed a recreated session). */
export function history(messages: ChatMessage[]): ChatMessage[] {
  let i = messages.length;
  while (i > 0 && messages[i - 1]!.role !== "assistant") i--;
  return messages.slice(0, i).filter((m) => m.role === "user" || m.role === "assistant");
}

export function systemPrompt(messages: ChatMessage[]): string | undefined {
  const s = messages
    .filter((m) => m.role === "system" || m.role === "developer")
    .map(textOf)
    .filter(Boolean)
    .join("\n\n");
  return s || undefined;
}

const DATA_URL = /^data:([\w.+-]+\/[\w.+-]+)(;[^,]*)?,/;
const NOT_BASE64 = /[^A-Za-z0-9+/=]/;

/** How many images one request may forward to the agent when not configured (MAX_IMAGES_PER_REQUEST). */
export const DEFAULT_MAX_IMAGES = 16;

export interface PromptLimits {
  /** Images (image_url parts and image files) the forwarded turn may carry. */
  maxImages: number;
}

/**
 * Converts user messages to opencode parts: text, and attachments as file parts. Only what
 * is forwarded is checked (images must decode, and be at most `maxImages`): an earlier bad
 * image in a resent history must not make the chat fail for good.
 */
export function toPromptParts(turn: ChatMessage[], limits: PromptLimits = { maxImages: DEFAULT_MAX_IMAGES }): PromptPart[] {
  const contentParts = turn.flatMap((m) => (Array.isArray(m.content) ? (m.content as ContentPart[]) : []));
  const images = contentParts.filter(isImage).length;
  if (images > limits.maxImages) {
    throw new BadRequestError(
      `Too many images: at most ${limits.maxImages} per request, this one has ${images}`,
      "too_many_images",
      "messages",
    );
  }
  const parts: PromptPart[] = [];
  let n = 0;
  for (const m of turn) {
    if (typeof m.content === "string") {
      if (m.content) parts.push({ type: "text", text: m.content });
      continue;
    }
    for (const p of m.content ?? []) parts.push(...convertPart(p as ContentPart, ++n));
  }
  if (!parts.some((p) => p.type === "text")) parts.unshift({ type: "text", text: "(see attachment)" });
  return parts;
}

function isImage(p: ContentPart): boolean {
  if (p.type === "image_url") return true;
  const data = p.type === "file" ? (p as { file?: { file_data?: string } }).file?.file_data : undefined;
  return typeof data === "string" && /^data:image\//i.test(data);
}

function convertPart(p: ContentPart, n: number): PromptPart[] {
  if (p.type === "text") return (p as { text: string }).text ? [{ type: "text", text: (p as { text: string }).text }] : [];
  if (p.type === "image_url") {
    const url = (p as { image_url: { url: string } }).image_url.url;
    const m = DATA_URL.exec(url);
    if (m) {
      const image = checkedImage(url, m);
      return [{ type: "file", ...image, filename: `image-${n}.${image.mime.split("/")[1]}` }];
    }
    if (/^https?:\/\//.test(url)) return [{ type: "text", text: `Image: ${url}` }];
    throw new BadRequestError("image_url.url must be a data: URL or an http(s) URL", "invalid_image_url", "messages");
  }
  if (p.type === "file") {
    const f = (p as { file: { file_data?: string; filename?: string; file_id?: string } }).file;
    const m = f.file_data ? DATA_URL.exec(f.file_data) : null;
    if (!m) throw new BadRequestError("file parts must carry file_data as a data: URL", "invalid_file", "messages");
    if (m[1]!.toLowerCase().startsWith("image/")) return [{ type: "file", ...checkedImage(f.file_data!, m), filename: f.filename ?? `file-${n}` }];
    return [{ type: "file", mime: m[1]!, url: f.file_data!, filename: f.filename ?? `file-${n}` }];
  }
  throw new BadRequestError(`Unsupported content part type '${p.type}'`, "unsupported_content", "messages");
}

/**
 * An image data URL whose payload is base64 and starts like a PNG, JPEG, GIF or WebP.
 * The mime is the one the bytes show (a model provider refuses an image whose declared type
 * differs from its content).
 */
function checkedImage(url: string, m: RegExpExecArray): { mime: string; url: string } {
  const invalid = (why: string) => new BadRequestError(`Invalid image: ${why}`, "invalid_image", "messages");
  if (!/;base64$/i.test(m[2] ?? "")) throw invalid("image data URLs must be base64-encoded");
  const data = url.slice(m[0].length);
  // A search for one bad character, then the padding: an anchored /^[…]*={0,2}$/ is ~5x
  // slower on a 20 MB image.
  const pad = data.indexOf("=");
  const badPadding = pad !== -1 && data.slice(pad) !== "=" && data.slice(pad) !== "==";
  if (data.length % 4 === 1 || NOT_BASE64.test(data) || badPadding) throw invalid("the data URL is not valid base64");
  const mime = sniffImage(Buffer.from(data.slice(0, 16), "base64"));
  if (!mime) throw invalid("not a PNG, JPEG, GIF or WebP image");
  return mime === m[1]!.toLowerCase() ? { mime, url } : { mime, url: `data:${mime};base64,${data}` };
}

/**
 * The chat key when the client sent no chat id: derived from the user and the first user
 * message, so a client that resends its whole history keeps one session.
 */
export function derivedChatKey(userHash: string, messages: ChatMessage[]): string {
  const first = messages.find((m) => m.role === "user");
  const h = createHash("sha256").update(`${userHash}\0${textOf(first)}`).digest("hex").slice(0, 24);
  return `derived:${h}`;
}

/** The turn's content, from a chat-completions conversation (a bad attachment is a 400 here). */
export function chatTurn(messages: ChatMessage[], limits: PromptLimits): Pick<TurnInput, "parts" | "system" | "earlier" | "title"> {
  return {
    parts: toPromptParts(latestUserTurn(messages), limits),
    system: systemPrompt(messages),
    earlier: pastMessages(messages),
    title: titleFrom(textOf(messages.find((m) => m.role === "user"))),
  };
}

/** A background task's prompt: its last user message only. */
export function taskTurn(messages: ChatMessage[], limits: PromptLimits): { parts: PromptPart[]; system?: string } {
  const lastUser = [...messages].reverse().find((m) => m.role === "user");
  return { parts: toPromptParts(lastUser ? [lastUser] : [], limits), system: systemPrompt(messages) };
}

/** The conversation before the latest user turn, as text (tool-call blocks compacted). */
export function pastMessages(messages: ChatMessage[]): PastMessage[] {
  return history(messages).map((m) =>
    m.role === "user" ? { role: "user", text: textOf(m) } : { role: "assistant", text: compactToolBlocks(textOf(m)) },
  );
}

const TOOL_BLOCK = /<details type="tool_calls"[^>]*?\bname="([^"]*)"[^>]*?\barguments="([^"]*)"[^>]*>[\s\S]*?<\/details>/g;
const unescapeAttr = (s: string) =>
  s.replace(/&quot;/g, '"').replace(/&#x27;/g, "'").replace(/&lt;/g, "<").replace(/&gt;/g, ">").replace(/&amp;/g, "&");

/**
 * Earlier assistant messages come back from Open WebUI with our tool-call blocks in their
 * text (escaped HTML, results included): in a transcript they become one short line each.
 */
export function compactToolBlocks(text: string): string {
  return text.replace(TOOL_BLOCK, (_m, name: string, args: string) => {
    const a = unescapeAttr(args);
    return `[ran ${unescapeAttr(name)} ${a.length > 200 ? `${a.slice(0, 200)}…` : a}]`;
  });
}

/**
 * Open WebUI's background tasks (title, tags, follow-ups, search queries, autocomplete) start
 * their one prompt with `### Task:` and are never streamed. Its chat turns can start like that
 * too: the default RAG template (files attached to the message, knowledge bases) puts
 * `### Task:` and the retrieved `<context>` into the user's message — and that turn belongs
 * in the chat's session, with the agent's tools.
 */
export function isTaskPrompt(messages: ChatMessage[], stream: boolean): boolean {
  if (stream) return false;
  const lastUser = [...messages].reverse().find((m) => m.role === "user");
  const text = textOf(lastUser);
  return text.trimStart().startsWith("### Task:") && !/<context>[\s\S]*<\/context>/.test(text);
}
