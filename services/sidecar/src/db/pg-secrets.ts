/**
 * The sidecar's own secrets (the runner secret, the artifact signing key), when the operator
 * sets none, shared by replicas that share no STATE_ROOT: the first replica to ask creates
 * one, every replica reads that one.
 */
import { randomBytes } from "node:crypto";
import type { SecretSource } from "../config/persistent-secret.js";
import type { Database } from "./database.js";

export class PgSecrets implements SecretSource {
  constructor(private readonly db: Database) {}

  async get(name: string): Promise<string> {
    const res = await this.db.query<{ value: string }>(
      `WITH made AS (
         INSERT INTO shared_secrets (name, value) VALUES ($1, $2) ON CONFLICT (name) DO NOTHING RETURNING value
       )
       SELECT value FROM made UNION ALL SELECT value FROM shared_secrets WHERE name = $1`,
      [name, randomBytes(32).toString("base64url")],
    );
    if (res.rows[0]) return res.rows[0].value;
    // Another replica made it at that very moment: its row is visible to the next statement.
    const made = await this.db.query<{ value: string }>("SELECT value FROM shared_secrets WHERE name = $1", [name]);
    return made.rows[0]!.value;
  }
}
