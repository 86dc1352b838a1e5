/**
 * The knowledge-base sync's state, shared by replicas: each user's record (KB id, last success
 * and error), the manifest of what was last sent, and the outbox of changes still to send
 * (`version` is bumped by every change to a path, so one arriving while it is sent is kept).
 */
import type { MigrationBuilder } from "node-pg-migrate";

export async function up(pgm: MigrationBuilder): Promise<void> {
  pgm.createTable("sync_users", {
    user_hash: { type: "text", primaryKey: true },
    user_id: { type: "text", notNull: true },
    kb_id: { type: "text" },
    last_synced: { type: "jsonb" },
    last_error: { type: "jsonb" },
  });
  const user = { type: "text", notNull: true, references: "sync_users", onDelete: "CASCADE" } as const;
  pgm.createTable("sync_manifest", {
    user_hash: user,
    path: { type: "text", notNull: true },
    // Absent when Open WebUI refused the content (a duplicate of another file): see `note`.
    file_id: { type: "text" },
    hash: { type: "text", notNull: true },
    size: { type: "bigint", notNull: true },
    mtime_ms: { type: "float8", notNull: true },
    synced_at: { type: "timestamptz", notNull: true },
    note: { type: "text" },
  });
  pgm.addConstraint("sync_manifest", "sync_manifest_pkey", { primaryKey: ["user_hash", "path"] });
  pgm.createTable("sync_outbox", {
    user_hash: user,
    path: { type: "text", notNull: true },
    op: { type: "text", notNull: true, check: "op IN ('upsert', 'delete')" },
    queued_at: { type: "timestamptz", notNull: true, default: pgm.func("now()") },
    next_at: { type: "timestamptz", notNull: true },
    attempts: { type: "integer", notNull: true, default: 0 },
    last_error: { type: "text" },
    version: { type: "bigint", notNull: true, default: 1 },
  });
  pgm.addConstraint("sync_outbox", "sync_outbox_pkey", { primaryKey: ["user_hash", "path"] });
  // Every replica polls for due work.
  pgm.createIndex("sync_outbox", "next_at");
}

export async function down(pgm: MigrationBuilder): Promise<void> {
  pgm.dropTable("sync_outbox");
  pgm.dropTable("sync_manifest");
  pgm.dropTable("sync_users");
}
