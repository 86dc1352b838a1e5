/**
 * The slice of Open WebUI's REST API that knowledge-base sync uses (see
 * shared/reference/openwebui-contract.md). Every error body is `{"detail": "…"}`; failures
 * become OpenWebUIError with `isRetryable` set for outages (network, 429, 5xx), so the
 * outbox knows what to try again. Checked against the real Open WebUI by the shared contract
 * suite (test/contract/openwebui-kb.contract.ts).
 */

export type AccessDialect = "grants" | "access_control";

export interface OwuiFile {
  id: string;
  filename: string;
  data?: { status?: string };
}

export interface OwuiKnowledge {
  id: string;
  name: string;
  /** The owner: always whoever created it. */
  user_id?: string;
  /** The owner as listings show it (≥0.6: id, name, role, email). */
  user?: { id: string; role?: string } | null;
}

export class OpenWebUIError extends Error {
  constructor(
    readonly status: number,
    readonly detail: string,
    readonly isRetryable: boolean,
  ) {
    super(`Open WebUI ${status || "unreachable"}: ${detail}`);
    this.name = "OpenWebUIError";
  }

  /** Quirk: adding content whose hash the KB already holds under another file id. */
  get duplicateContent(): boolean {
    return this.status === 400 && /duplicate content/i.test(this.detail);
  }

  /** Quirk: missing KBs and files on the knowledge routes are 400, not 404. */
  get notFound(): boolean {
    return this.status === 404 || (this.status === 400 && /not found|could not find|does not exist/i.test(this.detail));
  }
}

export interface OpenWebUIClientOptions {
  baseUrl: string;
  apiKey: string;
  fetchFn?: typeof fetch;
  timeoutMs?: number;
}

export class OpenWebUIClient {
  private readonly fetchFn: typeof fetch;

  constructor(private readonly opts: OpenWebUIClientOptions) {
    this.fetchFn = opts.fetchFn ?? fetch;
  }

  async version(): Promise<string> {
    const v = (await this.call("GET", "/api/version")) as { version?: string };
    return v.version ?? "0.0.0";
  }

  /**
   * Finds a KB by exact name that an admin owns, walking every page (both paging shapes).
   * The owner matters: an admin's listing holds every user's KBs, and a user allowed to
   * create KBs could name one after someone else's to receive their files. Only admins can
   * create the KBs this sync makes (and API keys cannot ask who they belong to), so a KB
   * owned by an admin is ours. A listing that names no owner (older releases) is trusted.
   */
  async findKnowledge(name: string): Promise<OwuiKnowledge | undefined> {
    for (let page = 1; page <= 1000; page++) {
      const body = (await this.call("GET", `/api/v1/knowledge/?page=${page}`)) as OwuiKnowledge[] | { items: OwuiKnowledge[]; total: number };
      const items = Array.isArray(body) ? body : body.items;
      const hit = items.find((k) => k.name === name && (!k.user || k.user.role === "admin"));
      if (hit) return hit;
      // Before 0.6.42 the listing is one bare list; after, stop at the last page.
      if (Array.isArray(body) || items.length === 0 || page * items.length >= body.total) return undefined;
    }
    return undefined;
  }

  /** Creates a KB readable by `userId` only. The owner is always the caller (the admin). */
  async createKnowledge(name: string, description: string, userId: string, dialect: AccessDialect): Promise<OwuiKnowledge> {
    const access =
      dialect === "grants"
        ? { access_grants: [{ principal_type: "user", principal_id: userId, permission: "read" }] }
        : // ≤0.7: `null` would mean public, so always send the explicit lists.
          { access_control: { read: { group_ids: [], user_ids: [userId] }, write: { group_ids: [], user_ids: [] } } };
    return (await this.call("POST", "/api/v1/knowledge/create", { name, description, ...access })) as OwuiKnowledge;
  }

  /** Uploads and processes a file synchronously (so it can be added to a KB right away). */
  async upload(filename: string, content: Buffer, metadata: Record<string, unknown>): Promise<OwuiFile> {
    const form = new FormData();
    form.append("file", new Blob([new Uint8Array(content)]), filename);
    form.append("metadata", JSON.stringify(metadata));
    return (await this.call("POST", "/api/v1/files/?process=true&process_in_background=false", form)) as OwuiFile;
  }

  async processStatus(fileId: string): Promise<string> {
    const s = (await this.call("GET", `/api/v1/files/${encodeURIComponent(fileId)}/process/status`)) as { status?: string };
    return s.status ?? "completed";
  }

  async addToKnowledge(kbId: string, fileId: string): Promise<void> {
    await this.call("POST", `/api/v1/knowledge/${encodeURIComponent(kbId)}/file/add`, { file_id: fileId });
  }

  /** Removes a file from a KB and deletes it. */
  async removeFromKnowledge(kbId: string, fileId: string): Promise<void> {
    await this.call("POST", `/api/v1/knowledge/${encodeURIComponent(kbId)}/file/remove?delete_file=true`, { file_id: fileId });
  }

  async deleteFile(fileId: string): Promise<void> {
    await this.call("DELETE", `/api/v1/files/${encodeURIComponent(fileId)}`);
  }

  private async call(method: string, path: string, body?: unknown): Promise<unknown> {
    const headers: Record<string, string> = { authorization: `Bearer ${this.opts.apiKey}`, accept: "application/json" };
    let payload: FormData | string | undefined;
    if (body instanceof FormData) payload = body;
    else if (body !== undefined) {
      headers["content-type"] = "application/json";
      payload = JSON.stringify(body);
    }
    let res: Response;
    try {
      // Joined, not resolved: Open WebUI may live under a path prefix.
      res = await this.fetchFn(this.opts.baseUrl.replace(/\/+$/, "") + path, {
        method,
        headers,
        body: payload,
        signal: AbortSignal.timeout(this.opts.timeoutMs ?? 60_000),
      });
    } catch (e) {
      throw new OpenWebUIError(0, (e as Error).message, true);
    }
    const text = await res.text();
    if (!res.ok) {
      let detail = text.slice(0, 500);
      try {
        const d = (JSON.parse(text) as { detail?: unknown }).detail;
        if (d !== undefined) detail = typeof d === "string" ? d : JSON.stringify(d);
      } catch {
        /* not JSON: keep the text */
      }
      const retryable = res.status === 429 || res.status >= 500;
      throw new OpenWebUIError(res.status, detail, retryable);
    }
    if (!text) return undefined;
    // Open WebUI serves its web app for unknown paths: HTML here means a wrong OPENWEBUI_URL.
    if (!(res.headers.get("content-type") ?? "").includes("json")) {
      throw new OpenWebUIError(res.status, `expected JSON from ${path}, got ${res.headers.get("content-type") ?? "no content type"} (is OPENWEBUI_URL right?)`, false);
    }
    return JSON.parse(text);
  }
}

/** Access grants arrived in 0.8.0; before, `access_control`. */
export function accessDialect(version: string): AccessDialect {
  const [major = 0, minor = 0] = version.replace(/^v/, "").split(".").map((n) => parseInt(n, 10) || 0);
  return major > 0 || minor >= 8 ? "grants" : "access_control";
}
