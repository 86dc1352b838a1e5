/**
 * One long-lived subscription to a runner's `/global/event` stream, fanned out to the turns
 * that wait on a session and to whoever watches every event (file sync).
 *
 * opencode's stream has no ids and no replay, and can go silent without closing, so a
 * missing heartbeat counts as a dead stream. When the stream breaks, every session listener
 * gets `stream.lost` and the hub reconnects; a turn then catches up through the messages API
 * (chat/agent-run.ts). After `close()` the loss is final.
 */
import { EventSourceParserStream } from "eventsource-parser/stream";
import type { Logger } from "../log/logger.js";
import type { OpencodeClient } from "./client.js";
import { parseEvent, sessionOf, type OpencodeEvent } from "./events.js";

export type EventListener = (event: OpencodeEvent, directory?: string) => void;

export interface EventHubOptions {
  /** opencode sends `server.heartbeat` every ~10 s; silence this long means the stream is dead. */
  heartbeatTimeoutMs?: number;
  reconnectDelayMs?: number;
}

export class EventHub {
  private readonly sessions = new Map<string, Set<EventListener>>();
  private readonly watchers = new Set<EventListener>();
  private controller?: AbortController;
  private closed = false;
  private open = false;
  private openWaiters: Array<(open: boolean) => void> = [];
  private readonly heartbeatTimeoutMs: number;
  private readonly reconnectDelayMs: number;

  constructor(
    private readonly client: OpencodeClient,
    private readonly log: Logger,
    opts: EventHubOptions = {},
  ) {
    this.heartbeatTimeoutMs = opts.heartbeatTimeoutMs ?? 30_000;
    this.reconnectDelayMs = opts.reconnectDelayMs ?? 500;
  }

  start(): void {
    void this.loop();
  }

  get isOpen(): boolean {
    return this.open;
  }

  /** Resolves true once the stream is connected (after `server.connected`); false on timeout or close. */
  waitOpen(timeoutMs: number): Promise<boolean> {
    if (this.open) return Promise.resolve(true);
    if (this.closed) return Promise.resolve(false);
    return new Promise((resolve) => {
      const done = (open: boolean) => {
        clearTimeout(timer);
        resolve(open);
      };
      const timer = setTimeout(() => {
        this.openWaiters = this.openWaiters.filter((w) => w !== done);
        resolve(false);
      }, timeoutMs);
      this.openWaiters.push(done);
    });
  }

  /** Listens to one session's events; returns the unsubscribe function. */
  subscribe(sessionId: string, listener: EventListener): () => void {
    let set = this.sessions.get(sessionId);
    if (!set) this.sessions.set(sessionId, (set = new Set()));
    set.add(listener);
    return () => {
      set!.delete(listener);
      if (set!.size === 0 && this.sessions.get(sessionId) === set) this.sessions.delete(sessionId);
    };
  }

  /** Listens to every event (file changes carry no session id). */
  watch(listener: EventListener): () => void {
    this.watchers.add(listener);
    return () => this.watchers.delete(listener);
  }

  close(): void {
    this.closed = true;
    this.controller?.abort();
    this.markLost("event hub closed", true);
    const waiters = this.openWaiters;
    this.openWaiters = [];
    for (const w of waiters) w(false);
  }

  /** Drops the current connection and opens a new one (also what a dead heartbeat does). */
  reconnect(): void {
    this.controller?.abort(new Error("reconnect requested"));
  }

  private async loop(): Promise<void> {
    while (!this.closed) {
      try {
        await this.connectOnce();
        if (!this.closed) this.markLost("event stream ended", false);
      } catch (e) {
        if (!this.closed) this.markLost(`event stream failed: ${(e as Error).message}`, false);
      }
      if (!this.closed) await new Promise((r) => setTimeout(r, this.reconnectDelayMs));
    }
  }

  private async connectOnce(): Promise<void> {
    const controller = (this.controller = new AbortController());
    let watchdog: NodeJS.Timeout | undefined;
    const arm = () => {
      clearTimeout(watchdog);
      watchdog = setTimeout(() => controller.abort(new Error("heartbeat timeout")), this.heartbeatTimeoutMs);
    };
    try {
      arm();
      const res = await this.client.fetchFn(this.client.url("/global/event"), {
        headers: this.client.headers({ accept: "text/event-stream" }),
        signal: controller.signal,
      });
      if (!res.ok || !res.body) throw new Error(`status ${res.status}`);
      const events = res.body.pipeThrough(new TextDecoderStream()).pipeThrough(new EventSourceParserStream());
      for await (const message of events) {
        arm();
        let json: unknown;
        try {
          json = JSON.parse(message.data);
        } catch {
          this.log.warn("unparseable opencode event dropped");
          continue;
        }
        const { event, directory } = parseEvent(json);
        if (event.type === "server.connected") this.markOpen();
        this.dispatch(event, directory);
      }
    } finally {
      clearTimeout(watchdog);
    }
  }

  private dispatch(event: OpencodeEvent, directory?: string): void {
    for (const w of this.watchers) safe(() => w(event, directory), this.log);
    const sid = sessionOf(event);
    if (!sid) return;
    const set = this.sessions.get(sid);
    if (set) for (const l of [...set]) safe(() => l(event, directory), this.log);
  }

  private markOpen(): void {
    this.open = true;
    const waiters = this.openWaiters;
    this.openWaiters = [];
    for (const w of waiters) w(true);
  }

  private markLost(reason: string, final: boolean): void {
    const wasOpen = this.open;
    this.open = false;
    if (wasOpen) this.log.warn({ reason, final }, "opencode event stream lost");
    const lost: OpencodeEvent = { type: "stream.lost", reason, final };
    for (const set of this.sessions.values()) for (const l of [...set]) safe(() => l(lost), this.log);
    for (const w of this.watchers) safe(() => w(lost), this.log);
  }
}

function safe(fn: () => void, log: Logger): void {
  try {
    fn();
  } catch (e) {
    log.error({ err: e }, "event listener threw");
  }
}
