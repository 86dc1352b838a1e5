/**
 * The contract of a runner backend (runners/runner.ts), run against every backend for real:
 * local processes, a shared `opencode serve`, docker containers, swarm services
 * (test/e2e/runner-contract.test.ts). What a backend is made of — how its runners are
 * counted, killed, adopted — is the backend's own business: it comes in through
 * {@link RunnerBackend}, in the backend's own terms (the engine's listings, the process table).
 *
 * The cases share the backend's runners where a case allows (a start costs seconds), so they
 * run in order: a user made by one case is reused, and ensured again, by the next.
 * A case is skipped for a backend only where the interface says it does not apply; the case
 * name says so.
 */
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import type { Runner, RunnerEndpoint, RunnerState } from "../../src/runners/runner.js";
import type { UserSpace } from "../../src/workspace/user-space.js";
import { say } from "../fixtures/scripted-model.js";

/** A user's runners as the backend counts them: objects that exist (stopped ones too), and running ones. */
export interface RunnerCount {
  exist: number;
  running: number;
}

/** One way to end a user's runner from under the sidecar. */
export interface RunnerKill {
  how: string;
  act(space: UserSpace): Promise<void>;
  /** What state() reads afterwards (waited for). */
  reads: RunnerState;
  /**
   * Brought back from outside while ensure() waits (a shared server's operator restarts it):
   * ensure() cannot start what the sidecar does not own.
   */
  revive?(): Promise<void>;
}

export interface RunnerBackend {
  /**
   * A new instance of the backend, started, over the same engine, roots and secret as every
   * other one made: a second instance is a restarted sidecar. The suite stops each one.
   */
  make(): Promise<Runner>;
  /** A user of this run nobody has used yet. */
  newUser(name: string): UserSpace;
  /** The user's runners: processes, containers or services (shared: the one server). */
  count(space: UserSpace): Promise<RunnerCount>;
  /** A runner per user (false for shared: one server for everyone, its isolation its own). */
  perUser: boolean;
  /** An idle policy exists (false for shared: the server is not the sidecar's to stop). */
  idlePolicy: boolean;
  /**
   * The runner objects outlive an idle stop and the sidecar's stop(): stopped containers and
   * services at zero replicas are kept, running ones are left running (docker, swarm).
   * Processes (local) end with them.
   */
  keepsRunners: boolean;
  kills: RunnerKill[];
}

/** An idle timeout far in the past of `stopIdle(now)`: every runner not in use is idle. */
const FAR_FUTURE_MS = 24 * 3_600_000;
/** One start on a loaded 2-core machine (a service create, a first container, a sandboxed opencode). */
const START_MS = 120_000;

const sleep = (ms: number) => new Promise((r) => setTimeout(r, ms));

async function waitState(runner: Runner, space: UserSpace, want: RunnerState, timeoutMs = 60_000): Promise<void> {
  const deadline = Date.now() + timeoutMs;
  let last: RunnerState | undefined;
  while (Date.now() < deadline) {
    last = await runner.state(space);
    if (last === want) return;
    await sleep(100);
  }
  throw new Error(`state of ${space.hash}: wanted ${want}, still ${last} after ${timeoutMs} ms`);
}

/** The sessions the runner lists in the endpoint's directory (GET /session). */
async function sessionIds(ep: RunnerEndpoint): Promise<string[]> {
  const url = ep.client.url("/session");
  url.searchParams.set("directory", ep.directory);
  const res = await ep.client.fetchFn(url, { headers: ep.client.headers(), signal: AbortSignal.timeout(10_000) });
  expect(res.status).toBe(200);
  return ((await res.json()) as Array<{ id: string }>).map((s) => s.id);
}

/**
 * One turn through the endpoint alone: the prompt started, its end seen on the endpoint's
 * event stream, the reply read back from the session's messages.
 */
async function turn(ep: RunnerEndpoint, sessionId: string, reply: string): Promise<string> {
  let off = () => {};
  const idle = new Promise<void>((resolve) => {
    off = ep.events.subscribe(sessionId, (e) => {
      if (e.type === "session.idle" || (e.type === "session.status" && e.status.type === "idle")) resolve();
    });
  });
  try {
    await ep.client.promptAsync(sessionId, ep.directory, { parts: [{ type: "text", text: say.text(reply) }] });
    let timer: NodeJS.Timeout | undefined;
    await Promise.race([idle, new Promise((_, reject) => (timer = setTimeout(() => reject(new Error("no session.idle within 60 s")), 60_000)))]).finally(() =>
      clearTimeout(timer),
    );
  } finally {
    off();
  }
  const messages = await ep.client.messages(sessionId, ep.directory);
  const last = messages.filter((m) => m.info.role === "assistant").at(-1);
  return (last?.parts ?? []).flatMap((p) => (p.type === "text" ? [p.text] : [])).join("");
}

