/**
 * When each user's runner was last used, by whichever replica: one replica's idle reaper must
 * never stop a runner another replica is using. Times are the database's own (`now()`), so
 * replicas' clocks never enter into it.
 */
import type { Logger } from "../log/logger.js";
import type { RunnerUse } from "../runners/runner.js";
import type { Database } from "./database.js";

export class PgRunnerUse implements RunnerUse {
  constructor(
    private readonly db: Database,
    private readonly log: Logger,
  ) {}

  touch(userHash: string): void {
    this.db
      .query("INSERT INTO runner_use (user_hash) VALUES ($1) ON CONFLICT (user_hash) DO UPDATE SET last_used_at = now()", [userHash])
      .catch((e: Error) => this.log.warn({ user: userHash, err: e.message }, "could not record a runner's use"));
  }

  async usedWithin(userHash: string, ms: number): Promise<boolean> {
    const res = await this.db.query<{ recent: boolean }>("SELECT last_used_at > now() - make_interval(secs => $2::float8 / 1000) AS recent FROM runner_use WHERE user_hash = $1", [userHash, ms]);
    return res.rows[0]?.recent ?? false;
  }
}
