/**
 * Artifacts end to end, with the real opencode (sandboxed local mode): the agent writes a
 * page, an SVG, a PNG (through a shell command) and a PDF, and the turn shows them — for Open
 * WebUI as an `embeds` event and inline images, as links for every other client (chat
 * completions and Responses). Each link serves the exact bytes of that turn, without an API
 * key, with headers that keep active content in a sandbox; a tampered, renamed or expired
 * link fails; secrets, ignored paths, symlinks out of the workspace and everything past the
 * per-turn cap are not shown. The real Open WebUI's rendering is in openwebui-browser.test.ts.
 */
import { randomUUID } from "node:crypto";
import fs from "node:fs";
import path from "node:path";
import OpenAI from "openai";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { ArtifactSigner } from "../../src/artifacts/artifact-token.js";
import { userHash, userSpace } from "../../src/workspace/user-space.js";
import { script, startScriptedModel, type ScriptedModel, type Step } from "../fixtures/scripted-model.js";
import { gatewayChat, type GatewayTurn } from "../helpers/gateway-chat.js";
import { scriptedEnv, startSidecar, tempDir, type InProcessSidecar } from "../helpers/harness.js";
import { minimalPdf, solidPng } from "../helpers/sample-files.js";

const GATEWAY_KEY = `gw-${randomUUID()}`;
const DIRECT_KEY = `sk-direct-${randomUUID()}`;
const DIRECT_USER = `direct-${randomUUID().slice(0, 8)}`;
const MAX_BYTES = 200_000;

const PAGE = `<!doctype html><html><head><title>Report</title></head><body><h1>Sales</h1><script>document.body.dataset.ran = "yes";</script></body></html>`;
const SVG = `<?xml version="1.0"?>\n<svg xmlns="http://www.w3.org/2000/svg" width="120" height="60"><rect width="120" height="60" fill="teal"/></svg>`;
const PNG = solidPng(16, 8, [200, 30, 30]);
const PDF = minimalPdf();

let model: ScriptedModel;
let sidecar: InProcessSidecar;

beforeAll(async () => {
  model = await startScriptedModel();
  const keysFile = path.join(tempDir(), "user-keys.json");
  fs.writeFileSync(keysFile, JSON.stringify({ [DIRECT_KEY]: DIRECT_USER }));
  sidecar = await startSidecar(
    scriptedEnv(model.baseURL, { SIDECAR_API_KEYS: GATEWAY_KEY, SIDECAR_USER_KEYS_FILE: keysFile, ARTIFACTS_MAX_BYTES: String(MAX_BYTES) }),
  );
}, 120_000);

afterAll(async () => {
  await sidecar?.close();
  await model?.close();
});

const write = (filePath: string, content: string): Step => ({ tool: "write", args: { filePath, content } });
const bash = (command: string): Step => ({ tool: "bash", args: { command, description: "make files" } });
const workspace = (user: string) => userSpace(sidecar.config.workspaceRoot, sidecar.config.stateRoot, userHash(user)).workspaceDir;

/** One streamed turn as Open WebUI's gateway sends it: its text and its Open WebUI events. */
const openWebUITurn = (user: string, content: string) => gatewayChat(sidecar.url, GATEWAY_KEY, user, content);

/** The sidecar's artifact links in a text (markdown list lines, not images). */
function linksIn(text: string): string[] {
  return [...text.matchAll(/(?<!!)\[(?:[^\]\\]|\\.)*\]\((http:\/\/127\.0\.0\.1:\d+\/v1\/artifacts\/[^)\s]+)\)/g)].map((m) => m[1]!);
}

const nameOf = (url: string) => decodeURIComponent(url.split("?")[0]!.split("/").at(-1)!);

async function get(url: string): Promise<{ status: number; headers: Headers; body: Buffer }> {
  const res = await fetch(url); // no Authorization: a browser following a link has none
  return { status: res.status, headers: res.headers, body: Buffer.from(await res.arrayBuffer()) };
}

