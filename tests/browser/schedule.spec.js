// The schedule: an admin creates a slot, changes its capacity and closes
// it, and reads what each change did to the patients.

import { test, expect } from "@playwright/test";
import { BASE, KEYS, book, signedIn, unique } from "./helpers.js";

test("create a slot, change its capacity, close it", async ({ page }) => {
  const doctor = unique("SCH");
  await signedIn(page, "/schedule", KEYS.admin);
  const form = page.getByRole("region", { name: "New slot" });
  await form.getByLabel("Doctor id").fill(doctor);
  await form.getByLabel("Starts").fill("14:00");
  await form.getByLabel("Ends").fill("15:00");
  await form.getByLabel("Capacity").fill("1");
  await form.getByRole("button", { name: "Create slot" }).click();
  const today = await page.locator("#create-date").inputValue();
  const slotId = `${doctor}-${today}-1400`;
  await expect(page.locator("#create-result")).toHaveText(
    `Slot ${slotId} created: doctor ${doctor}, ${today} 14:00–15:00, capacity 1.`
  );
  const row = page.getByRole("row", { name: new RegExp(slotId) });
  await expect(row).toContainText("0 / 1");

  // Creating it again is refused in words.
  await form.getByLabel("Doctor id").fill(doctor);
  await form.getByRole("button", { name: "Create slot" }).click();
  await expect(page.locator("#create-result")).toHaveText(`A slot with the id ${slotId} already exists.`);

  // Two bookings: the second waits; raising capacity promotes it.
  await book(BASE, `${doctor}-P1`, slotId, "ONLINE");
  await book(BASE, `${doctor}-P2`, slotId, "ONLINE");
  await expect(row).toContainText("1 / 1");
  await row.getByLabel(`Capacity of ${slotId}`, { exact: true }).fill("2");
  await row.getByRole("button", { name: `Change capacity of ${slotId}` }).click();
  await expect(page.locator("#slot-result")).toContainText(`${slotId}: capacity 1 → 2.`);
  await expect(page.locator("#slot-result .changes")).toHaveText(`${doctor}-P2 got a seat from the waitlist.`);
  await expect(row).toContainText("2 / 2");

  // Closing: neither patient came, so both become no-shows.
  page.once("dialog", (dialog) => dialog.accept());
  await row.getByRole("button", { name: `Close slot ${slotId}` }).click();
  await expect(page.locator("#slot-result")).toContainText(`${slotId} is closed.`);
  await expect(page.locator("#slot-result .changes li")).toHaveText([
    `${doctor}-P1 was marked as a no-show.`,
    `${doctor}-P2 was marked as a no-show.`,
  ]);
  await expect(row).toContainText(/closed at \d\d:\d\d/);
  await expect(row.getByRole("button", { name: `Close slot ${slotId}` })).toBeDisabled();
  await expect(row.getByLabel(`Capacity of ${slotId}`, { exact: true })).toBeDisabled();
});
