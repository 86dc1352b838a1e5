/**
 * `POST /v1/chat/completions`. Streams the agent's turn as SSE (`stream:true`) or answers
 * one `chat.completion` (`stream:false`). Errors before the first byte are real HTTP errors;
 * after it, an in-band `data: {"error":…}` (what Open WebUI shows).
 */
import type { Request, Response } from "express";
import type { Identity } from "../auth/identity.js";
import type { ChatService, AgentName, PreparedTurn } from "../chat/chat-service.js";
import { chatTurn, derivedChatKey, isTaskPrompt, taskTurn } from "../chat/conversation.js";
import { linksMarkdown } from "../artifacts/artifact-links.js";
import { ChunkEncoder, TOOL_STYLES, toolRunText, type ArtifactForm, type ToolStyle } from "../chat/openai-chunks.js";
import { parseChatRequest, type ChatCompletionRequest } from "../chat/request-schema.js";
import { SseWriter } from "../chat/sse-writer.js";
import type { TurnRegistry } from "../chat/turn-registry.js";
import type { TurnOutput, Usage } from "../chat/turn-translator.js";
import { ApiError, BadRequestError, NotFoundError, RunnerError, turnError } from "../errors/api-error.js";
import type { Logger } from "../log/logger.js";
import { linkBase } from "./artifacts.js";
import { chatLogId, headerChatKey } from "./chat-key.js";
import { headerValue as header } from "./headers.js";
import { requireIdentity } from "./middleware.js";
import { MODELS } from "./models.js";

export interface ChatRouteDeps {
  chat: ChatService;
  /** PUBLIC_BASE_URL: how browsers reach the sidecar's artifact links. */
  publicBaseUrl?: string;
  turns: TurnRegistry;
  keepAliveMs: number;
  /** Images one request may forward to the agent (MAX_IMAGES_PER_REQUEST). */
  maxImagesPerRequest: number;
}

/** The chat a request belongs to: its headers' (chat-key.ts), else derived from the conversation. */
function chatKeyOf(req: Request, identity: Identity, body: ChatCompletionRequest): string {
  return headerChatKey(req) ?? derivedChatKey(identity.userHash, body.messages);
}

/** Open WebUI names itself by its gateway key or by the X-OpenWebUI-* headers it forwards. */
function fromOpenWebUI(req: Request, identity: Identity): boolean {
  return identity.via === "gateway" || Object.keys(req.headers).some((h) => h.startsWith("x-openwebui-"));
}

/**
 * How tool runs show in the answer: `X-Persona-Tool-Output` chooses; by default Open WebUI
 * gets its tool cards, every other client a readable markdown line.
 */
function toolStyleOf(req: Request, identity: Identity): ToolStyle {
  const asked = header(req.headers, "x-persona-tool-output")?.trim().toLowerCase();
  if (asked === undefined || asked === "") return fromOpenWebUI(req, identity) ? "details" : "markdown";
  if (!(TOOL_STYLES as readonly string[]).includes(asked)) {
    throw new BadRequestError(`X-Persona-Tool-Output must be one of ${TOOL_STYLES.join(", ")}`, "invalid_tool_output", "X-Persona-Tool-Output");
  }
  return asked as ToolStyle;
}

