/**
 * Debian's chromium driven by playwright-core, for tests that look at the real Open WebUI
 * page. Never a downloaded browser: the machine is offline (loopback only), so the flags
 * also switch off everything chromium would fetch by itself.
 */
import fs from "node:fs";
import { chromium, type Browser, type Page } from "playwright-core";

export const CHROMIUM = "/usr/bin/chromium";

const FLAGS = [
  "--headless",
  "--no-sandbox", // tests may run as root, where chromium's sandbox refuses to start
  "--disable-gpu",
  "--disable-quic",
  "--no-first-run",
  "--disable-background-networking",
  "--disable-component-update",
  "--disable-sync",
];

/**
 * A headless chromium. playwright gives every launch a fresh temporary user-data dir (and
 * deletes it on close), and every {@link newPage} its own context: no state leaks between
 * runs or tests.
 */
export async function launchBrowser(): Promise<Browser> {
  if (!fs.existsSync(CHROMIUM)) throw new Error(`${CHROMIUM} is missing: install Debian's chromium package`);
  return chromium.launch({ executablePath: CHROMIUM, headless: true, args: FLAGS, timeout: 60_000 });
}

/** A page in a new, empty context (own cookies and storage), with a default deadline for every wait. */
export async function newPage(browser: Browser, timeoutMs = 60_000): Promise<Page> {
  const context = await browser.newContext({ viewport: { width: 1280, height: 900 } });
  context.setDefaultTimeout(timeoutMs);
  context.setDefaultNavigationTimeout(timeoutMs);
  return context.newPage();
}
