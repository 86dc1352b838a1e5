/**
 * `POST /v1/responses` (the Responses API), over the same turn core as chat completions: same
 * identity, workspace, session map, locks, cap, deadlines and abort rules. A response belongs
 * to a chat: `previous_response_id` (the chat of that response, the caller's own only),
 * `conversation` (its id), the client's chat headers, or, as on chat completions, a key
 * derived from the conversation the client resent. Streamed as the SDKs expect
 * (responses/response-builder.ts), or answered whole. Tool runs are `mcp_call` items.
 */
import type { Request, Response } from "express";
import type { Identity } from "../auth/identity.js";
import type { ChatService, AgentName, PreparedTurn } from "../chat/chat-service.js";
import { chatTurn, derivedChatKey, isTaskPrompt, taskTurn } from "../chat/conversation.js";
import { SseWriter } from "../chat/sse-writer.js";
import type { TurnRegistry } from "../chat/turn-registry.js";
import { ApiError, BadRequestError, NotFoundError, RunnerError, turnError } from "../errors/api-error.js";
import type { Logger } from "../log/logger.js";
import { ResponseBuilder, newId } from "../responses/response-builder.js";
import { linkBase } from "./artifacts.js";
import type { ResponseChats } from "../responses/response-index.js";
import type { BackgroundRuns } from "../responses/background-runs.js";
import type { StreamEvent } from "../responses/wire.js";
import { conversationId, inputMessages, parseResponsesRequest, type ResponsesRequest } from "../responses/request.js";
import { chatLogId, headerChatKey } from "./chat-key.js";
import { headerValue as header } from "./headers.js";
import { requireIdentity } from "./middleware.js";
import { MODELS } from "./models.js";

export interface ResponsesRouteDeps {
  /** PUBLIC_BASE_URL: how browsers reach the sidecar's artifact links. */
  publicBaseUrl?: string;
  chat: ChatService;
  turns: TurnRegistry;
  responses: ResponseChats;
  background: BackgroundRuns;
  keepAliveMs: number;
  maxImagesPerRequest: number;
}

export function createResponse(deps: ResponsesRouteDeps) {
  return async (req: Request, res: Response): Promise<void> => {
    const identity = requireIdentity(res);
    const log = res.locals.log as Logger;
    const body = parseResponsesRequest(req.body);
    const model = MODELS.find((m) => m.id === body.model);
    if (!model) throw new NotFoundError(`The model '${body.model}' does not exist`, "model_not_found", "model");

    const messages = inputMessages(body.input);
    const chatKey = await chatKeyOf(req, identity, body, deps.responses);
    // Open WebUI's background tasks (titles, tags…) come this way too on its Responses
    // connection: a throwaway, tool-less session, never the chat's.
    const isTask = !body.background && (!!header(req.headers, "x-openwebui-task") || isTaskPrompt(messages, !!body.stream));
    const turnLog = log.child({ chat: chatLogId(chatKey), api: "responses", task: isTask || undefined });
    res.locals.log = turnLog;
    const limits = { maxImages: deps.maxImagesPerRequest };
    const content = chatTurn(messages, limits);
    const instructions = body.instructions ?? undefined;
    const system = [instructions, content.system].filter(Boolean).join("\n\n") || undefined;

    const background = !!body.background;
    const tracked = deps.turns.begin();
    // A background turn outlives its request; a foreground one ends when its client leaves.
    const requestGone = new AbortController();
    res.on("close", () => {
      requestGone.abort();
      if (background) return;
      if (!res.writableFinished) tracked.clientGone();
      tracked.end();
    });
    const signal = background ? tracked.signal : AbortSignal.any([tracked.signal, requestGone.signal]);
    let detached = false;
    try {
      const turn = isTask
        ? await deps.chat.prepareTask({ identity, ...taskTurn(messages, limits), system, log: turnLog, signal })
        : await deps.chat.prepare({ identity, chatKey, agent: model.agent as AgentName, ...content, system, log: turnLog, signal });
      const builder = new ResponseBuilder({
        id: newId("resp"),
        model: body.model,
        instructions,
        metadata: body.metadata ?? undefined,
        previousResponseId: body.previous_response_id ?? undefined,
        conversation: conversationId(body),
        background,
        linkBase: linkBase(req, deps.publicBaseUrl),
      });
      // Recorded before the turn runs: a follow-up may name it as soon as the client has its id.
      await deps.responses.put(identity.userHash, builder.response.id, { chatKey, createdAt: new Date().toISOString() });
      turnLog.info({ sessionId: turn.sessionId, responseId: builder.response.id, stream: !!body.stream, background, agent: model.agent }, "turn started");
      if (background) {
        await deps.background.start(identity.userHash, builder, turn, tracked, turnLog);
        detached = true;
        if (body.stream) await streamEvents(deps.background.events(identity.userHash, builder.response.id, -1, requestGone.signal), res, deps.keepAliveMs);
        else res.json(await deps.background.get(identity.userHash, builder.response.id));
        return;
      }
      if (body.stream) await streamResponse(turn, builder, res, signal, deps.keepAliveMs, turnLog);
      else await answerResponse(turn, builder, res, signal);
      if (builder.done) await deps.background.remember(identity.userHash, builder.response).catch((e: Error) => turnLog.error({ err: e.message }, "could not keep the response"));
    } finally {
      // A detached run ends its tracked turn itself.
      if (!detached) tracked.end();
    }
  };
}

