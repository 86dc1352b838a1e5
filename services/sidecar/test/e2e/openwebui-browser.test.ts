/**
 * The sidecar behind the REAL Open WebUI (0.12, from .venv/openwebui), looked at in a real
 * browser: what a user sees of tool calls, reasoning and agent errors, and whether the agent
 * really acted in that user's workspace. Identity is the signed JWT set-up of the compose
 * file (FORWARD_USER_INFO_HEADER_JWT_SECRET = OPENWEBUI_JWT_SECRET).
 *
 * Screenshots go to <repo>/test-results/screenshots/ for a person to check.
 */
import { randomUUID } from "node:crypto";
import fs from "node:fs";
import path from "node:path";
import { fileURLToPath } from "node:url";
import type { Browser, Locator, Page } from "playwright-core";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { userHash, userSpace } from "../../src/workspace/user-space.js";
import { startOpenWebUI, type OpenWebUIAccount, type RealOpenWebUI } from "../fixtures/openwebui-real.js";
import { say, script, startScriptedModel, type ScriptedModel } from "../fixtures/scripted-model.js";
import { launchBrowser, newPage } from "../helpers/browser.js";
import { minimalPdf, solidPng } from "../helpers/sample-files.js";
import { scriptedEnv, startSidecar, type InProcessSidecar } from "../helpers/harness.js";
import { outputText, sendMessage, waitForReply } from "../helpers/openwebui-chat.js";

const REPO = fileURLToPath(new URL("../../../..", import.meta.url));
const SHOTS = path.join(REPO, "test-results/screenshots");
const GATEWAY_KEY = `gw-${randomUUID()}`;
const JWT_SECRET = `jwt-${randomUUID()}`; // 40 characters
/** An agent turn on a loaded 2-core machine: opencode, two tools and three model calls. */
const REPLY_MS = 120_000;
/** For page changes after a click (vitest's poll gives up after 1 s by default). */
const POLL = { timeout: 30_000 };

/** Text that must never reach the user's eyes: it means markup was shown instead of rendered. */
const RAW_MARKUP = ["<details", "</details", "type=\"tool_calls\"", "&quot;", "&#x27;", "&lt;", "<think", "</think", "[object Object]"];

let model: ScriptedModel;
let sidecar: InProcessSidecar;
let owui: RealOpenWebUI;
let browser: Browser;

beforeAll(async () => {
  fs.mkdirSync(SHOTS, { recursive: true });
  model = await startScriptedModel();
  sidecar = await startSidecar(scriptedEnv(model.baseURL, { SIDECAR_API_KEYS: GATEWAY_KEY, OPENWEBUI_JWT_SECRET: JWT_SECRET }));
  owui = await startOpenWebUI({ sidecarUrl: sidecar.url, gatewayKey: GATEWAY_KEY, jwtSecret: JWT_SECRET, embeddingsBaseUrl: model.baseURL });
  browser = await launchBrowser();
}, 300_000);

afterAll(async () => {
  await browser?.close();
  await owui?.close();
  await sidecar?.close();
  await model?.close();
}, 60_000);

const workspaceOf = (who: OpenWebUIAccount) => userSpace(sidecar.config.workspaceRoot, sidecar.config.stateRoot, userHash(who.id)).workspaceDir;

async function screenshot(page: Page, name: string): Promise<void> {
  const file = path.join(SHOTS, `${name}.png`);
  await page.screenshot({ path: file, fullPage: true });
  console.log(`screenshot: ${file}`);
}

async function signIn(page: Page, who: OpenWebUIAccount): Promise<void> {
  await page.goto(`${owui.url}/auth`);
  await page.getByLabel("Email", { exact: true }).fill(who.email);
  await page.getByLabel("Password", { exact: true }).fill(who.password);
  await page.getByRole("button", { name: "Sign in" }).click();
  await modelSelector(page).waitFor();
}

const modelSelector = (page: Page) => page.getByRole("button", { name: /^Selected model:/ });

async function pickModel(page: Page, name: string): Promise<void> {
  await modelSelector(page).click();
  await page.getByRole("option", { name: `Select ${name} model` }).click();
}

async function send(page: Page, text: string): Promise<void> {
  await page.getByRole("textbox").click();
  // The chat input is a rich-text editor: inserted as one piece, nothing is autocompleted.
  await page.keyboard.insertText(text);
  await page.keyboard.press("Enter");
}

/**
 * The assistant's message once finished (Open WebUI shows "Regenerate" only then), after the
 * chat's background tasks (title, tags, follow-ups) are over too: until "Stop" goes away
 * they may still change the page.
 */
