// Screenshots of every page for the README, taken on a server of their
// own with the demo schedule's doctors D1–D3 after a morning's work: the
// board at the hall TV's 1920×1080, the consoles at a desk monitor's
// 1440×900.

import { test, expect } from "@playwright/test";
import { mkdirSync } from "node:fs";
import { dirname, join } from "node:path";
import { fileURLToPath } from "node:url";
import { KEYS, OwnServer, act, api, book, bookAtDesk, recordSpeech, signedIn } from "./helpers.js";

const DIRECTORY = process.env.SCREENSHOT_DIR || join(dirname(fileURLToPath(import.meta.url)), "../../docs/screenshots");

test("every page, after a morning at the demo clinic", async ({ browser }) => {
  mkdirSync(DIRECTORY, { recursive: true });
  const server = await OwnServer.start();
  try {
    await morning(browser, server.base);
  } finally {
    await server.dispose();
  }
});

async function morning(browser, base) {
  // A morning: patients booked into the demo slots, some arrived, one
  // with each doctor.
  const patients = {};
  const morning = [
    ["D1-09", "ONLINE"], ["D1-09", "ONLINE"], ["D1-09", "PAID"], ["D1-09", "WALK_IN"], ["D1-09", "FOLLOW_UP"],
    ["D2-09", "ONLINE"], ["D2-09", "WALK_IN"], ["D2-09", "EMERGENCY"], ["D2-10", "ONLINE"],
    ["D3-09", "FOLLOW_UP"], ["D3-09", "ONLINE"], ["D3-10", "PAID"],
  ];
  let n = 0;
  for (const [slotId, source] of morning) {
    n += 1;
    const patientId = `P${100 + n}`;
    patients[patientId] = await book(base, patientId, slotId, source);
  }
  for (const token of Object.values(patients)) {
    if (token.status === "ALLOCATED" && token.tokenNumber % 4 !== 0) await act(base, token.tokenId, "check-in");
  }
  for (const doctor of ["D1", "D2", "D3"]) {
    await api(base, KEYS.desk1, "POST", `/doctors/${doctor}/call-next`, undefined, [200, 409]);
  }
  const d2 = await api(base, KEYS.desk1, "GET", "/doctors/D2/queue");
  if (d2.current?.status === "CALLED") await act(base, d2.current.tokenId, "start");

  const shoot = async (name, path, key, viewport, prepare = async () => {}) => {
    const context = await browser.newContext({ viewport });
    const page = await context.newPage();
    await recordSpeech(page);
    await signedIn(page, `${base}${path}`, key);
    await prepare(page);
    await page.screenshot({ path: join(DIRECTORY, `${name}.png`), fullPage: name === "desk" });
    await context.close();
  };
  const desk = { width: 1440, height: 900 };
  await shoot("desk", "/desk", KEYS.desk1, desk, async (page) => {
    await expect(page.getByText("● Live")).toBeVisible();
    await bookAtDesk(page, "P120", "D1-09", "PAID");
    await expect(page.locator("#book-result .changes")).toBeVisible();
    await page.getByRole("button", { name: "D1-09" }).click();
    await expect(page.getByRole("table").filter({ hasText: "Waitlist (" })).toBeVisible();
  });
  await shoot("doctor", "/doctor?doctorId=D1", KEYS.desk2, desk, async (page) => {
    await expect(page.locator("#now .number")).toBeVisible();
  });
  await shoot("board", "/board?doctorId=D1&doctorId=D2&doctorId=D3", KEYS.viewer, { width: 1920, height: 1080 }, async (page) => {
    await expect(page.locator(".board-card")).toHaveCount(3);
    await expect(page.getByText("● Live")).toBeVisible();
  });
  await shoot("board-hindi", "/board?doctorId=D1&doctorId=D2&doctorId=D3&lang=hi", KEYS.viewer, { width: 1920, height: 1080 }, async (page) => {
    await expect(page.locator(".board-card")).toHaveCount(3);
    await expect(page.getByText("● लाइव")).toBeVisible();
  });
  await shoot("schedule", "/schedule", KEYS.admin, desk, async (page) => {
    await expect(page.getByRole("row", { name: /D1-09/ })).toBeVisible();
  });
  const context = await browser.newContext({ viewport: { width: 1280, height: 720 } });
  const page = await context.newPage();
  await page.goto(`${base}/`);
  await page.screenshot({ path: join(DIRECTORY, "start.png") });
  await context.close();
}
