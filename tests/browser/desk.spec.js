// The front desk: two desks on one slot see each other's work at once;
// finding a token, checking in, cancelling and no-shows, with outcomes and
// refusals in plain words.

import { test, expect } from "@playwright/test";
import { BASE, KEYS, book, bookAtDesk, signedIn, slot, unique } from "./helpers.js";

test("two desks: what one books and cancels shows on the other's screen", async ({ browser }) => {
  const doctor = unique("DSK");
  const slotId = await slot(BASE, doctor, { capacity: 1 });
  const deskA = await (await browser.newContext()).newPage();
  const deskB = await (await browser.newContext()).newPage();
  await signedIn(deskA, "/desk", KEYS.desk1);
  await signedIn(deskB, "/desk", KEYS.desk2);
  await expect(deskB.locator("#live")).toHaveText("● Live");
  await deskB.getByRole("button", { name: slotId, exact: true }).click();
  await expect(deskB.locator("#slot-detail")).toContainText("0 of 1 seats used");

  const [seated, waiting] = [`${doctor}-P1`, `${doctor}-P2`];
  await bookAtDesk(deskA, seated, slotId, "WALK_IN");
  await expect(deskA.locator("#book-result")).toContainText(`${seated} (token 1)`);
  await bookAtDesk(deskA, waiting, slotId, "WALK_IN");
  await expect(deskA.locator("#book-result")).toContainText(
    `${waiting} (token 2) is on the waitlist of ${slotId}, position 1`
  );

  // Desk B did nothing, yet its screen has both bookings.
  const rowB = deskB.getByRole("row", { name: new RegExp(slotId) }).first();
  await expect(rowB).toContainText("1 / 1");
  await expect(deskB.locator("#slot-detail")).toContainText(seated);
  await expect(deskB.locator("#slot-detail")).toContainText(waiting);
  await expect(deskB.locator("#feed")).toContainText(`${slotId} token 2: on the waitlist`);

  // Desk B cancels the seated patient; the waitlisted one is promoted, and
  // desk A sees it.
  deskB.once("dialog", (dialog) => dialog.accept());
  await deskB.getByRole("button", { name: `Cancel token 1 (${seated})` }).click();
  await expect(deskB.locator("#action-result")).toContainText(`${seated} (token 1) is cancelled.`);
  await expect(deskB.locator("#action-result .changes")).toHaveText(`${waiting} got a seat from the waitlist.`);
  await deskA.getByRole("button", { name: slotId, exact: true }).click();
  await expect(deskA.locator("#slot-detail")).toContainText("Waitlist (0)");
  await expect(deskA.locator("#slot-detail").getByRole("row", { name: new RegExp(waiting) })).toContainText("booked, not arrived");
});

test("find a token by id or patient, check in, no-show, and refusals in plain words", async ({ page }) => {
  const doctor = unique("FND");
  const slotId = await slot(BASE, doctor, { capacity: 2 });
  const patient = `${doctor}-P1`;
  const token = await book(BASE, patient, slotId, "FOLLOW_UP");
  await signedIn(page, "/desk", KEYS.desk1);

  // By token id: the card with its history.
  await page.getByLabel("Token id or patient id").fill(token.tokenId);
  await page.getByRole("button", { name: "Find" }).click();
  const card = page.getByRole("article", { name: `Token 1 of ${patient}` });
  await expect(card).toContainText("booked, not arrived");
  await card.getByText("History").click();
  await expect(card.locator(".history")).toContainText("booked, not arrived (given a seat, desk-1)");

  // Checking in updates the card in place.
  await card.getByRole("button", { name: `Check in token 1 (${patient})` }).click();
  await expect(page.locator("#action-result")).toContainText("is in the hall, number 1 in the doctor's queue");
  await expect(card).toContainText("Place in queue");

  // Booking the same patient again is refused in words, not codes.
  await page.getByLabel("Patient id", { exact: true }).fill(patient);
  await page.getByRole("combobox", { name: "Slot", exact: true }).selectOption(slotId);
  await page.getByRole("button", { name: "Book", exact: true }).click();
  await expect(page.locator("#book-result")).toHaveText("This patient already has an active token in this slot.");

  // By patient id, then a no-show (after confirming).
  const other = `${doctor}-P2`;
  await book(BASE, other, slotId, "ONLINE");
  await page.getByLabel("Token id or patient id").fill(other);
  await page.getByRole("button", { name: "Find" }).click();
  const otherCard = page.getByRole("article", { name: `Token 2 of ${other}` });
  await expect(otherCard).toBeVisible();
  page.once("dialog", (dialog) => dialog.accept());
  await otherCard.getByRole("button", { name: `No-show token 2 (${other})` }).click();
  await expect(page.locator("#action-result")).toContainText(`${other} (token 2) is marked as a no-show.`);
  await expect(otherCard.locator(".status")).toHaveText("no-show");
  await expect(otherCard.locator(".actions")).toHaveCount(0);

  await page.getByLabel("Token id or patient id").fill(`${doctor}-NOBODY`);
  await page.getByRole("button", { name: "Find" }).click();
  await expect(page.locator("#find-result")).toHaveText(`No token of ${doctor}-NOBODY in today's slots.`);
});
