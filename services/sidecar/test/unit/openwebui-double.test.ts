/**
 * The Open WebUI contract double behaves as upstream does, so sync tests built on it test the
 * real contract. Its current dialect runs the suite shared with the real Open WebUI
 * (test/contract/openwebui-kb.contract.ts); the tests below cover what the real one cannot
 * produce on demand: older releases, slow processing, outages, disabled keys, no frontend.
 */
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import {
  ERROR_MESSAGES,
  startOpenWebUIDouble,
  type OpenWebUIDouble,
  type OpenWebUIDoubleOptions,
} from "../fixtures/openwebui-double.js";
import { describeOpenWebUIKnowledgeContract } from "../contract/openwebui-kb.contract.js";
import { httpCall, type Json } from "../helpers/http-call.js";

const KEY = "sk-test-admin-key";
const ADMIN = "admin-1";
const sleep = (ms: number) => new Promise((r) => setTimeout(r, ms));

type Body = Json;
interface Client {
  call(method: string, path: string, body?: unknown, key?: string | null): Promise<{ status: number; body: Body }>;
  upload(name: string, content: string, query?: string): Promise<Body>;
  createKb(name: string, extra?: Body): Promise<Body>;
}

function client(owui: OpenWebUIDouble): Client {
  const call: Client["call"] = async (method, path, body, key = KEY) => {
    const { status, body: parsed } = await httpCall(owui.url, key, method, path, body);
    return { status, body: parsed };
  };
  return {
    call,
    async upload(name, content, query = "process=true&process_in_background=false") {
      const form = new FormData();
      form.append("file", new Blob([content], { type: "text/markdown" }), name);
      const res = await call("POST", `/api/v1/files/?${query}`, form);
      expect(res.status).toBe(200);
      return res.body;
    },
    async createKb(name, extra = {}) {
      const res = await call("POST", "/api/v1/knowledge/create", { name, description: "", ...extra });
      expect(res.status).toBe(200);
      return res.body;
    },
  };
}

async function withDouble(opts: Partial<OpenWebUIDoubleOptions>, fn: (o: OpenWebUIDouble, c: Client) => Promise<void>) {
  const owui = await startOpenWebUIDouble({ apiKey: KEY, adminId: ADMIN, ...opts });
  try {
    await fn(owui, client(owui));
  } finally {
    await owui.close();
  }
}

const ALICE = { id: "user-alice", apiKey: "sk-test-alice" };
const BOB = { id: "user-bob", apiKey: "sk-test-bob" };

describe("Open WebUI double, current dialect (≥0.8)", () => {
  let owui: OpenWebUIDouble;
  let c: Client;
  beforeAll(async () => {
    owui = await startOpenWebUIDouble({ apiKey: KEY, adminId: ADMIN, version: "0.12.4", users: [ALICE, BOB] });
    c = client(owui);
  });
  afterAll(() => owui.close());

  // The same suite runs against the real Open WebUI in test/e2e/openwebui-contract.test.ts.
  describeOpenWebUIKnowledgeContract("the contract shared with the real Open WebUI", () => ({
    url: owui.url,
    version: "0.12.4",
    admin: { id: ADMIN, apiKey: KEY },
    alice: ALICE,
    bob: BOB,
  }));

  it("shows tests what it holds: dialect, KB contents, visibility, the request log", async () => {
    expect(owui.dialect).toBe("0.12");
    const kb = await c.createKb("held");
    const file = await c.upload("notes/plan.md", "# Plan\nship it");
    expect((await c.call("POST", `/api/v1/knowledge/${kb.id}/file/add`, { file_id: file.id })).status).toBe(200);
    expect(owui.kbContents("held")).toEqual(new Map([["plan.md", "# Plan\nship it"]]));
    expect(owui.knowledge.get(kb.id)?.public).toBe(false);
    const pub = await c.createKb("public", { access_grants: [{ principal_type: "user", principal_id: "*", permission: "read" }] });
    expect(owui.knowledge.get(pub.id)?.public).toBe(true);
    await c.call("GET", "/api/v1/knowledge/", undefined, "sk-nope");
    expect(owui.requests.at(-1)).toMatchObject({ method: "GET", path: "/api/v1/knowledge/", status: 401 });
  });

  it("answers every request with the outage status while one is set", async () => {
    owui.setOutage(503);
    expect(await c.call("GET", "/api/version")).toEqual({ status: 503, body: { detail: "Service Unavailable" } });
    expect(owui.requests.at(-1)).toMatchObject({ path: "/api/version", status: 503 });
    owui.setOutage(null);
    expect((await c.call("GET", "/api/version")).status).toBe(200);
  });
});

