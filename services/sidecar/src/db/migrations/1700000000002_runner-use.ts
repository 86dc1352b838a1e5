/** When each user's runner was last used, by any replica (docker mode's idle reaper reads it). */
import type { MigrationBuilder } from "node-pg-migrate";

export async function up(pgm: MigrationBuilder): Promise<void> {
  pgm.createTable("runner_use", {
    user_hash: { type: "text", primaryKey: true },
    last_used_at: { type: "timestamptz", notNull: true, default: pgm.func("now()") },
  });
}

export async function down(pgm: MigrationBuilder): Promise<void> {
  pgm.dropTable("runner_use");
}
