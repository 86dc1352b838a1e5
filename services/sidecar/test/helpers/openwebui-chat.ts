/**
 * Drives a chat through the real Open WebUI the way its browser client (0.12) does: one
 * `POST /api/chat/completions` per message carrying the chat, parent, user-message and
 * assistant-message ids, a socket session id and the background tasks, but no `messages`
 * (the server builds the history from the saved chat). Open WebUI then calls the sidecar,
 * runs its own middleware over the stream and saves the reply into the chat, which the test
 * reads back with {@link waitForReply}. The payload's shape was taken from the browser's own
 * request (see openwebui-browser.test.ts, which sends the same message by typing it).
 */
import { randomUUID } from "node:crypto";
import type { OpenWebUIAccount, RealOpenWebUI } from "../fixtures/openwebui-real.js";

/** Any Open WebUI reached through its API: the fixture's, or one in a container. */
export type OpenWebUIApi = Pick<RealOpenWebUI, "api">;
/** A signed-in user: what the chat calls need of an account. */
export type SignedIn = Pick<OpenWebUIAccount, "token" | "name" | "email">;

export interface SentMessage {
  chatId: string;
  userMessageId: string;
  assistantMessageId: string;
}

/** A saved assistant message as Open WebUI stores it in `chat.history.messages`. */
export interface SavedReply {
  id: string;
  role: "assistant";
  content: string;
  done?: boolean;
  /** Open WebUI 0.12 keeps the sidecar's whole in-band error object as `content`. */
  error?: { content?: string | { message?: string; type?: string; code?: string | null } } | boolean | null;
  usage?: Record<string, unknown>;
  statusHistory?: Array<{ description?: string; done?: boolean }>;
  output?: Array<{ type: string; content?: Array<{ type: string; text?: string }>; [k: string]: unknown }>;
  followUps?: string[];
  [k: string]: unknown;
}

export interface ChatOptions {
  model?: string;
  /** Continue this chat (the reply to `after` becomes the new message's parent). */
  after?: SentMessage;
  backgroundTasks?: { title_generation?: boolean; tags_generation?: boolean; follow_up_generation?: boolean };
}

/** Sends one user message as the browser does; resolves once Open WebUI accepted it. */
export async function sendMessage(owui: OpenWebUIApi, who: SignedIn, content: string, opts: ChatOptions = {}): Promise<SentMessage> {
  const model = opts.model ?? "open-persona/build";
  const models = await owui.api(who.token, "GET", "/api/models");
  const modelItem = (models.body.data as Array<{ id: string }>).find((m) => m.id === model);
  if (!modelItem) throw new Error(`Open WebUI does not list ${model} for ${who.name}: ${JSON.stringify(models.body).slice(0, 300)}`);

  const userMessageId = randomUUID();
  const assistantMessageId = randomUUID();
  const parentId = opts.after?.assistantMessageId ?? null;
  const first = !opts.after;
  const res = await owui.api(who.token, "POST", "/api/chat/completions", {
    stream: true,
    model,
    params: { model_controls: {} },
    tool_ids: [],
    tool_servers: [],
    features: { voice: false, image_generation: false, code_interpreter: false, web_search: false, memory: true },
    variables: { "{{USER_NAME}}": who.name, "{{USER_EMAIL}}": who.email },
    chat_variables: {},
    model_item: modelItem,
    // The browser's socket.io id; replies are also emitted to the user's room and saved
    // to the chat whether or not that socket exists.
    session_id: `test-${randomUUID().slice(0, 8)}`,
    ...(opts.after ? { chat_id: opts.after.chatId } : {}),
    id: assistantMessageId,
    message_ids: [{ model_id: model, message_id: assistantMessageId, modelIdx: 0 }],
    parent_id: parentId,
    user_message: {
      id: userMessageId,
      parentId,
      childrenIds: [assistantMessageId],
      role: "user",
      content,
      timestamp: Math.floor(Date.now() / 1000),
      models: [model],
    },
    background_tasks: opts.backgroundTasks ?? (first ? { title_generation: true, tags_generation: true, follow_up_generation: true } : { follow_up_generation: true }),
  });
  if (res.status !== 200) throw new Error(`Open WebUI refused the message: ${res.status} ${JSON.stringify(res.body).slice(0, 500)}`);
  const chatId = (res.body.chat_id as string | undefined) ?? opts.after?.chatId;
  if (!chatId) throw new Error(`no chat id in Open WebUI's answer: ${JSON.stringify(res.body)}`);
  return { chatId, userMessageId, assistantMessageId };
}

/** Reads the chat until the assistant message is done; returns it as saved. */
export async function waitForReply(owui: OpenWebUIApi, who: SignedIn, sent: SentMessage, timeoutMs = 45_000): Promise<SavedReply> {
  const deadline = Date.now() + timeoutMs;
  let last: SavedReply | undefined;
  while (Date.now() < deadline) {
    const chat = await owui.api(who.token, "GET", `/api/v1/chats/${sent.chatId}`);
    if (chat.status === 200) {
      last = chat.body.chat?.history?.messages?.[sent.assistantMessageId] as SavedReply | undefined;
      if (last?.done) return last;
    }
    await new Promise((r) => setTimeout(r, 200));
  }
  throw new Error(`reply ${sent.assistantMessageId} not done within ${timeoutMs} ms; last seen: ${JSON.stringify(last).slice(0, 800)}`);
}

export async function chatThroughOpenWebUI(owui: OpenWebUIApi, who: SignedIn, content: string, opts: ChatOptions = {}) {
  const sent = await sendMessage(owui, who, content, opts);
  return { sent, reply: await waitForReply(owui, who, sent) };
}

/** The text of a reply's output items of one type, joined. */
function itemsText(reply: SavedReply, type: "message" | "reasoning"): string {
  return (reply.output ?? [])
    .filter((o) => o.type === type)
    .flatMap((o) => o.content ?? [])
    .map((c) => c.text ?? "")
    .join("");
}

/** The visible text of a reply's output items (what Open WebUI renders as the message). */
export const outputText = (reply: SavedReply) => itemsText(reply, "message");

/** The reasoning text of a reply's output items. */
export const reasoningText = (reply: SavedReply) => itemsText(reply, "reasoning");
