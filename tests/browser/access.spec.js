// Who may use which page, sign-in by keyboard alone, and an automated
// accessibility check (axe-core) of every page.

import { test, expect } from "@playwright/test";
import AxeBuilder from "@axe-core/playwright";
import { BASE, KEYS, api, signedIn } from "./helpers.js";

test("a viewer key cannot act: the consoles refuse it at sign-in", async ({ page }) => {
  for (const [path, why] of [
    ["/desk", "The front desk needs a front-desk or admin key; this one is viewer."],
    ["/doctor", "The doctor's page needs a doctor key, or a front-desk or admin key to choose a doctor; this one is viewer."],
    ["/schedule", "The schedule needs an admin key; this one is viewer."],
  ]) {
    await page.goto(path);
    const dialog = page.getByRole("dialog", { name: "Sign in" });
    await dialog.getByLabel("API key").fill(KEYS.viewer);
    await dialog.getByLabel("API key").press("Enter");
    await expect(dialog.getByRole("alert")).toHaveText(why);
    await expect(dialog).toBeVisible();
  }
  // Nor can it act through the API the pages use.
  const refused = await api(BASE, KEYS.viewer, "POST", "/tokens", { patientId: "V1", slotId: "D1-09", source: "ONLINE" }, [403]);
  expect(refused.code).toBe("FORBIDDEN");
});

test("an unknown key is refused, and signing in takes only the keyboard", async ({ page }) => {
  await page.goto("/desk");
  // The skip link comes first; the dialog holds the focus on the key field.
  await expect(page.getByLabel("API key")).toBeFocused();
  await page.keyboard.type("not-a-key-of-this-server");
  await page.keyboard.press("Enter");
  await expect(page.getByRole("alert")).toHaveText("The server does not know this key. Check it and try again.");
  await page.getByLabel("API key").fill(KEYS.desk1);
  await page.keyboard.press("Tab");
  await expect(page.getByRole("button", { name: "Sign in" })).toBeFocused();
  await page.keyboard.press("Enter");
  await expect(page.getByText("Signed in as desk-1 (front-desk)")).toBeVisible();
  // The key is in this tab's session storage only, never in the URL.
  expect(page.url()).not.toContain(KEYS.desk1);
  expect(await page.evaluate(() => Object.keys(localStorage).length)).toBe(0);
  // A reload keeps the tab signed in; signing out forgets the key.
  await page.reload();
  await expect(page.getByText("Signed in as desk-1 (front-desk)")).toBeVisible();
  await page.getByRole("button", { name: "Sign out" }).click();
  await expect(page.getByRole("dialog", { name: "Sign in" })).toBeVisible();
  expect(await page.evaluate(() => sessionStorage.length)).toBe(0);
});

test("no page has a serious accessibility violation", async ({ browser }) => {
  const pages = [
    ["/", null],
    ["/desk", KEYS.desk1],
    ["/doctor?doctorId=D1", KEYS.desk1],
    ["/board", KEYS.viewer],
    ["/board?lang=hi", KEYS.viewer],
    ["/schedule", KEYS.admin],
    ["/reports", KEYS.viewer],
  ];
  for (const [path, key] of pages) {
    // axe is injected as an inline script, which the pages' policy forbids.
    const context = await browser.newContext({ bypassCSP: true });
    const page = await context.newPage();
    if (key) {
      await signedIn(page, path, key);
      await expect(page.locator("#live")).toHaveText(/Live|लाइव/);
    } else {
      await page.goto(path);
    }
    const results = await new AxeBuilder({ page }).withTags(["wcag2a", "wcag2aa", "wcag21a", "wcag21aa"]).analyze();
    const serious = results.violations.filter((violation) => ["serious", "critical"].includes(violation.impact));
    expect(
      serious.map((violation) => `${violation.id}: ${violation.nodes.map((node) => node.target.join(" ")).join(", ")}`),
      path
    ).toEqual([]);
    await context.close();
  }
});
