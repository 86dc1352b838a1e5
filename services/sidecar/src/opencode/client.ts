/**
 * A small typed client for the opencode server routes the sidecar uses. Failures map onto
 * the API's error classes: unreachable → RunnerUnavailableError (503), a bad answer →
 * RunnerError (502), an unknown session → SessionNotFoundError (handled by the caller).
 */
import { RunnerError, RunnerUnavailableError } from "../errors/api-error.js";
import type { MessageInfo, Part } from "./events.js";

export interface BasicAuth {
  username: string;
  password: string;
}

export interface SessionInfo {
  id: string;
  directory: string;
  title?: string;
}

export type PromptPart =
  | { type: "text"; text: string }
  | { type: "file"; mime: string; url: string; filename?: string };

export interface PromptBody {
  parts: PromptPart[];
  agent?: string;
  model?: { providerID: string; modelID: string };
  /** Store the message without running the model (used to seed a recreated session). */
  noReply?: boolean;
  tools?: Record<string, boolean>;
  system?: string;
}

export interface PermissionRule {
  permission: string;
  pattern: string;
  action: "allow" | "deny" | "ask";
}

/** opencode no longer knows this session (its data was lost or the id is stale). */
export class SessionNotFoundError extends Error {
  constructor(readonly sessionId: string) {
    super(`opencode session not found: ${sessionId}`);
    this.name = "SessionNotFoundError";
  }
}

export type FetchFn = typeof fetch;

export class OpencodeClient {
  private readonly authHeader?: string;

  constructor(
    readonly baseUrl: string,
    auth?: BasicAuth,
    private readonly fetchFn: FetchFn = fetch,
  ) {
    if (auth) this.authHeader = "Basic " + Buffer.from(`${auth.username}:${auth.password}`).toString("base64");
  }

  /** A route's URL under the base URL, keeping any path prefix (a reverse proxy's). */
  url(path: string): URL {
    return new URL(this.baseUrl.replace(/\/+$/, "") + path);
  }

  /** Headers for any request to this server (also used by the event stream). */
  headers(extra: Record<string, string> = {}): Record<string, string> {
    return { ...(this.authHeader ? { authorization: this.authHeader } : {}), ...extra };
  }

  async health(timeoutMs = 2000): Promise<{ healthy: boolean; version?: string }> {
    return (await this.request("GET", "/global/health", undefined, undefined, AbortSignal.timeout(timeoutMs))) as {
      healthy: boolean;
      version?: string;
    };
  }

  async createSession(directory: string, title: string, permission?: PermissionRule[]): Promise<SessionInfo> {
    const s = (await this.request("POST", "/session", directory, { title, ...(permission ? { permission } : {}) })) as SessionInfo;
    if (!s?.id?.startsWith("ses")) throw new RunnerError("opencode returned no session id", "runner_bad_response");
    return s;
  }

  async deleteSession(sessionId: string, directory: string): Promise<void> {
    await this.request("DELETE", `/session/${encodeURIComponent(sessionId)}`, directory, undefined, undefined, sessionId);
  }

  /** Starts a run; its progress arrives only on the event stream. */
  async promptAsync(sessionId: string, directory: string, body: PromptBody): Promise<void> {
    await this.request("POST", `/session/${encodeURIComponent(sessionId)}/prompt_async`, directory, body, undefined, sessionId);
  }

  /** Runs a prompt to its end (or, with `noReply`, only stores it). */
  async prompt(sessionId: string, directory: string, body: PromptBody): Promise<void> {
    await this.request("POST", `/session/${encodeURIComponent(sessionId)}/message`, directory, body, AbortSignal.timeout(120_000), sessionId);
  }

  /** Idempotent: opencode answers `true` even when nothing runs. */
  async abort(sessionId: string, directory: string): Promise<void> {
    await this.request("POST", `/session/${encodeURIComponent(sessionId)}/abort`, directory, {}, AbortSignal.timeout(5000));
  }

  async replyPermission(requestId: string, directory: string, reply: "once" | "reject"): Promise<void> {
    await this.request("POST", `/permission/${encodeURIComponent(requestId)}/reply`, directory, { reply });
  }

