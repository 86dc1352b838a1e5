/**
 * opencode's event stream, typed as one discriminated union (observed on opencode 1.18.33;
 * see shared/reference/opencode-server.md). Only the events the sidecar acts on are
 * modelled; everything else becomes `{type:"other"}` so that switches stay exhaustive.
 */

export interface TokenUsage {
  input: number;
  output: number;
  reasoning: number;
  cache: { read: number; write: number };
}

export interface ToolState {
  status: "pending" | "running" | "completed" | "error";
  input?: Record<string, unknown>;
  output?: string;
  title?: string;
  error?: string;
  metadata?: Record<string, unknown>;
}

export type Part =
  | { type: "text"; id: string; messageID: string; sessionID: string; text: string; synthetic?: boolean }
  | { type: "reasoning"; id: string; messageID: string; sessionID: string; text: string }
  | { type: "tool"; id: string; messageID: string; sessionID: string; tool: string; callID: string; state: ToolState }
  | { type: "step-start"; id: string; messageID: string; sessionID: string }
  | { type: "step-finish"; id: string; messageID: string; sessionID: string; reason?: string; tokens?: TokenUsage }
  | { type: "file" | "patch" | "snapshot" | "agent" | "subtask" | "retry" | "compaction"; id: string; messageID: string; sessionID: string };

export interface ErrorInfo {
  name: string;
  data?: { message?: string; statusCode?: number; isRetryable?: boolean; [k: string]: unknown };
}

export interface MessageInfo {
  id: string;
  sessionID: string;
  role: "user" | "assistant";
  parentID?: string;
  finish?: string;
  error?: ErrorInfo;
  tokens?: TokenUsage;
  time?: { created: number; completed?: number };
  /** Assistant messages: the model that answered. */
  providerID?: string;
  modelID?: string;
}

export type OpencodeEvent =
  | { type: "server.connected" }
  | { type: "server.heartbeat" }
  | { type: "session.status"; sessionID: string; status: { type: "busy" | "idle" | "retry"; attempt?: number; message?: string; next?: number } }
  | { type: "session.idle"; sessionID: string }
  | { type: "session.error"; sessionID?: string; error?: ErrorInfo }
  | { type: "message.updated"; sessionID: string; info: MessageInfo }
  | { type: "message.part.updated"; sessionID: string; part: Part }
  | { type: "message.part.delta"; sessionID: string; messageID: string; partID: string; field: string; delta: string }
  | { type: "permission.asked"; sessionID: string; id: string; permission?: string }
  | { type: "question.asked"; sessionID: string; id: string }
  | { type: "file.edited"; file: string }
  | { type: "file.watcher.updated"; file: string; event: "add" | "change" | "unlink" }
  | { type: "other"; name: string }
  /**
   * Synthesized by the sidecar: the event stream to the runner broke. `final` when the hub
   * was closed (runner gone); otherwise it is reconnecting and a turn may catch up.
   */
  | { type: "stream.lost"; reason: string; final: boolean };

type Raw = { type?: unknown; properties?: Record<string, unknown> };

/**
 * Normalizes one decoded `data:` payload. `/global/event` wraps events as
 * `{directory, payload:{type, properties}}`; `/event` sends them bare. Returns the event and
 * the directory it belongs to when known.
 */
export function parseEvent(json: unknown): { event: OpencodeEvent; directory?: string } {
  const outer = json as { directory?: unknown; payload?: Raw } & Raw;
  const raw: Raw = outer && typeof outer === "object" && outer.payload ? outer.payload : outer;
  const directory = typeof outer?.directory === "string" ? outer.directory : undefined;
  const type = typeof raw?.type === "string" ? raw.type : "";
  const p = (raw?.properties ?? {}) as Record<string, any>;
  const str = (v: unknown) => (typeof v === "string" ? v : "");

  let event: OpencodeEvent;
  switch (type) {
    case "server.connected":
    case "server.heartbeat":
      event = { type };
      break;
    case "session.status":
      event = { type, sessionID: str(p.sessionID), status: p.status ?? { type: "busy" } };
      break;
    case "session.idle":
      event = { type, sessionID: str(p.sessionID) };
      break;
    case "session.error":
      event = { type, sessionID: p.sessionID, error: p.error };
      break;
    case "message.updated":
      event = { type, sessionID: str(p.sessionID ?? p.info?.sessionID), info: p.info };
      break;
    case "message.part.updated":
      event = { type, sessionID: str(p.sessionID ?? p.part?.sessionID), part: p.part };
      break;
    case "message.part.delta":
      event = { type, sessionID: str(p.sessionID), messageID: str(p.messageID), partID: str(p.partID), field: str(p.field), delta: str(p.delta) };
      break;
    case "permission.asked":
    case "question.asked":
      event = { type, sessionID: str(p.sessionID), id: str(p.id), permission: p.permission };
      break;
    case "file.edited":
      event = { type, file: str(p.file) };
      break;
    case "file.watcher.updated":
      event = { type, file: str(p.file), event: p.event };
      break;
    default:
      event = { type: "other", name: type };
  }
  return { event, directory };
}

/** The session an event belongs to, if any. */
export function sessionOf(event: OpencodeEvent): string | undefined {
  return "sessionID" in event && event.sessionID ? event.sessionID : undefined;
}
