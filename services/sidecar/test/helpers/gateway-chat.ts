/**
 * One streamed chat turn as Open WebUI's gateway sends it (gateway key, user and chat
 * headers), read to its end: the text, the Open WebUI events other than status lines
 * (`embeds`, `files`), and the in-band or HTTP error if any.
 */
import { randomUUID } from "node:crypto";
import { readSse } from "./harness.js";

export interface GatewayTurn {
  status: number;
  text: string;
  events: Array<{ type: string; data: Record<string, unknown> }>;
  error?: { message: string };
}

export async function gatewayChat(url: string, gatewayKey: string, userId: string, content: string, chatId: string = randomUUID()): Promise<GatewayTurn> {
  const res = await fetch(`${url}/v1/chat/completions`, {
    method: "POST",
    headers: {
      Authorization: `Bearer ${gatewayKey}`,
      "Content-Type": "application/json",
      "X-OpenWebUI-User-Id": encodeURIComponent(userId),
      "X-OpenWebUI-Chat-Id": chatId,
    },
    body: JSON.stringify({ model: "open-persona/build", stream: true, messages: [{ role: "user", content }] }),
  });
  if (res.status !== 200) return { status: res.status, text: "", events: [], error: (await res.json()).error as { message: string } };
  const payloads = (await readSse(res)).filter((e) => e.data && e.data !== "[DONE]").map((e) => JSON.parse(e.data!));
  const text = payloads.map((p) => p.choices?.[0]?.delta?.content ?? "").join("");
  const events = payloads.filter((p) => p.event && p.event.type !== "status").map((p) => p.event);
  return { status: 200, text, events, error: payloads.find((p) => p.error)?.error as { message: string } | undefined };
}
