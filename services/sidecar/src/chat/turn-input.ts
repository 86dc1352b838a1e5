/**
 * What one turn asks of the agent, whatever API it came through: the wire formats (chat
 * completions' messages, responses' input items) are turned into this at the edge, and the
 * turn core (chat-service.ts) knows nothing else.
 */
import type { Identity } from "../auth/identity.js";
import type { Logger } from "../log/logger.js";
import type { PromptPart } from "../opencode/client.js";

export type AgentName = "build" | "plan";

/** One earlier message, as text: seeds a session that has to be (re)created. */
export interface PastMessage {
  role: "user" | "assistant";
  text: string;
}

/** A chat turn: runs in the chat's own agent session. */
export interface TurnInput {
  identity: Identity;
  /** The chat this turn belongs to (one agent session per chat key). */
  chatKey: string;
  agent: AgentName;
  /** The new user turn as opencode prompt parts (attachments already checked). */
  parts: PromptPart[];
  /** System text for this turn (system/developer messages, `instructions`). */
  system?: string;
  /** The conversation before this turn, when the client resent it. */
  earlier: PastMessage[];
  /** The session's title, should one be created. */
  title: string;
  log: Logger;
  /** The request's life: preparing stops as soon as it aborts (the client left, or shutdown). */
  signal: AbortSignal;
}

/** A client's background task (titles, tags…): answered by the model in a throwaway, tool-less session. */
export interface TaskInput {
  identity: Identity;
  parts: PromptPart[];
  system?: string;
  log: Logger;
  signal: AbortSignal;
}

/** A session title from the first thing the user said. */
export function titleFrom(firstUserText: string): string {
  const first = firstUserText.replace(/\s+/g, " ").trim();
  return first ? first.slice(0, 60) : "Open Persona chat";
}

/** Text that replays a conversation into a fresh session (stored without a reply). */
export function transcript(earlier: PastMessage[]): string | undefined {
  if (earlier.length === 0) return undefined;
  const lines = earlier.map((m) => `${m.role === "user" ? "User" : "Assistant"}: ${m.text}`);
  return `The conversation so far (restored after the agent's session was lost):\n\n${lines.join("\n\n")}`;
}
