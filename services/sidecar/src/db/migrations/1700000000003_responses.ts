/**
 * Stored Responses and background runs' event logs, readable from any replica. `json`, not
 * `jsonb`: agent text may hold a NUL, which jsonb refuses, and nothing queries inside them.
 * `owner` is the replica running it (db/pg-presence.ts tells whether that one is alive).
 */
import type { MigrationBuilder } from "node-pg-migrate";

export async function up(pgm: MigrationBuilder): Promise<void> {
  pgm.createTable("responses", {
    id: { type: "text", primaryKey: true },
    user_hash: { type: "text", notNull: true },
    status: { type: "text", notNull: true },
    body: { type: "json", notNull: true },
    owner: { type: "text", notNull: true },
    cancel_requested: { type: "boolean", notNull: true, default: false },
    updated_at: { type: "timestamptz", notNull: true, default: pgm.func("now()") },
  });
  pgm.createTable("response_events", {
    response_id: { type: "text", notNull: true, references: "responses", onDelete: "CASCADE" },
    seq: { type: "integer", notNull: true },
    event: { type: "json", notNull: true },
  });
  pgm.addConstraint("response_events", "response_events_pkey", { primaryKey: ["response_id", "seq"] });
}

export async function down(pgm: MigrationBuilder): Promise<void> {
  pgm.dropTable("response_events");
  pgm.dropTable("responses");
}
