// Loads the relay's status page in headless Chromium, waits until it shows
// the expected pending count and one dead letter, clicks that letter's retry
// button and waits for the table to empty. Usage:
//   node status_page.mjs URL EXPECTED_PENDING EVENT_ID
// Exits 0 when every step held, 1 with a message otherwise.
import { chromium } from "playwright-core";

const [url, expectedPending, eventId] = process.argv.slice(2);
const browser = await chromium.launch({
  executablePath: process.env.CHROMIUM || "/usr/bin/chromium",
  args: [
    "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
    "--disable-background-networking", "--disable-component-update", "--disable-sync",
  ],
});
try {
  const page = await browser.newPage();
  await page.goto(url);
  await page.waitForFunction(
    (want) => document.getElementById("pending").textContent === want,
    expectedPending, { timeout: 20000 });
  const row = page.locator("#letters tr", { hasText: eventId });
  await row.waitFor({ timeout: 20000 });
  await row.locator("button.retry").click();
  await page.waitForFunction(
    () => document.querySelectorAll("#letters tr").length === 0, null, { timeout: 20000 });
  console.log("status page: pending shown, retry clicked, dead letters empty");
} catch (err) {
  console.error("status page check failed:", err.message);
  process.exitCode = 1;
} finally {
  await browser.close();
}
