// The doctor's page with a doctor key: the queue, and Call next, Start,
// Complete and Skip by keyboard, with DOCTOR_BUSY and QUEUE_EMPTY as plain
// messages.

import { test, expect } from "@playwright/test";
import { BASE, KEYS, act, book, signedIn, slot } from "./helpers.js";

test("a doctor works through the queue by keyboard", async ({ page }) => {
  // The doctor key belongs to doctor WARD (see api-keys.test).
  const slotId = await slot(BASE, "WARD", { capacity: 5 });
  const first = await book(BASE, "WARD-P1", slotId, "ONLINE");
  const second = await book(BASE, "WARD-P2", slotId, "ONLINE");
  await book(BASE, "WARD-P3", slotId, "WALK_IN");
  await act(BASE, first.tokenId, "check-in");
  await act(BASE, second.tokenId, "check-in");

  await signedIn(page, "/doctor", KEYS.doctorWard);
  await expect(page.getByRole("heading", { name: "Doctor WARD" })).toBeVisible();
  await expect(page.locator("#choose-doctor")).toBeHidden();
  const queue = page.locator("#call-queue");
  await expect(queue.getByRole("row", { name: /WARD-P1/ })).toContainText(/^1\s*1\s*WARD-P1/);
  await expect(queue.getByRole("row", { name: /WARD-P2/ })).toContainText(/\d\d:\d\d$/);
  await expect(page.locator("#others")).toContainText("WARD-P3");
  const message = page.locator("#message");
  const now = page.locator("#now");

  await page.keyboard.press("n");
  await expect(now).toContainText("Token 1");
  await expect(now).toContainText("WARD-P1");
  await expect(message).toHaveText("Token 1 (WARD-P1) is called.");

  await page.keyboard.press("n");
  await expect(message).toHaveText("Token 1 is still with you. Complete or skip it before calling the next patient.");
  await expect(message).not.toHaveClass(/error/);

  await page.keyboard.press("s");
  await expect(now).toContainText("In consultation");
  await page.keyboard.press("c");
  await expect(message).toHaveText("Token 1 (WARD-P1) is seen.");
  await expect(page.locator("#counts")).toContainText("Seen: 1");

  await page.keyboard.press("n");
  await expect(now).toContainText("Token 2");
  await page.keyboard.press("k");
  await expect(message).toHaveText("Token 2 (WARD-P2) was skipped and can come back to the desk.");
  await expect(page.locator("#others").getByRole("table").filter({ hasText: "Skipped (1)" })).toContainText("WARD-P2");

  await page.getByRole("button", { name: "Call next" }).click();
  await expect(message).toHaveText("Nobody is waiting in the hall: no patient has checked in yet.");
  await expect(now).toContainText("Nobody is with the doctor");
});
