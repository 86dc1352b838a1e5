/** Which chat a request belongs to, from what every API shares: the client's headers. */
import { createHash } from "node:crypto";
import type { Request } from "express";
import { headerValue as header } from "./headers.js";

/**
 * Open WebUI's chat id, else the client's session id. Open WebUI's temporary chats all send
 * `local` (or `local:<socket id>`): those are keyed by their conversation instead (by the
 * caller), so that two temporary chats never share one agent session.
 */
export function headerChatKey(req: Request): string | undefined {
  const owui = header(req.headers, "x-openwebui-chat-id");
  if (owui && owui !== "local" && !owui.startsWith("local:")) return owui;
  return header(req.headers, "x-session-id");
}

/** Chat ids can be anything a client chose (some put e-mails in them): logs get a digest. */
export function chatLogId(chatKey: string): string {
  return createHash("sha256").update(chatKey).digest("hex").slice(0, 12);
}