  async rejectQuestion(requestId: string, directory: string): Promise<void> {
    await this.request("POST", `/question/${encodeURIComponent(requestId)}/reject`, directory, {});
  }

  /** A session's messages with their parts (how a turn catches up after a lost stream). */
  async messages(sessionId: string, directory: string): Promise<Array<{ info: MessageInfo; parts: Part[] }>> {
    return (await this.request("GET", `/session/${encodeURIComponent(sessionId)}/message`, directory, undefined, undefined, sessionId)) as Array<{
      info: MessageInfo;
      parts: Part[];
    }>;
  }

  /** Sessions that are not idle (idle ones are absent). */
  async sessionStatus(directory: string): Promise<Record<string, { type: string }>> {
    return (await this.request("GET", "/session/status", directory)) as Record<string, { type: string }>;
  }

  /** The providers opencode knows, with the URL each is called at (config `baseURL`, else its catalogue's). */
  async providers(timeoutMs = 3000): Promise<Array<{ id: string; name?: string; url?: string }>> {
    const res = (await this.request("GET", "/config/providers", undefined, undefined, AbortSignal.timeout(timeoutMs))) as {
      providers?: Array<{ id: string; name?: string; options?: { baseURL?: unknown }; models?: Record<string, { api?: { url?: unknown } }> }>;
    };
    return (res?.providers ?? []).map((p) => {
      const catalogue = Object.values(p.models ?? {}).find((m) => typeof m.api?.url === "string" && m.api.url)?.api?.url;
      const url = typeof p.options?.baseURL === "string" && p.options.baseURL ? p.options.baseURL : catalogue;
      return { id: p.id, name: p.name, url: typeof url === "string" ? url : undefined };
    });
  }

  async agents(): Promise<Array<{ name: string; mode?: string; permission?: PermissionRule[] }>> {
    return (await this.request("GET", "/agent")) as Array<{ name: string; mode?: string; permission?: PermissionRule[] }>;
  }

  private async request(
    method: string,
    path: string,
    directory?: string,
    body?: unknown,
    signal?: AbortSignal,
    sessionId?: string,
  ): Promise<unknown> {
    const url = this.url(path);
    if (directory) url.searchParams.set("directory", directory);
    let res: Response;
    try {
      res = await this.fetchFn(url, {
        method,
        headers: this.headers(body === undefined ? {} : { "content-type": "application/json" }),
        body: body === undefined ? undefined : JSON.stringify(body),
        signal: signal ?? AbortSignal.timeout(30_000),
      });
    } catch (e) {
      // The exception stays in the log (`cause`); the client learns only what happened.
      const what = (e as Error).name === "TimeoutError" ? "did not answer in time" : "is unreachable";
      throw withCause(new RunnerUnavailableError(`The agent runner ${what}`, "runner_unreachable"), {
        method,
        path,
        error: `${(e as Error).name}: ${(e as Error).message}`,
        reason: ((e as Error).cause as Error | undefined)?.message,
      });
    }
    const type = res.headers.get("content-type") ?? "";
    const text = await res.text();
    if (res.status === 404 && sessionId && text.includes("NotFoundError")) throw new SessionNotFoundError(sessionId);
    // The route and the runner's answer (it may hold a stack trace) are for the log only.
    const detail = { method, path, status: res.status, body: text.slice(0, 300) };
    if (res.status === 401) throw withCause(new RunnerError("The agent runner rejected the sidecar's credentials", "runner_auth"), detail);
    if (!res.ok) throw withCause(new RunnerError(`The agent runner answered HTTP ${res.status}`, "runner_bad_status"), detail);
    if (res.status === 204 || text === "") return undefined;
    // Unknown paths answer 200 with the web UI's HTML: treat that as a protocol mismatch.
    if (!type.includes("json")) {
      throw withCause(new RunnerError(`The agent runner answered with ${type || "no content type"} instead of JSON`, "runner_bad_response"), detail);
    }
    try {
      return JSON.parse(text);
    } catch (e) {
      throw withCause(new RunnerError("The agent runner answered with malformed JSON", "runner_bad_response"), e);
    }
  }
}

/** Attaches what lies behind an error, for the log (the error handler logs `cause`). */
function withCause<E extends Error>(err: E, cause: unknown): E {
  err.cause = cause;
  return err;
}
