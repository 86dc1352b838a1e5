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

/** One entry of a directory listing (`GET /file`). */
export interface FileNode {
  name: string;
  /** Workspace-relative; a directory's ends in `/`. */
  path: string;
  absolute: string;
  type: "file" | "directory";
  ignored: boolean;
}

export type FetchFn = typeof fetch;

export class OpencodeClient {
  private readonly authHeader?: string;

  constructor(
    readonly baseUrl: string,
    auth?: BasicAuth,
    readonly fetchFn: FetchFn = fetch,
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

  /**
   * A directory's entries (`GET /file`): files and directories only (opencode lists neither
   * symlinks nor FIFOs). undefined: refused — not a directory, gone, or outside the workspace
   * (`../`, a symlink out): opencode answers those 500 `UnknownError`, like any defect of its
   * own, so a 500 is "not admitted", never an error. Its `ignored` flag is not used: it
   * reads only the project root's `.gitignore`, and outside a git repository the project
   * root is `/` (measured on 1.18: always false in a plain directory).
   */
  async listFiles(directory: string, rel: string): Promise<FileNode[] | undefined> {
    const url = this.url("/file");
    url.searchParams.set("path", rel);
    url.searchParams.set("directory", directory);
    const res = await this.send("GET", url);
    const text = await res.text();
    if (res.status === 500) return undefined;
    this.check(res, "GET", "/file", text);
    const nodes = (res.headers.get("content-type") ?? "").includes("json") ? (JSON.parse(text) as unknown) : undefined;
    if (!Array.isArray(nodes)) throw withCause(new RunnerError("The agent runner answered a listing with no list", "runner_bad_response"), { body: text.slice(0, 300) });
    return nodes as FileNode[];
  }

  /**
   * A file's exact bytes (`GET /api/fs/read/{path}`, opencode ≥ 1.18's v2 file route). Not
   * `/file/content`: that one trims every text file (`content.trim()`: a page's last newline
   * is lost) and fails with 500 on text that is not UTF-8 (measured on 1.18). Refused with a
   * 500 (not `ok`): gone, not a regular file, or resolving outside the workspace (opencode
   * resolves symlinks and checks the real path against the directory's). A file over
   * `maxBytes` is refused without reading it past the cap.
   */
  async readFile(directory: string, rel: string, maxBytes: number): Promise<{ ok: true; bytes: Buffer } | { ok: false; reason: string }> {
    // Never a dot segment: the URL parser folds `..` (even `%2e%2e`) before opencode sees it,
    // and a route left that way answers 200 with the web UI's HTML. The path goes as one
    // percent-encoded segment (opencode decodes `%2F`, and refuses what resolves outside).
    if (!rel || rel.split("/").some((p) => p === "" || p === "." || p === "..")) return { ok: false, reason: "not a workspace-relative path" };
    const route = `/api/fs/read/${encodeURIComponent(rel)}`;
    const url = this.url(route);
    url.searchParams.set("location[directory]", directory);
    const controller = new AbortController();
    const res = await this.send("GET", url, undefined, AbortSignal.any([controller.signal, AbortSignal.timeout(30_000)]));
    try {
      if (res.status === 500) return { ok: false, reason: "refused by the runner (gone, not a regular file, or outside the workspace)" };
      if (!res.ok) this.check(res, "GET", route, await res.text());
      // An opencode without the route answers 200 with its web UI's page, which alone carries
      // a CSP (the file route does not): never taken for the file's bytes.
      if (res.headers.has("content-security-policy")) throw withCause(new RunnerError("The agent runner has no raw file route", "runner_bad_response"), { path: route });
      const tooBig = { ok: false, reason: `larger than ${maxBytes} bytes` } as const;
      if (Number(res.headers.get("content-length") ?? 0) > maxBytes) return tooBig;
      const chunks: Buffer[] = [];
      let size = 0;
      for await (const chunk of res.body ?? []) {
        size += chunk.length;
        if (size > maxBytes) return tooBig;
        chunks.push(Buffer.from(chunk));
      }
      return { ok: true, bytes: Buffer.concat(chunks, size) };
    } finally {
      // Whatever was not read is not wanted (a file over the cap).
      controller.abort();
    }
  }

  /** Sends one request: unreachable or timed out → RunnerUnavailableError (503). */
  private async send(method: string, url: URL, body?: unknown, signal?: AbortSignal): Promise<Response> {
    try {
      return await this.fetchFn(url, {
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
        path: url.pathname,
        error: `${(e as Error).name}: ${(e as Error).message}`,
        reason: ((e as Error).cause as Error | undefined)?.message,
      });
    }
  }

  /** A failed answer → RunnerError (502); the route and the answer (it may hold a stack trace) are for the log only. */
  private check(res: Response, method: string, path: string, text: string): void {
    const detail = { method, path, status: res.status, body: text.slice(0, 300) };
    if (res.status === 401) throw withCause(new RunnerError("The agent runner rejected the sidecar's credentials", "runner_auth"), detail);
    if (!res.ok) throw withCause(new RunnerError(`The agent runner answered HTTP ${res.status}`, "runner_bad_status"), detail);
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
    const res = await this.send(method, url, body, signal);
    const type = res.headers.get("content-type") ?? "";
    const text = await res.text();
    if (res.status === 404 && sessionId && text.includes("NotFoundError")) throw new SessionNotFoundError(sessionId);
    this.check(res, method, path, text);
    const detail = { method, path, status: res.status, body: text.slice(0, 300) };
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