async function finishedReply(page: Page): Promise<Locator> {
  // The newest one: earlier replies of the chat are finished already.
  const reply = page.getByRole("listitem").filter({ has: page.getByRole("button", { name: "Regenerate" }) }).last();
  await reply.waitFor({ timeout: REPLY_MS });
  await page.getByRole("button", { name: "Stop", exact: true }).waitFor({ state: "hidden", timeout: REPLY_MS });
  return reply;
}

/** Waits until `target` stops moving: Open WebUI animates blocks open, and a screenshot must show the end state. */
async function settled(target: Locator): Promise<void> {
  let last = "";
  await expect
    .poll(
      async () => {
        const now = JSON.stringify(await target.boundingBox());
        const same = now === last;
        last = now;
        return same;
      },
      { timeout: 15_000, interval: 300 },
    )
    .toBe(true);
}

function expectNoRawMarkup(text: string): void {
  for (const raw of RAW_MARKUP) expect(text, `visible text shows ${raw}`).not.toContain(raw);
}

describe("Open WebUI in a browser", () => {
  it("shows the agent's tool calls, reasoning and answer, and the agent really wrote and ran the file", async () => {
    const answer = "All done: wrote and ran hello.py";
    const reasoning = "The script printed hi, so it works.";
    const page = await newPage(browser);
    try {
      await signIn(page, owui.alice);
      // Through the menu, away and back: the selection is the user's, not a default.
      await pickModel(page, "Open Persona (plan)");
      await expect.poll(() => modelSelector(page).getAttribute("aria-label"), POLL).toBe("Selected model: Open Persona (plan)");
      await pickModel(page, "Open Persona (build)");
      await expect.poll(() => modelSelector(page).getAttribute("aria-label"), POLL).toBe("Selected model: Open Persona (build)");

      await send(
        page,
        script(
          { tool: "write", args: { filePath: "hello.py", content: "print('hi')" } },
          { tool: "bash", args: { command: "python3 hello.py", description: "run hello.py" } },
          { text: answer, reasoning },
        ),
      );
      const reply = await finishedReply(page);

      // The answer is rendered as normal message text (the user's own message holds it too,
      // inside the script, so it is matched exactly).
      await expect.poll(() => reply.getByText(answer, { exact: true }).isVisible(), POLL).toBe(true);
      expect(await reply.locator(".markdown-prose").getByText(answer, { exact: true }).count()).toBe(1);
      const collapsed = await reply.innerText();
      expect(collapsed).toContain("Open Persona (build)");
      // The status line above the finished answer reads as finished.
      expect(collapsed).toContain("Done · ran write, bash");
      expectNoRawMarkup(collapsed);

      // One card per tool, named for it.
      const cards = reply.getByRole("button", { name: /^View Result from / });
      expect(await cards.count()).toBe(2);
      const writeCard = reply.getByRole("button", { name: "View Result from write" });
      const bashCard = reply.getByRole("button", { name: "View Result from bash" });
      await writeCard.waitFor();
      await bashCard.waitFor();

      // Reasoning: a collapsed "Thought for …" block, its text hidden until opened.
      const thought = reply.getByRole("button", { name: /^Thought for/ });
      expect(await thought.getAttribute("aria-expanded")).toBe("false");
      expect(collapsed).not.toContain(reasoning);

      // Cards open to their arguments and results.
      expect(collapsed).not.toContain("print('hi')");
      await writeCard.click();
      await expect.poll(() => reply.innerText(), POLL).toContain("print('hi')");
      await bashCard.click();
      await expect.poll(() => reply.innerText(), POLL).toMatch(/python3 hello\.py[\s\S]*output\s+hi\s/i);
      const expanded = await reply.innerText();
      expect(expanded).toContain("hello.py");
      expectNoRawMarkup(expanded);
      await settled(reply);
      await screenshot(page, "openwebui-tool-calls");

      await thought.click();
      await expect.poll(() => reply.innerText(), POLL).toContain(reasoning);
      expect(await thought.getAttribute("aria-expanded")).toBe("true");
      expectNoRawMarkup(await reply.innerText());
      await settled(reply);
      await screenshot(page, "openwebui-reasoning");

      // The agent did it: the file is in alice's own workspace (bash printed its output above).
      expect(fs.readFileSync(path.join(workspaceOf(owui.alice), "hello.py"), "utf8")).toBe("print('hi')");
    } finally {
      await page.context().close();
    }
  }, 240_000);

  it("hands an image attached in the chat to the agent", async () => {
    const png = solidPng(8, 8, [255, 0, 0]);
    const file = path.join(SHOTS, "..", "red.png");
    fs.writeFileSync(file, png);
    const page = await newPage(browser);
    try {
      await signIn(page, owui.alice);
      // The message box's own file input, as the "+" menu's upload uses it.
      await page.locator('input[type="file"]').first().setInputFiles(file);
      await expect.poll(() => page.getByText("red.png").first().isVisible(), POLL).toBe(true);
      const answer = `I see a red square ${randomUUID().slice(0, 6)}`;
      const before = model.requests.length;
      await send(page, say.text(answer));
      const reply = await finishedReply(page);
      await expect.poll(() => reply.getByText(answer, { exact: true }).isVisible(), POLL).toBe(true);
      // What the model was given for the turn (opencode forwards the attachment as an image part).
      // (Open WebUI's title and tag tasks quote the message too: skip those.)
      const turn = model.requests.slice(before).find((r) => r.lastUserText.includes(answer) && !r.lastUserText.includes("### Task"));
      expect(turn, "the model saw the message").toBeDefined();
      const parts = turn?.body.messages.at(-1)?.content as Array<{ type: string; image_url?: { url: string } }>;
      expect(parts.filter((p) => p.type === "image_url").map((p) => p.image_url!.url)).toEqual([`data:image/png;base64,${png.toString("base64")}`]);
    } finally {
      await page.context().close();
    }
  }, 240_000);

  it("runs a message with an attached document in the chat's own session, with the agent's tools", async () => {
    // Open WebUI puts the document into the message with its RAG template, which starts with
    // "### Task:" like its background tasks do: the turn must still be the chat's.
    const secret = `PURPLE-HIPPO-${randomUUID().slice(0, 6)}`;
    const doc = path.join(SHOTS, "..", "notes.txt");
    fs.writeFileSync(doc, `Launch notes.\nThe launch code is ${secret}.\n`);
    const page = await newPage(browser);
    try {
      await signIn(page, owui.bob);
      await send(page, say.text("first message"));
      await finishedReply(page);
      await page.locator('input[type="file"]').first().setInputFiles(doc);
      await expect.poll(() => page.getByText("notes.txt").first().isVisible(), POLL).toBe(true);
      const before = model.requests.length;
      await send(page, say.write("from-notes.md", "summarised", "Saved the summary."));
      await expect.poll(() => page.getByText("Saved the summary.", { exact: true }).isVisible(), { timeout: REPLY_MS }).toBe(true);
      await finishedReply(page);

      // The agent had its tools (a background task has none) and the document's text.
      expect(fs.readFileSync(path.join(workspaceOf(owui.bob), "from-notes.md"), "utf8")).toBe("summarised");
      const agentCalls = model.requests.slice(before).filter((r) => (r.body.tools ?? []).length > 0);
      expect(agentCalls.length).toBeGreaterThan(0);
      expect(agentCalls[0]!.lastUserText).toContain(secret);
      // …in the same agent session as the chat's first message.
      const turns = sidecar.logs.map((l) => JSON.parse(l) as Record<string, any>).filter((l) => l.msg === "turn started" && l.user === userHash(owui.bob.id));
      const chatTurns = turns.filter((l) => !l.task);
      expect(chatTurns.length).toBeGreaterThanOrEqual(2);
      expect(new Set(chatTurns.slice(-2).map((l) => l.sessionId)).size).toBe(1);
      await screenshot(page, "openwebui-attached-document");
    } finally {
      await page.context().close();
    }
  }, 240_000);

  it("shows an agent error as an error with its message", async () => {
    const message = `quota exceeded ${randomUUID().slice(0, 8)}`;
    const page = await newPage(browser);
    try {
      await signIn(page, owui.bob);
      await send(page, script({ fail: 400, message }));
      const reply = await finishedReply(page);
      await expect.poll(() => reply.innerText(), POLL).toContain(message);
      const text = await reply.innerText();
      expect(text).not.toContain("[object Object]");
      expectNoRawMarkup(text);
      // Not message text (test 1 shows answers live in .markdown-prose): Open WebUI's error box.
      expect((await reply.locator(".markdown-prose").allInnerTexts()).join("")).not.toContain(message);
      await screenshot(page, "openwebui-agent-error");

      // Saved as an error on the message, not as its content. Open WebUI keeps the sidecar's
      // whole error object there ({message, type, code}), not a string.
      const chatId = new URL(page.url()).pathname.match(/^\/c\/([\w-]+)/)?.[1];
      expect(chatId, `chat id in ${page.url()}`).toBeTruthy();
      const chat = await owui.api(owui.bob.token, "GET", `/api/v1/chats/${chatId}`);
      type Saved = { role: string; content: string; error?: { content?: string | { message?: string } } };
      const saved = Object.values(chat.body.chat.history.messages as Record<string, Saved>).find((m) => m.role === "assistant");
      const error = saved?.error?.content;
      expect(typeof error === "string" ? error : error?.message).toContain(message);
      expect(saved?.content).toBe("");

      // Reloaded from that saved form, the page still shows the message, not the object.
      await page.reload();
      const again = await finishedReply(page);
      await expect.poll(() => again.innerText(), POLL).toContain(message);
      expectNoRawMarkup(await again.innerText());
    } finally {
      await page.context().close();
    }
  }, 180_000);

  it("shows the agent's page in a frame sized to it, its images and SVGs in the reply, links its PDFs, and keeps them after a reload", async () => {
    // The page's script changes visible text: seeing the new text proves scripts ran in the frame.
    // Taller than a frame's default 150 px: the frame must grow to show it.
    const pageHtml = `<!doctype html><html><head><title>Report</title></head><body><h1>Quarterly sales</h1><p id="status">script did not run</p><div style="height:400px;background:linear-gradient(#eef,#99c)">Q1 to Q4</div><p id="end">end of report</p><script>document.getElementById("status").textContent = "script ran";</script></body></html>`;
    const svg = `<svg xmlns="http://www.w3.org/2000/svg" width="160" height="80"><rect width="160" height="80" fill="teal"/><circle cx="80" cy="40" r="28" fill="gold"/></svg>`;
    const png = solidPng(64, 32, [30, 90, 200]);
    const pdf = minimalPdf();
    const answer = `Made a page, a chart, an image and a PDF ${randomUUID().slice(0, 6)}`;
    /** The sidecar's signed link to a file of this turn. */
    const link = (name: string, query = "") => new RegExp(`^${sidecar.url.replace(/[.]/g, "\\.")}/v1/artifacts/[^/]+/${name.replace(/[.]/g, "\\.")}${query.replace(/[?]/g, "\\?")}$`);
    const page = await newPage(browser);
    // Tall: the chat scrolls inside the page, so a screenshot shows only what fits the viewport.
    await page.setViewportSize({ width: 1280, height: 2000 });
    try {
      await signIn(page, owui.alice);
      await pickModel(page, "Open Persona (build)");
      await send(
        page,
        script(
          { tool: "write", args: { filePath: "page.html", content: pageHtml } },
          { tool: "write", args: { filePath: "chart.svg", content: svg } },
          { tool: "bash", args: { command: `printf '%s' '${png.toString("base64")}' | base64 -d > dot.png`, description: "make dot.png" } },
          // ASCII: the write tool writes it byte for byte.
          { tool: "write", args: { filePath: "doc.pdf", content: pdf.toString("latin1") } },
          { text: answer },
        ),
      );
      const reply = await finishedReply(page);
      await expect.poll(() => reply.getByText(answer, { exact: true }).isVisible(), POLL).toBe(true);

      /** What a user sees of the artifacts, checked the same way after the reply and after a reload. */
      const expectArtifactsShown = async (reply: Locator) => {
        // The page: Open WebUI's embed, one frame loading the sidecar's link.
        const frames = reply.locator("iframe");
        await expect.poll(() => frames.evaluateAll((els) => els.map((f) => f.getAttribute("src"))), POLL).toEqual([expect.stringMatching(link("page.html", "?embed=1"))]);
        const pageFrame = reply.locator('iframe[src*="/page.html?"]');
        // Open WebUI's default sandbox keeps the frame out of its origin; the sidecar's
        // `Content-Security-Policy: sandbox allow-scripts` makes it an opaque origin even for a
        // user who allows same-origin in Open WebUI's settings.
        expect(await pageFrame.getAttribute("sandbox")).not.toContain("allow-same-origin");
        const inPage = pageFrame.contentFrame();
        await expect.poll(() => inPage.locator("h1").textContent(), POLL).toBe("Quarterly sales");
        await expect.poll(() => inPage.locator("#status").textContent(), POLL).toBe("script ran");
        const frame = await (await pageFrame.elementHandle())!.contentFrame();
        expect(await frame!.evaluate(() => window.origin)).toBe("null");
        // The page told its frame its height: all of it shows, down to its last line.
        const frameBox = async () => (await pageFrame.boundingBox())?.height ?? 0;
        await expect.poll(frameBox, { ...POLL, message: "the frame grew to the page's height" }).toBeGreaterThan(450);

        // Images and SVGs: in the message text (not the model's avatar), loaded from the
        // sidecar's links at their own size. (Sent as a `files` event, Open WebUI 0.12 swaps an
        // http(s) image for its logo, /favicon.png.)
        const images = reply.locator(".chat-assistant img");
        await expect
          .poll(() => images.evaluateAll((imgs) => imgs.length === 2 && imgs.every((i) => (i as HTMLImageElement).complete)), { ...POLL, message: "two images in the reply, loaded" })
          .toBe(true);
        expect(await images.evaluateAll((imgs) => imgs.map((i) => [i.getAttribute("src"), (i as HTMLImageElement).naturalWidth]))).toEqual([
          [expect.stringMatching(link("chart.svg")), 160],
          [expect.stringMatching(link("dot.png")), 64],
        ]);

        // PDFs: a link in the message text.
        const pdfLink = reply.locator('.markdown-prose a[href$="/doc.pdf"]');
        await expect.poll(() => pdfLink.textContent(), POLL).toBe("doc.pdf");
        expect(await pdfLink.getAttribute("href")).toMatch(link("doc.pdf"));

        // Rendered, not shown as text: no markup, event JSON or bare link.
        const text = await reply.innerText();
        expectNoRawMarkup(text);
        for (const raw of ['"embeds"', '"files"', "/v1/artifacts/", "](http"]) expect(text, `visible text shows ${raw}`).not.toContain(raw);
        return pdfLink;
      };

      const pdfLink = await expectArtifactsShown(reply);
      expect(await reply.innerText()).toMatch(/Files from this turn\s+doc\.pdf \(PDF\)/);
      // The link opens without Open WebUI's session or an API key (a browser following it has neither).
      const got = await fetch((await pdfLink.getAttribute("href"))!);
      expect(got.status).toBe(200);
      expect(Buffer.from(await got.arrayBuffer()).equals(pdf)).toBe(true);
      await settled(reply);
      await screenshot(page, "artifacts-reply");

      // Open WebUI saved the embed with the message (and the images are in its text): the chat shows them again.
      await page.reload();
      const again = await finishedReply(page);
      await expectArtifactsShown(again);
      await settled(again);
      await screenshot(page, "artifacts-reloaded");
    } finally {
      await page.context().close();
    }
  }, 240_000);

  it("gives each user their own workspace through the signed JWT, and keeps one session per chat", async () => {
    const reply = async (who: OpenWebUIAccount, content: string, after?: Awaited<ReturnType<typeof sendMessage>>) => {
      const sent = await sendMessage(owui, who, content, { after });
      return { sent, reply: await waitForReply(owui, who, sent, REPLY_MS) };
    };
    const alice = await reply(owui.alice, say.write("alice-note.txt", "from alice"));
    await reply(owui.bob, say.write("bob-note.txt", "from bob"));

    const aliceDir = workspaceOf(owui.alice);
    const bobDir = workspaceOf(owui.bob);
    expect(aliceDir).not.toBe(bobDir);
    expect(fs.readFileSync(path.join(aliceDir, "alice-note.txt"), "utf8")).toBe("from alice");
    expect(fs.readFileSync(path.join(bobDir, "bob-note.txt"), "utf8")).toBe("from bob");
    expect(fs.existsSync(path.join(aliceDir, "bob-note.txt"))).toBe(false);
    expect(fs.existsSync(path.join(bobDir, "alice-note.txt"))).toBe(false);

    // The model sees both user messages only if the chat's opencode session went on.
    const second = await reply(owui.alice, say.countTurns(), alice.sent);
    expect(outputText(second.reply).trim()).toBe("turns=2");

    // The identity above can only have come from the JWT: an unsigned claim is refused.
    const unsigned = await fetch(`${sidecar.url}/v1/chat/completions`, {
      method: "POST",
      headers: { authorization: `Bearer ${GATEWAY_KEY}`, "content-type": "application/json", "x-openwebui-user-id": owui.alice.id },
      body: JSON.stringify({ model: "open-persona/build", messages: [{ role: "user", content: "hi" }] }),
    });
    expect(unsigned.status).toBe(400);
    expect((await unsigned.json()).error.message).toMatch(/X-OpenWebUI-User-Jwt/);
  }, 240_000);
});
