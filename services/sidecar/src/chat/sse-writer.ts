/**
 * Writes a Server-Sent Events response: one `data: <json>\n\n` per chunk (or a named
 * `event:`), `: keep-alive` comments while nothing else is sent (long silent tool runs), and
 * for chat completions `data: [DONE]` at the end.
 */
import type { Response } from "express";

export class SseWriter {
  private timer?: NodeJS.Timeout;
  private closed = false;
  private lastWriteAt = 0;

  constructor(
    private readonly res: Response,
    private readonly keepAliveMs: number,
  ) {}

  open(): void {
    this.res.status(200);
    this.res.setHeader("content-type", "text/event-stream; charset=utf-8");
    this.res.setHeader("cache-control", "no-cache, no-transform");
    this.res.setHeader("connection", "keep-alive");
    // Reverse proxies (nginx) must not buffer the stream.
    this.res.setHeader("x-accel-buffering", "no");
    this.res.flushHeaders();
    this.lastWriteAt = Date.now();
    this.arm();
  }

  data(payload: unknown): void {
    this.write(`data: ${JSON.stringify(payload)}\n\n`);
  }

  /** A named event (`event: <type>`), as the Responses API streams them. */
  event(type: string, payload: unknown): void {
    this.write(`event: ${type}\ndata: ${JSON.stringify(payload)}\n\n`);
  }

  /** An error after the stream began, in the shape Open WebUI shows to the user. */
  error(message: string, code: string, type = "agent_error"): void {
    this.data({ error: { message, type, param: null, code } });
  }

  end(): void {
    if (this.closed) return;
    this.write("data: [DONE]\n\n");
    this.close();
  }

  close(): void {
    clearTimeout(this.timer);
    if (this.closed) return;
    this.closed = true;
    this.res.end();
  }

  private write(s: string): void {
    if (this.closed || this.res.writableEnded) return;
    this.res.write(s);
    // Per chunk only a timestamp: the keep-alive timer re-arms itself from it.
    this.lastWriteAt = Date.now();
  }

  private arm(delay = this.keepAliveMs): void {
    this.timer = setTimeout(() => {
      if (this.closed) return;
      const silent = Date.now() - this.lastWriteAt;
      if (silent >= this.keepAliveMs) {
        this.write(": keep-alive\n\n");
        this.arm();
      } else this.arm(this.keepAliveMs - silent);
    }, delay);
  }
}
