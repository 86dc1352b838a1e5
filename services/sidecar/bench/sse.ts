/** Reads a Server-Sent Events body into its `data:` payloads, stamped on arrival. */
import { EventSourceParserStream } from "eventsource-parser/stream";

export interface SseMessage {
  data: string;
  /** performance.now() when the message was parsed (ms resolution is too coarse here). */
  at: number;
}

export async function* sseMessages(body: NonNullable<Response["body"]>): AsyncGenerator<SseMessage> {
  const events = body.pipeThrough(new TextDecoderStream()).pipeThrough(new EventSourceParserStream());
  for await (const m of events) yield { data: m.data, at: performance.now() };
}
