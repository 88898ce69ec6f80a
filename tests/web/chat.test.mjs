// Browser tests of the web client (web/): two users in two browser contexts chat through the real
// server. CHAT_WEB_BASE is the server's origin; CHAT_WEB_SCREENSHOT, where to write the README picture.
// Run by tests/e2e/tests/web_client.rs (scripts/test.sh), against the all-in-one binary and the gateway.

import { test, before, after } from "node:test";
import assert from "node:assert/strict";
import { chromium } from "playwright-core";

const BASE = process.env.CHAT_WEB_BASE;
const SHOT = process.env.CHAT_WEB_SCREENSHOT;
const WAIT = { timeout: 15000 };
assert.ok(BASE, "set CHAT_WEB_BASE to the server's origin, e.g. http://127.0.0.1:8080");

let browser;
before(async () => {
  browser = await chromium.launch({
    executablePath: process.env.CHROMIUM || "/usr/bin/chromium",
    args: ["--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
      "--disable-background-networking", "--disable-component-update", "--disable-sync"],
  });
});
after(async () => browser && (await browser.close()));

const unique = (p) => `${p}_${Math.random().toString(36).slice(2, 10)}`;

async function openUser(name, viewport = { width: 1100, height: 720 }) {
  const context = await browser.newContext({ viewport });
  const page = await context.newPage();
  page.on("dialog", (d) => d.accept());
  const errors = [];
  page.on("pageerror", (e) => errors.push(e));
  await page.goto(BASE);
  await page.getByLabel("Username").fill(name);
  await page.getByLabel("Password").fill("correct horse 1");
  await page.getByRole("button", { name: "Register" }).click();
  await page.locator("#me").filter({ hasText: name }).waitFor(WAIT);
  await page.locator("#connection[data-state=online]").waitFor({ ...WAIT, state: "attached" });
  return { context, page, name, errors };
}

const messageBodies = (page) => page.locator("#messages li.msg:not(.pending) .body").allTextContents();

async function waitForMessage(page, text) {
  await page.locator("#messages li.msg:not(.pending) .body", { hasText: text }).first().waitFor(WAIT);
}

async function send(page, text) {
  await page.getByLabel("Message", { exact: true }).fill(text);
  await page.getByRole("button", { name: "Send" }).click();
  await waitForMessage(page, text);
}

async function startDirect(page, other) {
  await page.getByPlaceholder("Find people…").fill(other);
  await page.getByRole("button", { name: `Message ${other}` }).click();
  await page.locator("#title").waitFor(WAIT);
}

async function token(page) {
  return page.evaluate(() => JSON.parse(sessionStorage.getItem("chat.session")).access);
}

test("two users chat: messages, unread, typing, presence, read markers, edit and delete", async () => {
  const a = await openUser(unique("ann"));
  const b = await openUser(unique("bob"));
  await startDirect(a.page, b.name);
  await send(a.page, "Hello Bob!");

  // Bob is not looking at the conversation: it shows up with an unread badge and the last message.
  const bobItem = b.page.locator("#conversations button", { hasText: a.name });
  await bobItem.filter({ hasText: "Hello Bob!" }).waitFor(WAIT);
  await b.page.locator("#conversations .badge", { hasText: "1" }).waitFor(WAIT);
  // Presence: Ann sees Bob online.
  await a.page.locator("#subtitle", { hasText: "online" }).waitFor(WAIT);
  await a.page.locator("#conversations .dot.online").waitFor(WAIT);

  await bobItem.click();
  await waitForMessage(b.page, "Hello Bob!");
  assert.equal(await b.page.locator("#conversations .badge").count(), 0, "read once opened");
  // Read marker: Ann sees that Bob has seen her message.
  await a.page.locator("#messages .seen", { hasText: `Seen by ${b.name}` }).waitFor(WAIT);

  // Typing shows on the other side.
  await b.page.getByLabel("Message", { exact: true }).pressSequentially("typing...", { delay: 20 });
  await a.page.locator("#typing", { hasText: `${b.name} is typing` }).waitFor(WAIT);
  await b.page.getByRole("button", { name: "Send" }).click();
  await waitForMessage(a.page, "typing...");
  await a.page.waitForFunction(() => document.getElementById("typing").textContent === "", null, WAIT);

  // Edit and delete reach the other side.
  await send(a.page, "tpyo here");
  await waitForMessage(b.page, "tpyo here");
  const mine = a.page.locator("#messages li.msg.mine", { hasText: "tpyo here" });
  await mine.getByRole("button", { name: "Edit message" }).click();
  await a.page.getByLabel("Edited message").fill("typo fixed");
  await a.page.getByRole("button", { name: "Save" }).click();
  await b.page.locator("#messages li.msg", { hasText: "typo fixed" }).filter({ hasText: "(edited)" }).waitFor(WAIT);
  await a.page.locator("#messages li.msg.mine", { hasText: "typo fixed" }).getByRole("button", { name: "Delete message" }).click();
  await b.page.locator("#messages li.msg.deleted", { hasText: "message deleted" }).waitFor(WAIT);

  // A reload keeps the session and the history.
  await a.page.reload();
  await a.page.locator("#conversations button", { hasText: b.name }).click();
  await waitForMessage(a.page, "Hello Bob!");
  await waitForMessage(a.page, "typing...");

  await send(a.page, "Dinner at 7 tonight?");
  await waitForMessage(b.page, "Dinner at 7 tonight?");
  await send(b.page, "Perfect, see you there");
  await waitForMessage(a.page, "Perfect, see you there");
  await a.page.locator("#messages .seen", { hasText: `Seen by ${b.name}` }).waitFor(WAIT);
  if (SHOT) await a.page.screenshot({ path: SHOT });
  assert.deepEqual([...a.errors, ...b.errors], [], "no script errors");
  await a.context.close();
  // Ann closed her tab: Bob sees her offline with a last-seen time.
  await b.page.locator("#subtitle", { hasText: "last seen" }).waitFor(WAIT);
  await b.context.close();
});

