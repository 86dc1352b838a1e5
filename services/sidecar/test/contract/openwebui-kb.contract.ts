/**
 * The slice of Open WebUI's REST API that knowledge-base sync relies on, as one suite run
 * against every implementation of it: the contract double (test/unit/openwebui-double.test.ts)
 * and the real Open WebUI (test/e2e/openwebui-contract.test.ts). Only HTTP: whatever the suite
 * asserts, a client can see. When the two disagree, the real one is right.
 *
 * The suite shares one instance across its tests: every test names its own KBs and files, and
 * none assumes it sees an empty instance.
 */
import { createHash, randomUUID } from "node:crypto";
import { describe, expect, it } from "vitest";
import { ERROR_MESSAGES as E } from "../fixtures/openwebui-double.js";
import { httpCall, type HttpAnswer, type Json } from "../helpers/http-call.js";

export interface ContractAccount {
  id: string;
  apiKey: string;
}

export interface OpenWebUIContractTarget {
  url: string;
  /** What GET /api/version reports. */
  version: string;
  admin: ContractAccount;
  /** Two ordinary users (role "user"), each with their own API key. */
  alice: ContractAccount;
  bob: ContractAccount;
}

type Answer = HttpAnswer<Json>;

const SYNC = "process=true&process_in_background=false"; // what the sidecar's client sends
const PAGE = 30; // routers/knowledge.py PAGE_ITEM_COUNT
const sha256 = (s: string) => createHash("sha256").update(s).digest("hex");
const keys = (o: object) => Object.keys(o).sort();

