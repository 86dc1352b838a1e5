/** Which chat each response belongs to (`previous_response_id` continues it on any replica). */
import type { MigrationBuilder } from "node-pg-migrate";

export async function up(pgm: MigrationBuilder): Promise<void> {
  pgm.createTable("response_chats", {
    user_hash: { type: "text", notNull: true },
    response_id: { type: "text", notNull: true },
    chat_key: { type: "text", notNull: true },
    created_at: { type: "timestamptz", notNull: true, default: pgm.func("now()") },
  });
  pgm.addConstraint("response_chats", "response_chats_pkey", { primaryKey: ["user_hash", "response_id"] });
}

export async function down(pgm: MigrationBuilder): Promise<void> {
  pgm.dropTable("response_chats");
}
