/**
 * Which chat each response belongs to, per user: `previous_response_id` continues that chat's
 * agent session. One JSON file per user (`<state dir>/responses.json`), written by atomic
 * rename; a user's writes are queued in process. The newest MAX_ENTRIES are kept. A response
 * id is looked up in its caller's own file only: another user's id is simply unknown.
 */
import fs from "node:fs/promises";
import path from "node:path";

export interface ResponseRecord {
  chatKey: string;
  createdAt: string;
}

/** Response id → chat, per user: in files (one process) or PostgreSQL (replicas, db/pg-response-index.ts). */
export interface ResponseChats {
  get(userHash: string, responseId: string): Promise<ResponseRecord | undefined>;
  put(userHash: string, responseId: string, record: ResponseRecord): Promise<void>;
}

const FILE = "responses.json";
const MAX_ENTRIES = 2000;

export class ResponseIndex implements ResponseChats {
  private readonly queues = new Map<string, Promise<unknown>>();

  /** `stateDirOf`: a user hash → that user's state dir (workspace/user-space.ts). */
  constructor(private readonly stateDirOf: (userHash: string) => string) {}

  async get(userHash: string, responseId: string): Promise<ResponseRecord | undefined> {
    const map = await this.read(this.stateDirOf(userHash));
    return Object.hasOwn(map, responseId) ? map[responseId] : undefined;
  }

  put(userHash: string, responseId: string, record: ResponseRecord): Promise<void> {
    const stateDir = this.stateDirOf(userHash);
    return this.queued(stateDir, async () => {
      await fs.mkdir(stateDir, { recursive: true });
      const map = await this.read(stateDir);
      map[responseId] = record;
      const ids = Object.keys(map);
      for (const old of ids.slice(0, Math.max(0, ids.length - MAX_ENTRIES))) delete map[old];
      const file = path.join(stateDir, FILE);
      const tmp = `${file}.${process.pid}.tmp`;
      await fs.writeFile(tmp, JSON.stringify(map));
      await fs.rename(tmp, file);
    });
  }

  private async read(stateDir: string): Promise<Record<string, ResponseRecord>> {
    try {
      const parsed = JSON.parse(await fs.readFile(path.join(stateDir, FILE), "utf8")) as unknown;
      return parsed && typeof parsed === "object" ? Object.assign(Object.create(null), parsed) : Object.create(null);
    } catch {
      return Object.create(null) as Record<string, ResponseRecord>;
    }
  }

  private queued<T>(key: string, work: () => Promise<T>): Promise<T> {
    const prev = this.queues.get(key) ?? Promise.resolve();
    const next = prev.then(work, work);
    this.queues.set(key, next.catch(() => undefined));
    return next;
  }
}