describe("Open WebUI double, other behaviours", () => {
  it("keeps background uploads processing; an early add fails, a later one succeeds", async () => {
    await withDouble({ processingDelayMs: 150 }, async (owui, c) => {
      const kb = await c.createKb("slow");
      const file = await c.upload("s.md", "slow text", "process=true&process_in_background=true");
      expect(file.data).toEqual({ status: "pending" }); // the row as inserted
      expect((await c.call("GET", `/api/v1/files/${file.id}/process/status`)).body.status).toBe("processing");
      const early = await c.call("POST", `/api/v1/knowledge/${kb.id}/file/add`, { file_id: file.id });
      expect(early).toEqual({ status: 400, body: { detail: `400: ${ERROR_MESSAGES.EMPTY_CONTENT}` } });
      let status = "";
      for (let i = 0; i < 100 && status !== "completed"; i++) {
        await sleep(20);
        status = (await c.call("GET", `/api/v1/files/${file.id}/process/status`)).body.status;
      }
      expect(status).toBe("completed");
      expect((await c.call("POST", `/api/v1/knowledge/${kb.id}/file/add`, { file_id: file.id })).status).toBe(200);
      expect(owui.kbContents("slow").get("s.md")).toBe("slow text");
    });
  });

  it("pages knowledge bases and KB files as {items, total}", async () => {
    await withDouble({ pageSize: 2 }, async (_owui, c) => {
      for (const n of ["k1", "k2", "k3", "k4", "k5"]) await c.createKb(n);
      const pages = await Promise.all([1, 2, 3, 4].map((p) => c.call("GET", `/api/v1/knowledge/?page=${p}`)));
      expect(pages.map((p) => p.body.items.length)).toEqual([2, 2, 1, 0]);
      expect(pages[0]!.body.total).toBe(5);
      expect(new Set(pages.flatMap((p) => p.body.items.map((k: Body) => k.name))).size).toBe(5);
      expect((await c.call("GET", "/api/v1/knowledge/?page=0")).body.items.length).toBe(2); // max(page, 1)

      const kb = pages[0]!.body.items[0];
      for (const n of ["a", "b", "c"]) {
        const f = await c.upload(`${n}.md`, `content ${n}`);
        await c.call("POST", `/api/v1/knowledge/${kb.id}/file/add`, { file_id: f.id });
      }
      const files = await c.call("GET", `/api/v1/knowledge/${kb.id}/files?page=2`);
      expect(files.body).toMatchObject({ total: 3, items: [expect.objectContaining({ user: expect.objectContaining({ id: ADMIN }) })] });
      expect((await c.call("GET", `/api/v1/knowledge/${kb.id}`)).body.files).toBeNull();
    });
  });

  it("≤0.7: access_control null means PUBLIC and access_grants are ignored", async () => {
    await withDouble({ version: "0.7.2" }, async (owui, c) => {
      expect(owui.dialect).toBe("0.7");
      const dflt = await c.createKb("default");
      expect(dflt).toMatchObject({ access_control: null });
      expect(dflt).not.toHaveProperty("access_grants");
      expect(owui.knowledge.get(dflt.id)?.public).toBe(true);
      const grantsOnly = await c.createKb("grants", { access_grants: [{ principal_type: "user", principal_id: "u", permission: "read" }] });
      expect(owui.knowledge.get(grantsOnly.id)?.public).toBe(true);
      const ac = { read: { group_ids: [], user_ids: ["u-1"] }, write: { group_ids: [], user_ids: [] } };
      const priv = await c.createKb("private", { access_control: ac });
      expect(owui.knowledge.get(priv.id)).toMatchObject({ public: false, accessControl: ac });
      expect((await c.call("GET", "/api/v1/knowledge/nope")).status).toBe(401); // sic
    });
  });

  it("≤0.7: DELETE leaves a dangling id and the KB's vectors, so the same content is a duplicate", async () => {
    await withDouble({ version: "0.7.2" }, async (owui, c) => {
      const kb = await c.createKb("dangling");
      const file = await c.upload("d.md", "revert me");
      await c.call("POST", `/api/v1/knowledge/${kb.id}/file/add`, { file_id: file.id });
      await c.call("DELETE", `/api/v1/files/${file.id}`);
      expect(owui.knowledge.get(kb.id)?.fileIds).toEqual([file.id]);
      expect((await c.call("GET", `/api/v1/knowledge/${kb.id}/files`)).body).toEqual({ items: [], total: 0 });
      const again = await c.upload("d.md", "revert me");
      const res = await c.call("POST", `/api/v1/knowledge/${kb.id}/file/add`, { file_id: again.id });
      expect(res.body.detail).toContain("Duplicate content detected");
    });
  });

  it("<0.6.42: bare KB list, files inside GET /knowledge/{id}, no /files route", async () => {
    await withDouble({ version: "0.6.40", pageSize: 2 }, async (owui, c) => {
      expect(owui.dialect).toBe("0.6.41");
      for (const n of ["a", "b", "c"]) await c.createKb(n);
      const list = await c.call("GET", "/api/v1/knowledge/?page=2");
      expect(Array.isArray(list.body)).toBe(true);
      expect(list.body).toHaveLength(3);
      const kb = list.body[0];
      const file = await c.upload("f.md", "old style");
      await c.call("POST", `/api/v1/knowledge/${kb.id}/file/add`, { file_id: file.id });
      const got = await c.call("GET", `/api/v1/knowledge/${kb.id}`);
      expect(got.body).toMatchObject({ data: { file_ids: [file.id] }, files: [expect.objectContaining({ id: file.id })] });
      expect((await c.call("GET", `/api/v1/knowledge/${kb.id}/files`)).body.text).toContain("<html");
    });
  });

  it("without the frontend mount: 404 Not Found, 405, and FastAPI's slash redirect", async () => {
    await withDouble({ spaFallback: false }, async (_owui, c) => {
      expect(await c.call("GET", "/api/v1/nope")).toEqual({ status: 404, body: { detail: "Not Found" } });
      expect((await c.call("DELETE", "/api/v1/knowledge/create")).status).toBe(405);
      const res = await fetch(`${_owui.url}/api/v1/knowledge?page=2`, { redirect: "manual", headers: { authorization: `Bearer ${KEY}` } });
      expect(res.status).toBe(307);
      expect(res.headers.get("location")).toBe("/api/v1/knowledge/?page=2");
    });
  });

  it("refuses API keys when they are disabled, after looking the key up", async () => {
    await withDouble({ apiKeysEnabled: false }, async (_owui, c) => {
      const res = await c.call("GET", "/api/v1/knowledge/");
      expect(res).toEqual({ status: 403, body: { detail: ERROR_MESSAGES.API_KEY_NOT_ALLOWED } });
      const unknown = await c.call("GET", "/api/v1/knowledge/", undefined, "sk-nope");
      expect(unknown).toEqual({ status: 401, body: { detail: ERROR_MESSAGES.INVALID_TOKEN } });
    });
  });

  it("before 0.8: 403 without a bearer key, and disabled keys refused before any lookup", async () => {
    await withDouble({ version: "0.7.2", apiKeysEnabled: false }, async (_owui, c) => {
      expect(await c.call("GET", "/api/v1/knowledge/", undefined, null)).toEqual({ status: 403, body: { detail: "Not authenticated" } });
      const unknown = await c.call("GET", "/api/v1/knowledge/", undefined, "sk-nope");
      expect(unknown).toEqual({ status: 403, body: { detail: ERROR_MESSAGES.API_KEY_NOT_ALLOWED } });
    });
  });
});
