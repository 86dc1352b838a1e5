/**
 * The state replicas share: the chat → opencode session map. (Locks and user slots are
 * advisory locks held by a turn's connection: nothing to store, and they die with it.)
 */
import type { MigrationBuilder } from "node-pg-migrate";

export async function up(pgm: MigrationBuilder): Promise<void> {
  pgm.createTable("chat_sessions", {
    user_hash: { type: "text", notNull: true },
    chat_key: { type: "text", notNull: true },
    session_id: { type: "text", notNull: true },
    created_at: { type: "timestamptz", notNull: true, default: pgm.func("now()") },
  });
  pgm.addConstraint("chat_sessions", "chat_sessions_pkey", { primaryKey: ["user_hash", "chat_key"] });
}

export async function down(pgm: MigrationBuilder): Promise<void> {
  pgm.dropTable("chat_sessions");
}
