/**
 * The contract of the turn core's shared state (sessions/chat-sessions.ts), run against every
 * backend: files and in-process locks, and PostgreSQL. `make` builds one "replica" of the
 * backend over the same underlying store; the suite builds two where replicas matter.
 */
import { describe, expect, it } from "vitest";
import type { ChatSessions, TurnLocks, UserSlots } from "../../src/sessions/chat-sessions.js";
import { userSpace, type UserSpace } from "../../src/workspace/user-space.js";

export interface ChatStateReplica {
  sessions: ChatSessions;
  locks: TurnLocks;
  slots: UserSlots;
}

export interface ChatStateBackend {
  /** A replica of the backend (same store as every other one made); `cap` is the per-user slot count. */
  replica(cap: number): Promise<ChatStateReplica>;
  /** Whether replicas made here share state (files and in-process locks do not). */
  shared: boolean;
  stateRoot: string;
}

const sleep = (ms: number) => new Promise((r) => setTimeout(r, ms));
let n = 0;

export function describeChatState(name: string, backend: () => ChatStateBackend): void {
  describe(`chat state: ${name}`, () => {
    const space = (): UserSpace => userSpace("/unused", backend().stateRoot, `${(n++).toString(16).padStart(4, "0")}${"0".repeat(12)}`);

    it("creates exactly one session per chat however many requests race, on however many replicas", async () => {
      const b = backend();
      const replicas = await Promise.all([b.replica(4), b.replica(4)]);
      const sessionsToUse = b.shared ? replicas : [replicas[0]!, replicas[0]!];
      const s = space();
      let created = 0;
      const create = async () => {
        created++;
        await sleep(50);
        return `ses_${created}`;
      };
      const results = await Promise.all(Array.from({ length: 8 }, (_, i) => sessionsToUse[i % 2]!.sessions.getOrCreate(s, "chat-1", create)));
      expect(created).toBe(1);
      expect(new Set(results.map((r) => r.sessionId))).toEqual(new Set(["ses_1"]));
      expect(results.filter((r) => r.created)).toHaveLength(1);
      await Promise.all(results.map((r) => r.saved));
      // Another chat, and a chat key that is an Object.prototype name, are chats of their own.
      expect((await replicas[0]!.sessions.getOrCreate(s, "__proto__", async () => "ses_proto")).sessionId).toBe("ses_proto");
      expect((await sessionsToUse[1]!.sessions.getOrCreate(s, "__proto__", async () => "never")).sessionId).toBe("ses_proto");
      expect((await replicas[0]!.sessions.getOrCreate(space(), "chat-1", async () => "ses_other_user")).sessionId).toBe("ses_other_user");
      // A key with a NUL in it (a JSON body can carry one) is a chat like any other.
      expect((await replicas[0]!.sessions.getOrCreate(s, "a\u0000b", async () => "ses_nul")).sessionId).toBe("ses_nul");
      expect((await sessionsToUse[1]!.sessions.getOrCreate(s, "a\u0000b", async () => "never")).sessionId).toBe("ses_nul");
      expect((await replicas[0]!.sessions.getOrCreate(s, "a", async () => "ses_a")).sessionId).toBe("ses_a");
    });

    it("replaces a lost session once, and hands the replacement to a request that comes late", async () => {
      const b = backend();
      const [r] = await Promise.all([b.replica(4)]);
      const s = space();
      const { sessionId: stale, saved } = await r!.sessions.getOrCreate(s, "chat", async () => "ses_old");
      await saved;
      let made = 0;
      const fresh = await r!.sessions.replace(s, "chat", stale, async () => `ses_new_${++made}`);
      expect(fresh).toBe("ses_new_1");
      // A second request that also saw the stale id gets the replacement, not a third session.
      expect(await r!.sessions.replace(s, "chat", stale, async () => `ses_new_${++made}`)).toBe("ses_new_1");
      expect((await r!.sessions.getOrCreate(s, "chat", async () => "never")).sessionId).toBe("ses_new_1");
    });

    it("lets one turn at a time hold a session's lock, across replicas", async () => {
      const b = backend();
      const replicas = await Promise.all([b.replica(4), b.replica(4)]);
      const [a, other] = b.shared ? replicas : [replicas[0]!, replicas[0]!];
      const unlock = await a!.locks.acquire("ses_lock");
      let second = false;
      const waiting = other!.locks.acquire("ses_lock").then((u) => {
        second = true;
        return u;
      });
      await sleep(300);
      expect(second).toBe(false);
      // Other sessions are not held up.
      await (await other!.locks.acquire("ses_other"))();
      await unlock();
      await (await waiting)();
      expect(second).toBe(true);
    });

    it("holds a session's lock taken within a slot (as a turn takes it) apart from the slot's own release", async () => {
      const b = backend();
      const replicas = await Promise.all([b.replica(2), b.replica(2)]);
      const [a, other] = b.shared ? replicas : [replicas[0]!, replicas[0]!];
      const user = space().hash;
      const slot = (await a!.slots.tryAcquire(user))!;
      const unlock = await a!.locks.acquire("ses_within", slot);
      let second = false;
      const otherSlot = (await other!.slots.tryAcquire(user))!;
      const waiting = other!.locks.acquire("ses_within", otherSlot).then((u) => {
        second = true;
        return u;
      });
      await sleep(300);
      expect(second).toBe(false);
      // The lock is let go while the slot is kept: the other turn gets it, and the slot is still taken.
      await unlock();
      await (await waiting)();
      expect(second).toBe(true);
      expect(await a!.slots.tryAcquire(user)).toBeUndefined();
      await slot();
      await otherSlot();
      const freed = await a!.slots.tryAcquire(user);
      expect(freed).toBeTypeOf("function");
      await freed!();
    });

    it("caps a user's concurrent turns across replicas, and frees a slot on release", async () => {
      const b = backend();
      const replicas = await Promise.all([b.replica(2), b.replica(2)]);
      const [a, other] = b.shared ? replicas : [replicas[0]!, replicas[0]!];
      const user = space().hash;
      const first = await a!.slots.tryAcquire(user);
      const second = await other!.slots.tryAcquire(user);
      expect(first).toBeTypeOf("function");
      expect(second).toBeTypeOf("function");
      expect(await a!.slots.tryAcquire(user)).toBeUndefined();
      expect(await other!.slots.tryAcquire(user)).toBeUndefined();
      // Another user is not affected.
      const elsewhere = await a!.slots.tryAcquire(space().hash);
      expect(elsewhere).toBeTypeOf("function");
      await elsewhere!();
      await first!();
      await first!(); // idempotent: one release frees one slot
      const again = await other!.slots.tryAcquire(user);
      expect(again).toBeTypeOf("function");
      expect(await a!.slots.tryAcquire(user)).toBeUndefined();
      await again!();
      await second!();
    });
  });
}