/** `getTarget` is called inside the tests, so it may read what a `beforeAll` started. */
export function describeOpenWebUIKnowledgeContract(name: string, getTarget: () => OpenWebUIContractTarget): void {
  const run = randomUUID().slice(0, 8);
  const unique = (what: string) => `contract-${run}-${what}`;
  const t = () => getTarget();

  const call = (key: string | null, method: string, path: string, body?: unknown): Promise<Answer> => httpCall(t().url, key, method, path, body);
  const admin = (method: string, path: string, body?: unknown) => call(t().admin.apiKey, method, path, body);
  async function upload(filename: string, content: string, opts: { query?: string; metadata?: Json } = {}): Promise<Answer> {
    const form = new FormData();
    form.append("file", new Blob([content], { type: "text/markdown" }), filename);
    if (opts.metadata) form.append("metadata", JSON.stringify(opts.metadata));
    return admin("POST", `/api/v1/files/?${opts.query ?? SYNC}`, form);
  }
  /** An uploaded, processed file's id. */
  async function file(filename: string, content: string): Promise<string> {
    const res = await upload(filename, content);
    expect(res.status, JSON.stringify(res.body)).toBe(200);
    return res.body.id as string;
  }
  async function kb(what: string, grants: Json[] = []): Promise<Json> {
    const res = await admin("POST", "/api/v1/knowledge/create", { name: unique(what), description: "", access_grants: grants });
    expect(res.status, JSON.stringify(res.body)).toBe(200);
    return res.body;
  }
  const add = (kbId: string, fileId: string) => admin("POST", `/api/v1/knowledge/${kbId}/file/add`, { file_id: fileId });
  const kbFiles = async (kbId: string, key = t().admin.apiKey) => call(key, "GET", `/api/v1/knowledge/${kbId}/files`);
  const readGrant = (userId: string) => ({ principal_type: "user", principal_id: userId, permission: "read" });

  describe(name, () => {
    it("reports its version without auth", async () => {
      const res = await call(null, "GET", "/api/version");
      expect(res).toMatchObject({ status: 200, type: expect.stringContaining("application/json") });
      expect(res.body).toEqual({ version: t().version, deployment_id: "" });
    });

    it("refuses a missing key, an unknown key and a token it did not sign, with {detail}", async () => {
      for (const [method, path, body] of [
        ["GET", "/api/v1/knowledge/", undefined],
        ["POST", "/api/v1/knowledge/create", { name: unique("denied"), description: "" }],
      ] as const) {
        expect(await call(null, method, path, body)).toMatchObject({ status: 401, body: { detail: "Not authenticated" } });
        expect(await call("sk-not-a-key", method, path, body)).toMatchObject({ status: 401, body: { detail: E.INVALID_TOKEN } });
        expect(await call("not-a-jwt", method, path, body)).toMatchObject({ status: 401, body: { detail: E.UNAUTHORIZED } });
      }
    });

    it("uploads with synchronous processing: the answer is the record as inserted, /process/status the outcome", async () => {
      const content = "# Plan\nship it";
      const metadata = { source: "open-persona", path: "notes/plan.md" };
      const res = await upload("notes/plan.md", content, { metadata });
      expect(res.status).toBe(200);
      const f = res.body;
      expect(keys(f)).toEqual(["created_at", "data", "filename", "hash", "id", "meta", "path", "status", "updated_at", "user_id"]);
      // Only the basename is kept; `data.status` is the stale "pending" of the inserted row.
      expect(f).toMatchObject({ status: true, filename: "plan.md", user_id: t().admin.id, hash: null, data: { status: "pending" } });
      expect(f.meta).toEqual({ name: "plan.md", content_type: "text/markdown", size: 14, file_hash: sha256(content), data: metadata });

      expect(await admin("GET", `/api/v1/files/${f.id}/process/status`)).toMatchObject({ status: 200, body: { status: "completed" } });
      const stored = await admin("GET", `/api/v1/files/${f.id}`);
      expect(stored.status).toBe(200);
      expect(keys(stored.body)).toEqual(["created_at", "data", "filename", "hash", "id", "meta", "path", "updated_at", "user_id"]);
      expect(stored.body).toMatchObject({ hash: sha256(content), data: { status: "completed", content, error: null } });
      expect(stored.body.meta.collection_name).toBe(`file-${f.id}`);
      expect((await admin("GET", `/api/v1/files/${randomUUID()}/process/status`)).status).toBe(404);
    });

    it("keeps an unprocessed upload out of KBs", async () => {
      const k = await kb("unprocessed");
      const res = await upload("raw.md", `raw ${run}`, { query: "process=false" });
      expect(res.status).toBe(200);
      expect(keys(res.body)).toEqual(["created_at", "data", "filename", "hash", "id", "meta", "updated_at", "user_id"]);
      expect(res.body.data).toEqual({});
      expect((await admin("GET", `/api/v1/files/${res.body.id}/process/status`)).body).toEqual({ status: "pending" });
      expect(await add(k.id, res.body.id)).toMatchObject({ status: 400, body: { detail: E.FILE_NOT_PROCESSED } });
    });

    it("refuses an empty upload outright; a blank one fails processing and cannot join a KB", async () => {
      for (const query of [SYNC, "process=false"])
        expect(await upload("empty.md", "", { query })).toMatchObject({ status: 400, body: { detail: E.EMPTY_CONTENT } });

      const blank = await upload("blank.md", "  \n\n ");
      expect(blank).toMatchObject({ status: 200, body: { data: { status: "pending" } } });
      expect((await admin("GET", `/api/v1/files/${blank.body.id}/process/status`)).body).toEqual({ status: "failed" });
      const stored = await admin("GET", `/api/v1/files/${blank.body.id}`);
      expect(stored.body).toMatchObject({ hash: null, data: { status: "failed", error: E.EMPTY_CONTENT } });
      const k = await kb("blank");
      expect(await add(k.id, blank.body.id)).toMatchObject({ status: 400, body: { detail: `400: ${E.EMPTY_CONTENT}` } });
    });

    it("creates a KB owned by the caller with access_grants; only an admin may create one", async () => {
      const { alice } = t();
      const k = await kb("created", [readGrant(alice.id), readGrant(alice.id), { principal_type: "robot", principal_id: "x", permission: "read" }]);
      expect(keys(k)).toEqual(["access_grants", "created_at", "description", "files", "id", "meta", "name", "updated_at", "user_id"]);
      expect(k).toMatchObject({ user_id: t().admin.id, name: unique("created"), description: "", meta: null, files: null });
      // Normalized: invalid grants dropped, duplicates merged, each stored as a row.
      expect(k.access_grants).toEqual([
        {
          id: expect.any(String),
          resource_type: "knowledge",
          resource_id: k.id,
          ...readGrant(alice.id),
          created_at: expect.any(Number),
        },
      ]);
      expect((await kb("no-grants")).access_grants).toEqual([]);
      const got = await admin("GET", `/api/v1/knowledge/${k.id}`);
      expect(got.status).toBe(200);
      expect(got.body).toEqual({ ...k, write_access: true }); // files only through /files

      const noDescription = await admin("POST", "/api/v1/knowledge/create", { name: unique("bad") });
      expect(noDescription.status).toBe(422);
      expect(noDescription.body.detail[0]).toMatchObject({ type: "missing", loc: ["body", "description"] });
      const byUser = await call(alice.apiKey, "POST", "/api/v1/knowledge/create", { name: unique("mine"), description: "" });
      expect(byUser).toMatchObject({ status: 401, body: { detail: E.UNAUTHORIZED } });
    });

    it("adds a processed file, again as a no-op, and answers with the KB's file metadata", async () => {
      const k = await kb("add");
      const content = `added ${run}`;
      const id = await file("a.md", content);
      const res = await add(k.id, id);
      expect(res.status).toBe(200);
      expect(keys(res.body)).toEqual([...keys(k).filter((x) => x !== "files"), "files", "write_access"].sort());
      expect(res.body.write_access).toBe(false); // the model's default: the route doesn't set it
      expect(res.body.files).toHaveLength(1);
      const [meta] = res.body.files as Json[];
      expect(keys(meta!)).toEqual(["created_at", "hash", "id", "meta", "updated_at"]);
      // The file's chunks now live in the KB's collection.
      expect(meta).toMatchObject({ id, hash: sha256(content), meta: { name: "a.md", collection_name: k.id } });

      const again = await add(k.id, id);
      expect(again.status).toBe(200);
      expect(again.body.files.map((f: Json) => f.id)).toEqual([id]);
      const update = await admin("POST", `/api/v1/knowledge/${k.id}/file/update`, { file_id: id });
      expect(update.status).toBe(200);
      expect(update.body.files.map((f: Json) => f.id)).toEqual([id]);
    });

    it("refuses content the KB already holds under another file id, and marks that file failed", async () => {
      const k = await kb("duplicate");
      const first = await file("first.md", `same words ${run}`);
      const second = await file("second.md", `same words ${run}`);
      expect((await add(k.id, first)).status).toBe(200);
      const dup = await add(k.id, second);
      expect(dup).toMatchObject({ status: 400, body: { detail: `400: ${E.DUPLICATE_CONTENT}` } });
      expect((await admin("GET", `/api/v1/files/${second}/process/status`)).body).toEqual({ status: "failed" });
      expect((await admin("GET", `/api/v1/files/${second}`)).body).toMatchObject({ hash: null, data: { status: "failed", error: E.DUPLICATE_CONTENT } });
      expect((await kbFiles(k.id)).body.items.map((f: Json) => f.id)).toEqual([first]);
      // In another KB the same content is welcome.
      expect((await add((await kb("duplicate-elsewhere")).id, second)).status).toBe(200);
    });

    it("answers a missing KB or file on file/add|update|remove with 400, not 404", async () => {
      const k = await kb("missing");
      const id = await file("x.md", `x ${run}`);
      const nowhere = randomUUID();
      for (const op of ["add", "update", "remove"]) {
        const noKb = await admin("POST", `/api/v1/knowledge/${nowhere}/file/${op}`, { file_id: id });
        expect(noKb, op).toMatchObject({ status: 400, body: { detail: E.NOT_FOUND } });
        const noFile = await admin("POST", `/api/v1/knowledge/${k.id}/file/${op}`, { file_id: randomUUID() });
        expect(noFile, op).toMatchObject({ status: 400, body: { detail: E.NOT_FOUND } });
        // The body is validated before anything is looked up.
        const noBody = await admin("POST", `/api/v1/knowledge/${nowhere}/file/${op}`, {});
        expect(noBody.status, op).toBe(422);
        expect(noBody.body.detail[0], op).toMatchObject({ type: "missing", loc: ["body", "file_id"] });
      }
      for (const op of ["update", "remove"]) {
        const notLinked = await admin("POST", `/api/v1/knowledge/${k.id}/file/${op}`, { file_id: id });
        expect(notLinked, op).toMatchObject({ status: 400, body: { detail: E.NOT_FOUND } });
      }
      expect(await admin("GET", `/api/v1/knowledge/${nowhere}`)).toMatchObject({ status: 404, body: { detail: E.NOT_FOUND } });
      expect(await kbFiles(nowhere)).toMatchObject({ status: 400, body: { detail: E.NOT_FOUND } });
    });

    it("file/remove?delete_file=true unlinks and deletes the file; delete_file=false only unlinks", async () => {
      const k = await kb("remove");
      const gone = await file("gone.md", `gone ${run}`);
      const kept = await file("kept.md", `kept ${run}`);
      for (const id of [gone, kept]) expect((await add(k.id, id)).status).toBe(200);

      const removed = await admin("POST", `/api/v1/knowledge/${k.id}/file/remove?delete_file=true`, { file_id: gone });
      expect(removed.status).toBe(200);
      expect(removed.body.files.map((f: Json) => f.id)).toEqual([kept]);
      expect(await admin("GET", `/api/v1/files/${gone}`)).toMatchObject({ status: 404, body: { detail: E.NOT_FOUND } });

      const unlinked = await admin("POST", `/api/v1/knowledge/${k.id}/file/remove?delete_file=false`, { file_id: kept });
      expect(unlinked.body.files).toEqual([]);
      expect((await admin("GET", `/api/v1/files/${kept}`)).status).toBe(200);
      expect((await add(k.id, kept)).status).toBe(200); // its content left the KB with it
    });

    it("DELETE /api/v1/files/{id} unlinks the file from every KB and frees its content", async () => {
      const [k1, k2] = [await kb("delete-1"), await kb("delete-2")];
      const content = `to be deleted ${run}`;
      const id = await file("d.md", content);
      for (const k of [k1, k2]) expect((await add(k.id, id)).status).toBe(200);

      expect(await admin("DELETE", `/api/v1/files/${id}`)).toMatchObject({ status: 200, body: { message: "File deleted successfully" } });
      for (const k of [k1, k2]) expect((await kbFiles(k.id)).body).toMatchObject({ items: [], total: 0 });
      expect(await admin("DELETE", `/api/v1/files/${id}`)).toMatchObject({ status: 404, body: { detail: E.NOT_FOUND } });
      expect((await add(k1.id, await file("d.md", content))).status).toBe(200); // not a duplicate any more
    });

    it("lists KBs as {items, total}, 30 a page, newest first", async () => {
      const list = (page: string | number) => admin("GET", `/api/v1/knowledge/?page=${page}`);
      const listed = await kb("listed");
      for (let i = (await list(1)).body.total as number; i <= PAGE; i++) await kb(`page-${i}`);
      const first = await list(1);
      expect(keys(first.body)).toEqual(["items", "total"]);
      const total = first.body.total as number;
      expect(total).toBeGreaterThan(PAGE);
      const pages = [first];
      for (let p = 2; p <= Math.ceil(total / PAGE); p++) pages.push(await list(p));
      expect(pages.map((p) => p.body.items.length)).toEqual(pages.map((_, i) => Math.min(PAGE, total - i * PAGE)));
      const all = pages.flatMap((p) => p.body.items as Json[]);
      expect(new Set(all.map((k) => k.id)).size).toBe(total);
      const stamps = all.map((k) => k.updated_at as number);
      expect(stamps).toEqual([...stamps].sort((a, b) => b - a));

      const item = all.find((k) => k.id === listed.id)!;
      expect(keys(item)).toEqual(["access_grants", "created_at", "description", "file_count", "id", "meta", "name", "updated_at", "user", "user_id", "write_access"]);
      expect(item).toMatchObject({ file_count: 0, write_access: true, user: { id: t().admin.id, role: "admin" } });
      expect(keys(item.user)).toEqual(["email", "id", "name", "role"]);

      expect((await list(pages.length + 1)).body).toEqual({ items: [], total });
      expect((await list(0)).body.items.map((k: Json) => k.id)).toEqual(first.body.items.map((k: Json) => k.id)); // max(page, 1)
      const bad = await list("x");
      expect(bad.status).toBe(422);
      expect(bad.body.detail[0]).toMatchObject({ type: "int_parsing", loc: ["query", "page"] });
    });

    it("lists a KB's files as {items, total} with their linker, pages chosen by an admin", async () => {
      const k = await kb("files");
      const ids: string[] = [];
      for (const n of ["a", "b", "c"]) {
        ids.push(await file(`${n}.md`, `file ${n} ${run}`));
        expect((await add(k.id, ids.at(-1)!)).status).toBe(200);
      }
      const res = await kbFiles(k.id);
      expect(res.status).toBe(200);
      expect(keys(res.body)).toEqual(["breadcrumbs", "directories", "items", "total"]);
      expect(res.body).toMatchObject({ total: 3, directories: [], breadcrumbs: [] });
      expect(new Set(res.body.items.map((f: Json) => f.id))).toEqual(new Set(ids));
      const [item] = res.body.items as Json[];
      expect(keys(item!)).toEqual([
        "created_at", "data", "directory_id", "directory_path", "filename", "has_original", "hash", "id", "meta", "updated_at", "user", "user_id",
      ]);
      // `data` (the extracted text) is never loaded for a listing.
      expect(item).toMatchObject({ data: null, directory_id: null, directory_path: "", has_original: true, user: { id: t().admin.id } });

      const page2 = await admin("GET", `/api/v1/knowledge/${k.id}/files?page=2&limit=2`);
      expect(page2.body.total).toBe(3);
      expect(page2.body.items).toHaveLength(1);
      expect((await admin("GET", `/api/v1/knowledge/${k.id}/files?page=2`)).body).toMatchObject({ items: [], total: 3 });
    });

    it("serves the web app for unknown GET paths, also without the trailing slash, and 405 otherwise", async () => {
      for (const path of ["/api/v1/knowledge", "/api/v1/knowledge?page=2", "/api/v1/no-such-route"]) {
        const res = await admin("GET", path);
        expect(res, path).toMatchObject({ status: 200, type: expect.stringContaining("text/html") });
        expect(res.body.text, path).toContain("<html");
      }
      for (const path of ["/api/v1/files?process=true", "/api/v1/no-such-route"])
        expect(await admin("POST", path, {}), path).toMatchObject({ status: 405, body: { detail: "Method Not Allowed" } });
    });

    it("shows a KB with a read grant for alice to alice's own key, not to bob's", async () => {
      const { alice, bob } = t();
      const k = await kb("alice", [readGrant(alice.id)]);
      const hidden = await kb("admin-only");
      const id = await file("shared.md", `for alice ${run}`);
      expect((await add(k.id, id)).status).toBe(200);
      const names = async (key: string) => ((await call(key, "GET", "/api/v1/knowledge/")).body.items as Json[]).map((x) => x.name);

      const seen = (await call(alice.apiKey, "GET", "/api/v1/knowledge/")).body.items as Json[];
      expect(seen.find((x) => x.id === k.id)).toMatchObject({ write_access: false });
      expect(await names(alice.apiKey)).not.toContain(hidden.name);
      expect(await call(alice.apiKey, "GET", `/api/v1/knowledge/${k.id}`)).toMatchObject({ status: 200, body: { id: k.id, files: null, write_access: false } });
      expect((await kbFiles(k.id, alice.apiKey)).body.items.map((f: Json) => f.id)).toEqual([id]);
      expect((await call(alice.apiKey, "GET", `/api/v1/files/${id}`)).status).toBe(200);
      // Reading is not writing.
      const write = await call(alice.apiKey, "POST", `/api/v1/knowledge/${k.id}/file/remove`, { file_id: id });
      expect(write).toMatchObject({ status: 400, body: { detail: E.ACCESS_PROHIBITED } });

      expect(await names(bob.apiKey)).not.toContain(k.name);
      for (const other of [k, hidden]) {
        const key = other === k ? bob.apiKey : alice.apiKey;
        expect(await call(key, "GET", `/api/v1/knowledge/${other.id}`)).toMatchObject({ status: 401, body: { detail: E.ACCESS_PROHIBITED } });
        expect(await kbFiles(other.id, key)).toMatchObject({ status: 400, body: { detail: E.ACCESS_PROHIBITED } });
      }
      expect(await call(bob.apiKey, "GET", `/api/v1/files/${id}`)).toMatchObject({ status: 404, body: { detail: E.NOT_FOUND } });
    });
  });
}
