/** The sync's Open WebUI client against the contract double: paging, dialects, error classes. */
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { accessDialect, OpenWebUIClient, OpenWebUIError } from "../../src/sync/openwebui-client.js";
import { startOpenWebUIDouble, type OpenWebUIDouble } from "../fixtures/openwebui-double.js";

const KEY = "sk-unit-test-admin";
let owui: OpenWebUIDouble;
let client: OpenWebUIClient;

beforeAll(async () => {
  owui = await startOpenWebUIDouble({ apiKey: KEY, version: "0.12.0", pageSize: 5 });
  client = new OpenWebUIClient({ baseUrl: owui.url, apiKey: KEY });
});
afterAll(async () => owui?.close());

const fail = (p: Promise<unknown>) => p.then(() => undefined, (e: unknown) => e as OpenWebUIError);

describe("OpenWebUIClient", () => {
  it("finds a knowledge base by name on a later page", async () => {
    for (let i = 0; i < 12; i++) await client.createKnowledge(`kb-${i}`, "", `user-${i}`, "grants");
    expect((await client.findKnowledge("kb-11"))?.name).toBe("kb-11");
    expect(await client.findKnowledge("kb-missing")).toBeUndefined();
  });

  it("takes only a KB an admin owns: a user could name one after someone else", async () => {
    const listing = { items: [{ id: "squat", name: "workspace-u1", user_id: "bob", user: { id: "bob", role: "user" } }], total: 1 };
    const fetchFn = (async () => Response.json(listing)) as typeof fetch;
    const c = new OpenWebUIClient({ baseUrl: "http://owui.invalid", apiKey: KEY, fetchFn });
    expect(await c.findKnowledge("workspace-u1")).toBeUndefined();
    listing.items[0]!.user.role = "admin";
    expect((await c.findKnowledge("workspace-u1"))?.id).toBe("squat");
  });

  it("uploads, links and removes a file", async () => {
    const kb = await client.createKnowledge("kb-files", "", "u", "grants");
    const file = await client.upload("a.txt", Buffer.from("hello"), { path: "a.txt" });
    expect(await client.processStatus(file.id)).toBe("completed");
    await client.addToKnowledge(kb.id, file.id);
    expect(owui.kbContents("kb-files").get("a.txt")).toBe("hello");
    await client.removeFromKnowledge(kb.id, file.id);
    expect(owui.kbContents("kb-files").size).toBe(0);
    expect(owui.files.has(file.id)).toBe(false);
  });

  it("classifies failures: outage retryable, auth and HTML not, duplicates recognised", async () => {
    owui.setOutage(503);
    const outage = await fail(client.version());
    owui.setOutage(null);
    expect(outage).toMatchObject({ status: 503, isRetryable: true });

    const auth = await fail(new OpenWebUIClient({ baseUrl: owui.url, apiKey: "sk-wrong" }).findKnowledge("x"));
    expect(auth).toMatchObject({ status: 401, isRetryable: false });

    const html = await fail(new OpenWebUIClient({ baseUrl: `${owui.url}/not-the-api`, apiKey: KEY }).version());
    expect(html?.message).toMatch(/OPENWEBUI_URL/);

    const kb = await client.createKnowledge("kb-dup", "", "u", "grants");
    const a = await client.upload("a.txt", Buffer.from("same"), {});
    await client.addToKnowledge(kb.id, a.id);
    const b = await client.upload("b.txt", Buffer.from("same"), {});
    const dup = await fail(client.addToKnowledge(kb.id, b.id));
    expect(dup?.duplicateContent).toBe(true);
    expect(dup?.isRetryable).toBe(false);

    const missing = await fail(client.addToKnowledge("no-such-kb", a.id));
    expect(missing?.status).toBe(400);
    expect(missing?.notFound).toBe(true);
  });

  it("picks the access dialect from the version", () => {
    expect(accessDialect("0.12.0")).toBe("grants");
    expect(accessDialect("v0.8.0")).toBe("grants");
    expect(accessDialect("0.7.2")).toBe("access_control");
    expect(accessDialect("0.6.41")).toBe("access_control");
  });
});
