/** What both paths (sidecar and direct opencode) measure for one chat turn. */

export interface TurnResult {
  /** From sending the request to the first streamed text, ms. */
  ttftMs: number;
  /** From sending the request to the end of the turn ([DONE] / session.idle), ms. */
  totalMs: number;
  /** Streamed text pieces (SSE content chunks / text deltas). */
  chunks: number;
  /** Time between consecutive text pieces, ms (chunks − 1 values). */
  gapsMs: number[];
  text: string;
}

/** One conversation: the first turn creates it (a new chat), later turns continue it. */
export interface Chat {
  turn(prompt: string): Promise<TurnResult>;
}

/** No single turn in the benchmark should come anywhere near this. */
export const TURN_TIMEOUT_MS = 60_000;

/** The session title the sidecar derives from the first user message (chat-service.ts). */
export function titleFor(prompt: string): string {
  return prompt.replace(/\s+/g, " ").trim().slice(0, 60) || "Open Persona chat";
}