test("going offline and back delivers what was missed; history scrolls back", async () => {
  const a = await openUser(unique("cat"));
  const b = await openUser(unique("dan"));
  await startDirect(a.page, b.name);
  await send(a.page, "before offline");
  await b.page.locator("#conversations button", { hasText: a.name }).click();
  await waitForMessage(b.page, "before offline");

  await b.context.setOffline(true);
  await b.page.locator("#connection[data-state=offline]").waitFor(WAIT);
  for (const t of ["missed one", "missed two", "missed three"]) await send(a.page, t);
  await b.context.setOffline(false);
  for (const t of ["missed one", "missed two", "missed three"]) await waitForMessage(b.page, t);
  const bodies = await messageBodies(b.page);
  assert.deepEqual(bodies.slice(-4), ["before offline", "missed one", "missed two", "missed three"], "in order, once each");

  // 70 more messages over REST: the page shows the latest 50 and loads the rest when scrolled up.
  // Each post takes the page's current access token (it refreshes short-lived ones as they near
  // expiry); a token that expired on the way is answered 401 and the post waits for the page's next
  // token instead of depending on how fast this machine is.
  const cid = await b.page.locator("#conversations button[aria-current=true]").getAttribute("data-cid");
  for (let i = 0; i < 70; i++) {
    let r;
    for (let attempt = 0; attempt < 20; attempt++) {
      const t = await token(a.page);
      r = await fetch(`${BASE}/v1/conversations/${cid}/messages`, {
        method: "POST",
        headers: { authorization: `Bearer ${t}`, "content-type": "application/json" },
        body: JSON.stringify({ body: `bulk ${i}`, client_msg_id: `bulk-${i}` }),
      });
      if (r.status !== 401) break;
      await a.page.waitForFunction((old) => JSON.parse(sessionStorage.getItem("chat.session")).access !== old, t, WAIT);
    }
    assert.equal(r.status, 201);
  }
  await b.page.reload();
  await b.page.locator("#conversations button", { hasText: a.name }).click();
  await waitForMessage(b.page, "bulk 69");
  assert.equal((await messageBodies(b.page)).length, 50, "the latest page");
  await b.page.locator("#messages").evaluate((box) => (box.scrollTop = 0));
  await waitForMessage(b.page, "before offline");
  const all = await messageBodies(b.page);
  assert.equal(all.length, 74, "every message after scrolling back");
  assert.deepEqual([...a.errors, ...b.errors], [], "no script errors");
  await a.context.close();
  await b.context.close();
});

test("access tokens are refreshed before they expire; the socket stays up", { skip: !process.env.CHAT_WEB_TOKEN_TTL }, async () => {
  const ttl = Number(process.env.CHAT_WEB_TOKEN_TTL) * 1000;
  const a = await openUser(unique("gil"));
  const b = await openUser(unique("hal"));
  await startDirect(a.page, b.name);
  await send(a.page, "before the refresh");
  const first = await token(a.page);
  await a.page.waitForFunction((old) => JSON.parse(sessionStorage.getItem("chat.session")).access !== old, first, { timeout: 2 * ttl });
  // Past the first token's lifetime: REST and the live connection work on the new one.
  await a.page.waitForTimeout(ttl);
  await send(a.page, "after the refresh");
  await b.page.locator("#conversations button", { hasText: a.name }).click();
  await waitForMessage(b.page, "after the refresh");
  await a.page.locator("#connection[data-state=online]").waitFor({ ...WAIT, state: "attached" });
  assert.deepEqual([...a.errors, ...b.errors], [], "no script errors");
  await a.context.close();
  await b.context.close();
});

test("groups and a phone-sized screen", async () => {
  const a = await openUser(unique("eve"));
  const b = await openUser(unique("fay"), { width: 390, height: 844 });
  await a.page.getByPlaceholder("Find people…").fill(b.name);
  await a.page.getByRole("button", { name: `Add ${b.name} to a new group` }).click();
  await a.page.getByLabel("Group title").fill("Weekend plans");
  await a.page.getByRole("button", { name: "Create group" }).click();
  await a.page.locator("#title", { hasText: "Weekend plans" }).waitFor(WAIT);
  await send(a.page, "Hiking on Saturday?");

  // On a phone the list fills the screen; a conversation replaces it, and Back returns.
  const item = b.page.locator("#conversations button", { hasText: "Weekend plans" });
  await item.waitFor(WAIT);
  assert.equal(await b.page.locator("#pane").isVisible(), false);
  await item.click();
  await waitForMessage(b.page, "Hiking on Saturday?");
  assert.equal(await b.page.locator("#sidebar").isVisible(), false);
  await send(b.page, "Count me in");
  await waitForMessage(a.page, "Count me in");
  await b.page.getByRole("button", { name: "Back to conversations" }).click();
  await item.waitFor(WAIT);
  assert.deepEqual([...a.errors, ...b.errors], [], "no script errors");
  await a.context.close();
  await b.context.close();
});
