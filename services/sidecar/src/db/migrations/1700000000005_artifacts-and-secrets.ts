/**
 * Artifact versions (any replica serves any link) and the sidecar's generated secrets (the
 * same runner passwords and artifact signing key on every replica).
 */
import type { MigrationBuilder } from "node-pg-migrate";

export async function up(pgm: MigrationBuilder): Promise<void> {
  pgm.createTable("artifact_blobs", {
    user_hash: { type: "text", notNull: true },
    sha256: { type: "text", notNull: true },
    bytes: { type: "bytea", notNull: true },
    handed_out_at: { type: "timestamptz", notNull: true, default: pgm.func("now()") },
  });
  pgm.addConstraint("artifact_blobs", "artifact_blobs_pkey", { primaryKey: ["user_hash", "sha256"] });
  pgm.createIndex("artifact_blobs", "handed_out_at");
  pgm.createTable("shared_secrets", {
    name: { type: "text", primaryKey: true },
    value: { type: "text", notNull: true },
  });
}

export async function down(pgm: MigrationBuilder): Promise<void> {
  pgm.dropTable("shared_secrets");
  pgm.dropTable("artifact_blobs");
}
