// A whole OPD day through the pages, with a desk, a doctor and the hall's
// board open at once: a booking into a full slot and its bump explained,
// check-in, call next, and the board showing and announcing the call.

import { test, expect } from "@playwright/test";
import { BASE, KEYS, bookAtDesk, recordSpeech, signedIn, slot, unique } from "./helpers.js";

test("desk, doctor and board through one morning", async ({ browser }) => {
  const doctor = unique("DAY");
  const slotId = await slot(BASE, doctor, { capacity: 2 });
  const [first, second, paid] = ["A", "B", "C"].map((name) => `${doctor}-P${name}`);

  const boardContext = await browser.newContext({ viewport: { width: 1920, height: 1080 } });
  const board = await boardContext.newPage();
  await recordSpeech(board);
  await signedIn(board, `/board?doctorId=${doctor}`, KEYS.viewer);
  const card = board.locator(`.board-card[data-doctor="${doctor}"]`);
  await expect(card.locator(".number")).toHaveText("—");
  await expect(board.locator("#live")).toHaveText("● Live");

  const desk = await (await browser.newContext()).newPage();
  await signedIn(desk, "/desk", KEYS.desk1);
  const doctorPage = await (await browser.newContext()).newPage();
  await signedIn(doctorPage, `/doctor?doctorId=${doctor}`, KEYS.desk2);
  await expect(doctorPage.getByRole("heading", { name: `Doctor ${doctor}` })).toBeVisible();

  // The slot fills with two online bookings; a paid one bumps the later.
  const result = desk.locator("#book-result");
  await bookAtDesk(desk, first, slotId, "ONLINE");
  await expect(result).toContainText(`${first} (token 1) has a seat in ${slotId}`);
  await bookAtDesk(desk, second, slotId, "ONLINE");
  await expect(result).toContainText(`${second} (token 2) has a seat`);
  await bookAtDesk(desk, paid, slotId, "PAID");
  await expect(result).toContainText(`${paid} (token 3) has a seat in ${slotId}: the slot was full`);
  await expect(result.locator(".changes")).toHaveText(`${second} moved to the waitlist: a PAID booking outranked them.`);
  // The slot's row says full, and the doctor's page lists the waitlist.
  await expect(desk.getByRole("row", { name: new RegExp(slotId) })).toContainText("2 / 2");
  await expect(doctorPage.locator("#others")).toContainText(second);

  // The first patient arrives.
  await desk.getByLabel("Token id or patient id").fill(first);
  await desk.getByRole("button", { name: "Find" }).click();
  await desk.getByRole("button", { name: `Check in token 1 (${first})` }).first().click();
  await expect(desk.locator("#action-result")).toContainText(`${first} (token 1) is in the hall, number 1 in the doctor's queue.`);
  await expect(doctorPage.locator("#call-queue")).toContainText(first);
  await expect(card.locator(".waiting-count")).toHaveText("1");

  // The doctor calls: the board shows it within two seconds and says it once.
  await doctorPage.keyboard.press("n");
  await expect(doctorPage.locator("#now")).toContainText("Token 1");
  await expect(card.locator(".number")).toHaveText("1", { timeout: 2_000 });
  await expect(card.locator(".state")).toHaveText("Please go in");
  await expect.poll(() => board.evaluate(() => window.__spoken.length)).toBe(1);
  await board.waitForTimeout(1_500);
  expect(await board.evaluate(() => window.__spoken)).toEqual([{ text: `Token 1, Doctor ${doctor}`, lang: "en-IN" }]);
});
