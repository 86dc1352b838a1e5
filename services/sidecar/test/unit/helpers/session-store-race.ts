/**
 * One contender in the cross-process SessionStore race (see session-store.test.ts).
 *
 *   tsx session-store-race.ts <stateDir> <chatKey> <createLog>
 *
 * Prints "ready", waits for a line on stdin (the start signal, so that all contenders race
 * at once), then calls getOrCreate with a `create` that takes a while, appends its id to
 * <createLog>, and prints the result as JSON.
 */
import fs from "node:fs";
import { randomUUID } from "node:crypto";
import { createInterface } from "node:readline";
import { SessionStore } from "../../../src/sessions/session-store.js";

const [stateDir, chatKey, createLog] = process.argv.slice(2) as [string, string, string];
const store = new SessionStore();

const lines = createInterface({ input: process.stdin });
const go = new Promise<void>((resolve) => lines.once("line", () => resolve()));
process.stdout.write("ready\n");
await go;
lines.close();

const result = await store.getOrCreate(stateDir, chatKey, async () => {
  const id = `ses_${process.pid}_${randomUUID()}`;
  fs.appendFileSync(createLog, `${id}\n`);
  await new Promise((r) => setTimeout(r, 150));
  return id;
});
await result.saved;
process.stdout.write(`${JSON.stringify({ pid: process.pid, sessionId: result.sessionId, created: result.created })}\n`);
