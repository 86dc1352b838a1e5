import { describe, expect, it } from "vitest";
import { TurnStop } from "../../src/chat/agent-run.js";
import { TurnRegistry } from "../../src/chat/turn-registry.js";
import { RunnerUnavailableError } from "../../src/errors/api-error.js";

describe("TurnRegistry.drain", () => {
  it("waits for running turns that end within the grace period, stopping none", async () => {
    const turns = new TurnRegistry();
    const t = turns.begin();
    setTimeout(() => t.end(), 50);
    expect(await turns.drain(5000)).toBe(0);
    expect(t.signal.aborted).toBe(false);
  });

  it("refuses new turns once draining", async () => {
    const turns = new TurnRegistry();
    void turns.drain(1000);
    expect(() => turns.begin()).toThrow(RunnerUnavailableError);
  });

  it("stops what is left after the grace period with a TurnStop the client is told", async () => {
    const turns = new TurnRegistry();
    const t = turns.begin();
    t.signal.addEventListener("abort", () => setTimeout(() => t.end(), 10));
    expect(await turns.drain(50)).toBe(1);
    expect(t.signal.reason).toBeInstanceOf(TurnStop);
    expect((t.signal.reason as TurnStop).code).toBe("shutting_down");
    expect(turns.size).toBe(0);
  });

  it("a client that leaves aborts without a reason to tell", () => {
    const turns = new TurnRegistry();
    const t = turns.begin();
    t.clientGone();
    expect(t.signal.aborted).toBe(true);
    expect(t.signal.reason).not.toBeInstanceOf(TurnStop);
    t.end();
    t.end();
    expect(turns.size).toBe(0);
  });
});