export function chatCompletions(deps: ChatRouteDeps) {
  return async (req: Request, res: Response): Promise<void> => {
    const identity = requireIdentity(res);
    const log = res.locals.log as Logger;
    const body = parseChatRequest(req.body);
    const model = MODELS.find((m) => m.id === body.model);
    if (!model) throw new NotFoundError(`The model '${body.model}' does not exist`, "model_not_found", "model");

    const isTask = !!header(req.headers, "x-openwebui-task") || isTaskPrompt(body.messages, !!body.stream);
    const tools = toolStyleOf(req, identity);
    const chatKey = chatKeyOf(req, identity, body);
    const turnLog = log.child({ chat: chatLogId(chatKey), task: isTask || undefined });
    res.locals.log = turnLog;

    // From here the request is a turn: the client leaving (even while a runner cold-starts)
    // or a shutdown ends it.
    const tracked = deps.turns.begin();
    res.on("close", () => {
      if (!res.writableFinished) tracked.clientGone();
      tracked.end();
    });
    const { signal } = tracked;
    try {
      // The wire format ends here. Converted before anything runs: a bad attachment is a 400.
      const limits = { maxImages: deps.maxImagesPerRequest };
      const turn = isTask
        ? await deps.chat.prepareTask({ identity, ...taskTurn(body.messages, limits), log: turnLog, signal })
        : await deps.chat.prepare({ identity, chatKey, agent: model.agent as AgentName, ...chatTurn(body.messages, limits), log: turnLog, signal });
      turnLog.info({ sessionId: turn.sessionId, stream: !!body.stream, agent: model.agent }, "turn started");
      // Status events are Open WebUI's; other clients skip chunks without choices.
      const statusEvents = identity.via !== "user-key";
      const artifacts: ArtifactForm = { style: fromOpenWebUI(req, identity) ? "openwebui" : "markdown", base: linkBase(req, deps.publicBaseUrl) };
      if (body.stream) await streamTurn(turn, body, res, signal, deps.keepAliveMs, turnLog, { openWebUI: statusEvents, tools, artifacts });
      else await answerTurn(turn, body, res, signal, tools, artifacts.base);
    } finally {
      // Over as far as the sidecar goes (the response may still be flushing to the client).
      tracked.end();
    }
  };
}

async function streamTurn(
  turn: PreparedTurn,
  body: ChatCompletionRequest,
  res: Response,
  signal: AbortSignal,
  keepAliveMs: number,
  log: Logger,
  form: { openWebUI: boolean; tools: ToolStyle; artifacts: ArtifactForm },
): Promise<void> {
  const encoder = new ChunkEncoder(body.model, { includeUsage: !!body.stream_options?.include_usage, ...form });
  const sse = new SseWriter(res, keepAliveMs);
  sse.open();
  let chunks = 0;
  try {
    for await (const out of turn.run(signal)) {
      for (const chunk of encoder.encode(out)) {
        sse.data(chunk);
        chunks++;
      }
      if (out.kind === "error") {
        log.warn({ code: out.code, error: out.message }, "agent run failed");
        const err = turnError(out);
        sse.error(err.message, err.code ?? out.code, err.type);
      }
    }
  } catch (e) {
    log.error({ err: (e as Error).message }, "turn failed after streaming began");
    // Only the sidecar's own errors speak to the client; anything else is logged above.
    const err = e instanceof ApiError ? e : new RunnerError("The agent run failed", "runner_error");
    sse.error(err.message, err.code ?? "runner_error", err.type);
  }
  sse.end();
  log.info({ chunks, aborted: signal.aborted }, "turn streamed");
}

async function answerTurn(turn: PreparedTurn, body: ChatCompletionRequest, res: Response, signal: AbortSignal, tools: ToolStyle, linksBase: string): Promise<void> {
  let text = "";
  let reasoning = "";
  let finish: Extract<TurnOutput, { kind: "finish" }> | undefined;
  for await (const out of turn.run(signal)) {
    if (out.kind === "text") text += out.text;
    else if (out.kind === "tool-end") text += toolRunText(out, tools);
    else if (out.kind === "reasoning") reasoning += out.text;
    else if (out.kind === "artifacts") text += linksMarkdown(out.items, out.more, linksBase).text;
    else if (out.kind === "finish") finish = out;
    else if (out.kind === "error") throw turnError(out);
  }
  if (signal.aborted || !finish) return;
  const usage: Usage = finish.usage;
  res.json({
    id: `chatcmpl-${turn.sessionId}-${Date.now()}`,
    object: "chat.completion",
    created: Math.floor(Date.now() / 1000),
    model: body.model,
    choices: [
      {
        index: 0,
        message: { role: "assistant", content: text, ...(reasoning ? { reasoning_content: reasoning } : {}) },
        finish_reason: finish.reason,
      },
    ],
    usage,
  });
}
