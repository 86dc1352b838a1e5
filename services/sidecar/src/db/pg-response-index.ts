/** Response id → chat in PostgreSQL: a follow-up naming `previous_response_id` may reach any replica. */
import type { ResponseChats, ResponseRecord } from "../responses/response-index.js";
import type { Database } from "./database.js";
import { storedKey } from "./pg-chat-state.js";

export class PgResponseIndex implements ResponseChats {
  constructor(private readonly db: Database) {}

  async get(userHash: string, responseId: string): Promise<ResponseRecord | undefined> {
    const res = await this.db.query<{ chat_key: string; created_at: Date }>("SELECT chat_key, created_at FROM response_chats WHERE user_hash = $1 AND response_id = $2", [userHash, responseId]);
    const row = res.rows[0];
    return row && { chatKey: row.chat_key, createdAt: row.created_at.toISOString() };
  }

  async put(userHash: string, responseId: string, record: ResponseRecord): Promise<void> {
    await this.db.query(
      "INSERT INTO response_chats (user_hash, response_id, chat_key, created_at) VALUES ($1, $2, $3, $4) ON CONFLICT (user_hash, response_id) DO UPDATE SET chat_key = EXCLUDED.chat_key",
      // The chat key as the session map stores it: the same chat whichever way it is named next.
      [userHash, responseId, storedKey(record.chatKey), record.createdAt],
    );
  }
}