describe("artifacts", () => {
  const alice = `alice-${randomUUID().slice(0, 8)}`;
  let turn1: GatewayTurn;
  let urls: Record<string, string>;

  it("an Open WebUI turn shows pages as embeds, images and SVGs inline, PDFs as links", async () => {
    turn1 = await openWebUITurn(
      alice,
      script(
        write("page.html", PAGE),
        write("charts/chart.svg", SVG),
        bash(`printf '%s' '${PNG.toString("base64")}' | base64 -d > dot.png`),
        write("doc.pdf", PDF.toString("latin1")),
        // Never shown: a secret, an ignored path, a tool directory, not viewable, a symlink out.
        write("secrets.html", "<p>password=hunter2</p>"),
        write(".gitignore", "build/\n"),
        write("build/out.html", "<p>build output</p>"),
        write("node_modules/pkg/readme.html", "<p>dependency</p>"),
        write("notes.txt", "plain text"),
        bash("ln -s /etc/hostname leak.html && head -c 300000 /dev/zero | tr '\\0' 'a' > big.html"),
        { text: "Made a page, a chart, an image and a PDF." },
      ),
    );
    expect(turn1.status).toBe(200);
    expect(turn1.error).toBeUndefined();
    const embeds = turn1.events.filter((e) => e.type === "embeds").flatMap((e) => e.data.embeds as string[]);
    expect(embeds.map(nameOf)).toEqual(["page.html"]);
    expect(embeds[0]).toMatch(/\?embed=1$/);
    expect(turn1.events.map((e) => e.type)).toEqual(["embeds"]);
    const images = [...turn1.text.matchAll(/!\[([^\]]*)\]\((http:[^)\s]+)\)/g)].map((m) => [m[1]!, m[2]!] as const);
    expect(images.map(([alt, url]) => [alt, nameOf(url)])).toEqual([
      ["charts/chart.svg", "chart.svg"],
      ["dot.png", "dot.png"],
    ]);
    const pdfLinks = linksIn(turn1.text);
    expect(pdfLinks.map(nameOf)).toEqual(["doc.pdf"]);
    expect(turn1.text).toContain("Made a page, a chart, an image and a PDF.");
    // Nothing else was offered (the tool cards in the text name them all; no link does).
    for (const hidden of ["secrets.html", "out.html", "readme.html", "notes.txt", "leak.html", "big.html"]) {
      expect(JSON.stringify(turn1.events)).not.toContain(hidden);
      expect(linksIn(turn1.text).join(" ")).not.toContain(hidden);
    }
    expect(turn1.text).toContain("leak.html"); // (the tool card of the command that made it)
    urls = Object.fromEntries([embeds[0]!.replace(/\?embed=1$/, ""), ...images.map(([, url]) => url), ...pdfLinks].map((u) => [nameOf(u), u]));
    // The files really are in alice's workspace (the agent wrote them there).
    expect(fs.readFileSync(path.join(workspace(alice), "dot.png")).equals(PNG)).toBe(true);
  }, 180_000);

  it("each link serves the exact bytes without an API key, with the type and a sandbox for active content", async () => {
    const expected: Record<string, { bytes: Buffer; type: string; csp?: string }> = {
      "page.html": { bytes: Buffer.from(PAGE), type: "text/html; charset=utf-8", csp: "sandbox allow-scripts" },
      "chart.svg": { bytes: Buffer.from(SVG), type: "image/svg+xml", csp: "sandbox allow-scripts" },
      "dot.png": { bytes: PNG, type: "image/png", csp: "sandbox" },
      "doc.pdf": { bytes: PDF, type: "application/pdf" },
    };
    for (const [name, want] of Object.entries(expected)) {
      const got = await get(urls[name]!);
      expect(got.status, name).toBe(200);
      expect(got.body.equals(want.bytes), name).toBe(true);
      expect(got.headers.get("content-type"), name).toBe(want.type);
      expect(got.headers.get("x-content-type-options"), name).toBe("nosniff");
      expect(got.headers.get("referrer-policy"), name).toBe("no-referrer");
      expect(got.headers.get("content-security-policy") ?? undefined, name).toBe(want.csp);
      expect(got.headers.get("content-disposition"), name).toBe(`inline; filename*=UTF-8''${name}`);
    }
  });

  it("a page opened as an embed also tells its frame its height; the plain link stays the exact bytes", async () => {
    const embedded = await get(`${urls["page.html"]!}?embed=1`);
    expect(embedded.status).toBe(200);
    expect(embedded.headers.get("content-security-policy")).toBe("sandbox allow-scripts");
    const body = embedded.body.toString();
    expect(body.startsWith(PAGE)).toBe(true);
    expect(body.slice(PAGE.length)).toMatch(/^\n<script>[^<]*iframe:height[^<]*<\/script>\n$/);
    // Only pages: an image asked for as an embed is still the image.
    expect((await get(`${urls["dot.png"]!}?embed=1`)).body.equals(PNG)).toBe(true);
  });

  it("an old message keeps showing its version after the file is changed or deleted", async () => {
    const turn2 = await openWebUITurn(alice, script(write("page.html", "<h1>Version two</h1>"), bash("rm charts/chart.svg"), { text: "changed" }));
    const embeds = turn2.events.filter((e) => e.type === "embeds").flatMap((e) => e.data.embeds as string[]);
    // Only what this turn changed: the new page (not the images or the PDF of the turn before).
    expect(embeds.map(nameOf)).toEqual(["page.html"]);
    expect(turn2.text).not.toContain("/v1/artifacts/");
    expect((await get(embeds[0]!.replace(/\?embed=1$/, ""))).body.toString()).toBe("<h1>Version two</h1>");
    expect((await get(urls["page.html"]!)).body.toString()).toBe(PAGE);
    expect((await get(urls["chart.svg"]!)).body.toString()).toBe(SVG);
  }, 180_000);

  it("a tampered, renamed, re-addressed or expired link fails in the API's error shape", async () => {
    const url = urls["page.html"]!;
    const [base, token, name] = [url.slice(0, url.indexOf("/v1/artifacts/")), url.split("/").at(-2)!, url.split("/").at(-1)!];
    const [body, mac] = token.split(".") as [string, string];
    const claim = JSON.parse(Buffer.from(body, "base64url").toString());
    const link = (t: string, n = name) => `${base}/v1/artifacts/${t}/${n}`;
    const flipped = `${mac.slice(0, -2)}${mac.at(-2) === "A" ? "B" : "A"}${mac.at(-1)}`;
    // Pointed at bob's hash or another file, with alice's signature: refused.
    const bobs = Buffer.from(JSON.stringify({ ...claim, u: userHash("bob") })).toString("base64url");
    const other = Buffer.from(JSON.stringify({ ...claim, h: "0".repeat(64) })).toString("base64url");
    for (const bad of [link(`${body}.${flipped}`), link(token, "other.html"), link(`${bobs}.${mac}`), link(`${other}.${mac}`), link("nonsense")]) {
      const got = await get(bad);
      expect(got.status, bad).toBe(404);
      expect(JSON.parse(got.body.toString()).error.code).toBe("artifact_not_found");
    }
    // Signed with the sidecar's own key, but past its expiry: gone.
    const key = fs.readFileSync(path.join(sidecar.config.stateRoot, "artifact-key"), "utf8").trim();
    const expired = new ArtifactSigner(key).sign({ user: claim.u, path: claim.p, sha256: claim.h, contentType: claim.c, expiresAt: Math.floor(Date.now() / 1000) - 1 });
    const gone = await get(link(expired));
    expect(gone.status).toBe(410);
    expect(JSON.parse(gone.body.toString()).error).toMatchObject({ code: "artifact_expired", type: "invalid_request_error" });
    // The same claim with a fresh expiry works: the 410 was the expiry's doing.
    const fresh = new ArtifactSigner(key).sign({ user: claim.u, path: claim.p, sha256: claim.h, contentType: claim.c, expiresAt: Math.floor(Date.now() / 1000) + 60 });
    expect((await get(link(fresh))).status).toBe(200);
    // The token never reaches the log.
    expect(sidecar.logs.join("\n")).not.toContain(token);
  });

  it("shows at most ARTIFACTS_MAX_PER_TURN (8) and says how many more there were", async () => {
    const bob = `bob-${randomUUID().slice(0, 8)}`;
    const turn = await openWebUITurn(bob, script(bash('for i in $(seq 10 19); do echo "<p>page $i</p>" > "p$i.html"; done'), { text: "ten pages" }));
    const embeds = turn.events.filter((e) => e.type === "embeds").flatMap((e) => e.data.embeds as string[]);
    expect(embeds).toHaveLength(8);
    expect(new Set(embeds.map(nameOf)).size).toBe(8);
    expect(turn.text).toContain("…and 2 more files from this turn, not shown");
    // Bob's links serve bob's pages.
    expect((await get(embeds[0]!.replace(/\?embed=1$/, ""))).body.toString()).toMatch(/^<p>page 1\d<\/p>\n$/);
  }, 180_000);

  it("a direct client gets a list of links at the end of the answer (streamed or not)", async () => {
    const client = new OpenAI({ baseURL: `${sidecar.url}/v1`, apiKey: DIRECT_KEY, maxRetries: 0 });
    const answer = await client.chat.completions.create({
      model: "open-persona/build",
      messages: [{ role: "user", content: script(write("site/index.html", PAGE), { text: "Here is your page." }) }],
    });
    const text = answer.choices[0]!.message.content!;
    expect(text).toMatch(/\n\nHere is your page\.\n\n\*\*Files from this turn\*\*\n- \[site\/index\.html\]\(http:\/\/[^)]+\/index\.html\) \(web page\)\n$/);
    expect((await get(linksIn(text)[0]!)).body.toString()).toBe(PAGE);
    expect(fs.existsSync(path.join(workspace(DIRECT_USER), "site/index.html"))).toBe(true);

    const stream = await client.chat.completions.create({
      model: "open-persona/build",
      stream: true,
      messages: [{ role: "user", content: script(bash(`printf '%s' '${PNG.toString("base64")}' | base64 -d > "my plot (1).png"`), { text: "Plotted." }) }],
    });
    let streamed = "";
    for await (const chunk of stream) streamed += chunk.choices[0]?.delta?.content ?? "";
    // A name with spaces and brackets: escaped in the text, percent-encoded in the link.
    const [link] = linksIn(streamed);
    expect(streamed).toContain("[my plot \\(1\\).png](");
    expect(nameOf(link!)).toBe("my plot (1).png");
    expect((await get(link!)).body.equals(PNG)).toBe(true);
  }, 180_000);

  it("the Responses API gives the links as url_citation annotations", async () => {
    const client = new OpenAI({ baseURL: `${sidecar.url}/v1`, apiKey: DIRECT_KEY, maxRetries: 0 });
    const response = await client.responses.create({ model: "open-persona/build", input: script(write("out/report.pdf", PDF.toString("latin1")), { text: "Report ready." }) });
    const message = response.output.find((o) => o.type === "message")!;
    const part = (message as { content: Array<{ type: string; text: string; annotations: Array<{ type: string; url: string; start_index: number; end_index: number; title: string }> }> }).content[0]!;
    expect(part.annotations).toHaveLength(1);
    const [a] = part.annotations;
    expect(a).toMatchObject({ type: "url_citation", title: "out/report.pdf" });
    expect(part.text.slice(a!.start_index, a!.end_index)).toBe(`[out/report.pdf](${a!.url})`);
    expect((await get(a!.url)).body.equals(PDF)).toBe(true);

    // Streamed: the annotation arrives as its own event, and the SDK's final response has it.
    const stream = client.responses.stream({ model: "open-persona/build", input: script(write("again.svg", SVG), { text: "SVG ready." }) });
    const added: unknown[] = [];
    stream.on("response.output_text.annotation.added", (e) => added.push(e.annotation));
    const final = await stream.finalResponse();
    const finalPart = (final.output.find((o) => o.type === "message") as { content: Array<{ annotations: unknown[] }> }).content[0]!;
    expect(added).toHaveLength(1);
    expect(finalPart.annotations).toEqual(added);
  }, 180_000);
});