/** A request to `to`'s runner with `from`'s credentials: its HTTP status. */
async function statusWith(from: RunnerEndpoint, to: RunnerEndpoint): Promise<number> {
  const url = to.client.url("/session");
  url.searchParams.set("directory", to.directory);
  const res = await to.client.fetchFn(url, { headers: from.client.headers(), signal: AbortSignal.timeout(10_000) });
  await res.body?.cancel();
  return res.status;
}

function expectSameEndpoint(actual: RunnerEndpoint | undefined, ep: RunnerEndpoint): void {
  expect(actual, "current() must return the ready endpoint").toBeDefined();
  // Shared mode builds a fresh object per call around the one client and event hub.
  expect(actual!.client).toBe(ep.client);
  expect(actual!.events).toBe(ep.events);
  expect(actual!.directory).toBe(ep.directory);
}

export function describeRunnerContract(name: string, backend: () => RunnerBackend): void {
  describe(`runner contract: ${name}`, () => {
    let runner: Runner;
    const made: Runner[] = [];
    let a: UserSpace;
    /** The user of the concurrent-start case, reused as the second user of the two-user case. */
    let second: UserSpace | undefined;
    /** A session of user a, made by the first case, looked for after every stop and kill. */
    let kept: string | undefined;
    let n = 0;
    const b = () => backend();

    const make = async () => {
      const r = await b().make();
      made.push(r);
      return r;
    };
    /** User a's ready endpoint with a session listed in it (made here when an earlier case failed). */
    const readyA = async () => {
      const ep = await runner.ensure(a);
      if (!kept) kept = (await ep.client.createSession(ep.directory, "contract: kept")).id;
      return ep;
    };
    const fresh = (what: string) => b().newUser(`${what}${n++}`);

    beforeAll(async () => {
      runner = await make();
      a = fresh("a");
    }, START_MS);
    afterAll(async () => {
      for (const r of made) await r.stop();
    }, START_MS);

    it(
      "a fresh user is absent; ensure() gives a ready endpoint whose client answers health, takes a session in its directory and runs a turn; current() is that endpoint",
      async () => {
        // Shared: the state is the one server's, whoever asks.
        if (b().perUser) expect(await runner.state(a)).toBe("absent");
        expect(runner.current(a)).toBeUndefined();
        const ep = await runner.ensure(a);
        expect((await ep.client.health(10_000)).healthy).toBe(true);
        expect(ep.events.isOpen).toBe(true);
        expect(await runner.state(a)).toBe("ready");
        expectSameEndpoint(runner.current(a), ep);
        const session = await ep.client.createSession(ep.directory, "contract: kept");
        kept = session.id;
        expect(await sessionIds(ep)).toContain(session.id);
        expect(await turn(ep, session.id, "first turn")).toBe("first turn");
        expect((await runner.health()).ready).toBe(true);
      },
      START_MS,
    );

    it(
      "concurrent ensure() calls for a new user share one start (starting while they wait), one runner in the backend's own count",
      async () => {
        const u = (second = fresh("b"));
        const calls = Array.from({ length: 6 }, () => runner.ensure(u));
        let settled = false;
        const all = Promise.all(calls).finally(() => (settled = true));
        const seen = new Set<RunnerState>();
        while (!settled) {
          seen.add(await runner.state(u));
          await sleep(25);
        }
        const eps = await all;
        for (const ep of eps) expect(ep.client).toBe(eps[0]!.client);
        if (b().perUser) expect([...seen], "state() while the start runs").toContain("starting");
        expect(await runner.state(u)).toBe("ready");
        expect(await b().count(u)).toEqual({ exist: 1, running: 1 });
        // Asked again, it is the same runner.
        expect((await runner.ensure(u)).client).toBe(eps[0]!.client);
        expect(await b().count(u)).toEqual({ exist: 1, running: 1 });
      },
      START_MS,
    );

    it.skipIf(!b().perUser)(
      "two users get two runners, and neither runner answers the other user's credentials [not shared: one server for everyone]",
      async () => {
        const u = (second ??= fresh("b"));
        const [epA, epU] = await Promise.all([readyA(), runner.ensure(u)]);
        expect(epU.client).not.toBe(epA.client);
        expect(await b().count(a)).toEqual({ exist: 1, running: 1 });
        expect(await b().count(u)).toEqual({ exist: 1, running: 1 });
        // Each answers its own user…
        expect(await statusWith(epA, epA)).toBe(200);
        expect(await statusWith(epU, epU)).toBe(200);
        // …and turns the other user away.
        expect(await statusWith(epA, epU)).toBe(401);
        expect(await statusWith(epU, epA)).toBe(401);
        // Each user's sessions are their own.
        const mine = await epU.client.createSession(epU.directory, "contract: other user");
        expect(await sessionIds(epU)).toContain(mine.id);
        expect(await sessionIds(epA)).not.toContain(mine.id);
        expect(await sessionIds(epU)).not.toContain(kept);
      },
      START_MS,
    );

    it.skipIf(!b().idlePolicy)(
      "use() holds off the idle policy; once released the runner is idle-stopped, current() is undefined, and the next ensure() comes back with the user's session [not shared: no idle stop]",
      async () => {
        await readyA();
        const release = runner.use(a);
        let released = false;
        try {
          expect(await runner.stopIdle(Date.now() + FAR_FUTURE_MS)).not.toContain(a.hash);
          expect(await runner.state(a)).toBe("ready");
          expect(runner.current(a)).toBeDefined();
          expect((await b().count(a)).running).toBe(1);
          release();
          released = true;
          // Released twice: no effect (a use is counted once).
          release();
          expect(await runner.stopIdle(Date.now() + FAR_FUTURE_MS)).toContain(a.hash);
        } finally {
          if (!released) release();
        }
        expect(await runner.state(a)).toBe("idle-stopped");
        expect(runner.current(a)).toBeUndefined();
        expect(await b().count(a)).toEqual({ exist: b().keepsRunners ? 1 : 0, running: 0 });
        // Nothing to stop any more, and state() wakes nothing.
        expect(await runner.stopIdle(Date.now() + FAR_FUTURE_MS)).not.toContain(a.hash);
        expect(await runner.state(a)).toBe("idle-stopped");
        expect((await b().count(a)).running).toBe(0);

        const ep = await runner.ensure(a);
        expect(await runner.state(a)).toBe("ready");
        expectSameEndpoint(runner.current(a), ep);
        expect(await sessionIds(ep)).toContain(kept);
        expect(await turn(ep, kept!, "after the idle stop")).toBe("after the idle stop");
        expect(await b().count(a)).toEqual({ exist: 1, running: 1 });
      },
      2 * START_MS,
    );

    for (const kill of b().kills) {
      it(
        `a runner ended from under the sidecar (${kill.how}) reads ${kill.reads}, and the next ensure() brings it back with the user's data`,
        async () => {
          const before = await readyA();
          expect(await sessionIds(before)).toContain(kept);
          await kill.act(a);
          await waitState(runner, a, kill.reads);
          let ep: RunnerEndpoint;
          if (kill.revive) {
            const waiting = runner.ensure(a);
            waiting.catch(() => {}); // awaited below
            await waitState(runner, a, "starting", 10_000);
            await kill.revive();
            ep = await waiting;
          } else {
            ep = await runner.ensure(a);
          }
          expect(await runner.state(a)).toBe("ready");
          expectSameEndpoint(runner.current(a), ep);
          expect((await ep.client.health(10_000)).healthy).toBe(true);
          expect(await sessionIds(ep)).toContain(kept);
          expect(await turn(ep, kept!, `after ${kill.how}`)).toBe(`after ${kill.how}`);
          expect(await b().count(a)).toEqual({ exist: 1, running: 1 });
        },
        2 * START_MS,
      );
    }

    it(
      `stop() leaves the users' data${b().keepsRunners ? " and their running runners" : ""} in place, and a new instance ${b().keepsRunners ? "adopts the runners" : "starts them again"} with the users' sessions`,
      async () => {
        await readyA();
        const old = runner;
        await old.stop();
        await old.stop(); // idempotent
        expect(await b().count(a)).toEqual(b().keepsRunners ? { exist: 1, running: 1 } : { exist: b().perUser ? 0 : 1, running: b().perUser ? 0 : 1 });

        runner = await make();
        if (b().keepsRunners) {
          // Adopted at start, without a request.
          await waitState(runner, a, "ready", START_MS);
          expect(runner.current(a)).toBeDefined();
        } else if (b().perUser) {
          // Nothing runs, but the user's runner did run: its data is there.
          expect(await runner.state(a)).not.toBe("absent");
          expect(runner.current(a)).toBeUndefined();
        }
        const ep = await runner.ensure(a);
        expect(await runner.state(a)).toBe("ready");
        expect(await sessionIds(ep)).toContain(kept);
        expect(await turn(ep, kept!, "after a restart")).toBe("after a restart");
        expect(await b().count(a)).toEqual({ exist: 1, running: 1 });
      },
      2 * START_MS,
    );
  });
}