/** previous_response_id, then conversation, then the client's chat headers, then derived. */
async function chatKeyOf(req: Request, identity: Identity, body: ResponsesRequest, index: ResponseChats): Promise<string> {
  if (body.previous_response_id) {
    const found = await index.get(identity.userHash, body.previous_response_id);
    // Another user's response id is as unknown as one never made.
    if (!found) throw new NotFoundError(`Previous response with id '${body.previous_response_id}' not found.`, "previous_response_not_found", "previous_response_id");
    return found.chatKey;
  }
  const conversation = conversationId(body);
  if (conversation) return `conversation:${conversation}`;
  return headerChatKey(req) ?? derivedChatKey(identity.userHash, inputMessages(body.input));
}

async function streamResponse(turn: PreparedTurn, builder: ResponseBuilder, res: Response, signal: AbortSignal, keepAliveMs: number, log: Logger): Promise<void> {
  const sse = new SseWriter(res, keepAliveMs);
  sse.open();
  const send = (events: ReturnType<ResponseBuilder["start"]>) => events.forEach((e) => sse.event(e.type, e));
  send(builder.start());
  try {
    for await (const out of turn.run(signal)) {
      if (out.kind === "error") {
        log.warn({ code: out.code, error: out.message }, "agent run failed");
        const err = turnError(out);
        send(builder.fail(err.code ?? out.code, err.message, err.type));
      } else send(builder.push(out));
    }
  } catch (e) {
    log.error({ err: (e as Error).message }, "turn failed after streaming began");
    const err = e instanceof ApiError ? e : new RunnerError("The agent run failed", "runner_error");
    send(builder.fail(err.code ?? "runner_error", err.message, err.type));
  }
  // A run that ended without a finish (the client left) leaves the response unfinished.
  if (!builder.done && !signal.aborted) send(builder.fail("runner_error", "The agent run ended without an answer"));
  sse.close();
}

async function answerResponse(turn: PreparedTurn, builder: ResponseBuilder, res: Response, signal: AbortSignal): Promise<void> {
  builder.start();
  for await (const out of turn.run(signal)) {
    if (out.kind === "error") throw turnError(out);
    builder.push(out);
  }
  if (signal.aborted || !builder.done) return;
  res.json(builder.response);
}

/** `GET /v1/responses/{id}`: the response's state; with `stream=true`, its events (after `starting_after`). */
export function retrieveResponse(deps: ResponsesRouteDeps) {
  return async (req: Request, res: Response): Promise<void> => {
    const identity = requireIdentity(res);
    const id = String(req.params.id);
    const found = await deps.background.get(identity.userHash, id);
    if (!found) throw notFound(id);
    if (req.query.stream !== "true") {
      res.json(found);
      return;
    }
    const raw = req.query.starting_after;
    const after = raw === undefined ? -1 : Number(raw);
    if (!Number.isInteger(after) || after < -1) throw new BadRequestError("starting_after must be a sequence number", "invalid_request", "starting_after");
    const gone = new AbortController();
    res.on("close", () => gone.abort());
    await streamEvents(deps.background.events(identity.userHash, id, after, gone.signal), res, deps.keepAliveMs);
  };
}

/** `POST /v1/responses/{id}/cancel`: stops a background response; answers its final state. */
export function cancelResponse(deps: ResponsesRouteDeps) {
  return async (req: Request, res: Response): Promise<void> => {
    const identity = requireIdentity(res);
    const id = String(req.params.id);
    const found = await deps.background.cancel(identity.userHash, id);
    if (!found) throw notFound(id);
    res.json(found);
  };
}

function notFound(id: string): NotFoundError {
  return new NotFoundError(`Response with id '${id}' not found.`, "response_not_found", "response_id");
}

async function streamEvents(events: AsyncGenerator<StreamEvent>, res: Response, keepAliveMs: number): Promise<void> {
  const sse = new SseWriter(res, keepAliveMs);
  sse.open();
  for await (const e of events) sse.event(e.type, e);
  sse.close();
}
