// The day report: a day scripted through the API on a server of the
// test's own shows its figures, its charts (SVG drawn by the page, which
// the Content-Security-Policy must not block) and its range; a front-desk
// key is refused. Then the README's screenshot, of a morning at the demo
// clinic played on a server whose clock runs 360 times faster.

import { test, expect } from "@playwright/test";
import { existsSync, mkdirSync } from "node:fs";
import { dirname, join } from "node:path";
import { fileURLToPath } from "node:url";
import { KEYS, OwnServer, act, api, book, signedIn, today } from "./helpers.js";

const DIRECTORY = process.env.SCREENSHOT_DIR || join(dirname(fileURLToPath(import.meta.url)), "../../docs/screenshots");

/** Debian's libfaketime (scripts/browser-check.sh installs it and says where). */
const FAKETIME = process.env.FAKETIME_LIB || "/usr/lib/x86_64-linux-gnu/faketime/libfaketime.so.1";

/** Collects what the browser says the page's policy blocked. */
function watchPolicy(page) {
  const blocked = [];
  page.on("console", (message) => {
    if (/Content Security Policy/i.test(message.text())) blocked.push(message.text());
  });
  return blocked;
}

test("the day report shows a scripted day's figures, charts and range", async ({ page }) => {
  const server = await OwnServer.start();
  try {
    const base = server.base;
    const date = await today(base);
    // D2-09 has 4 seats: four bookings get one, the fifth waits and then
    // cancels. D1-09: one patient is seen, the other never comes.
    const p1 = await book(base, "R1", "D2-09", "ONLINE");
    await book(base, "R2", "D2-09", "WALK_IN");
    const p3 = await book(base, "R3", "D2-09", "PAID");
    const p4 = await book(base, "R4", "D2-09", "EMERGENCY");
    const p5 = await book(base, "R5", "D2-09", "WALK_IN");
    const p6 = await book(base, "R6", "D1-09", "ONLINE");
    const p7 = await book(base, "R7", "D1-09", "FOLLOW_UP");
    expect(p5.status).toBe("WAITLISTED");
    await act(base, p5.tokenId, "cancel");
    for (const token of [p4, p3, p1, p6]) await act(base, token.tokenId, "check-in");
    for (const [doctor, times] of [["D2", 3], ["D1", 1]]) {
      for (let n = 0; n < times; n += 1) {
        const called = await api(base, KEYS.desk1, "POST", `/doctors/${doctor}/call-next`);
        await act(base, called.token.tokenId, "start");
        await act(base, called.token.tokenId, "complete");
      }
    }
    await act(base, p7.tokenId, "no-show");

    const blocked = watchPolicy(page);
    await signedIn(page, `${base}/reports`, KEYS.viewer);
    await expect(page.locator("#report-date")).toHaveValue(date);
    const tile = (term) => page.locator(".tile").filter({ has: page.getByText(term, { exact: true }) }).locator(".figure");
    await expect(tile("Patients booked")).toHaveText("7");
    await expect(tile("Seen")).toHaveText("4");
    await expect(tile("No-shows")).toHaveText("1");
    await expect(page.locator(".tile").filter({ hasText: "No-shows" })).toContainText("1 cancelled, 0 expired");

    const patients = page.locator("#patients-table");
    const d2 = patients.getByRole("row", { name: /Doctor D2/ });
    await expect(d2).toContainText("2 walk-in, 1 emergency, 1 paid, 1 online");
    await expect(d2).toContainText("4 seat, 1 waitlisted");
    await expect(d2.getByRole("cell")).toHaveText(["5", "2 walk-in, 1 emergency, 1 paid, 1 online", "4 seat, 1 waitlisted", "3", "0", "1", "0"]);
    await expect(patients.getByRole("row", { name: /Doctor D1/ }).getByRole("cell")).toHaveText(["2", "1 follow-up, 1 online", "2 seat", "1", "1", "0", "0"]);
    await expect(patients.getByRole("row", { name: /Whole clinic/ }).getByRole("cell").first()).toHaveText("7");
    await expect(page.locator("#times-table").getByRole("row", { name: /Doctor D2/ }).getByRole("cell").nth(3)).toHaveText("3");

    // The charts: a bar (and a 90th-percentile mark) per hour with calls,
    // a segment per doctor and outcome, a session bar per doctor.
    const hours = page.locator("#chart-hours svg");
    await expect(hours).toHaveAttribute("role", "img");
    await expect(hours.locator("rect.bar").first()).toBeVisible();
    expect(await hours.locator("line.p90").count()).toBe(await hours.locator("rect.bar").count());
    const outcomes = page.locator("#chart-outcomes svg");
    await expect(outcomes.locator("rect.segment")).toHaveCount(4);
    await expect(outcomes.locator("rect.segment.NO_SHOW")).toHaveCount(1);
    await expect(outcomes).toContainText("1 still open");
    await expect(page.locator("#chart-load svg rect.busy")).toHaveCount(3);
    await expect(page.locator("#chart-load svg")).toContainText("5 booked");

    // One doctor: that doctor's figures, charts and days.
    await page.getByLabel("Doctor", { exact: true }).selectOption("D1");
    await expect(page.locator("#glance-title")).toContainText("Doctor D1");
    await expect(tile("Patients booked")).toHaveText("2");
    await expect(outcomes.locator("rect.segment")).toHaveCount(2);
    const days = page.locator("#range-table tbody tr");
    await expect(days).toHaveCount(7);
    await expect(days.last().getByRole("cell").first()).toHaveText("2");
    await expect(page.locator("#chart-range svg rect.booked")).toHaveCount(7);
    expect(blocked).toEqual([]);

    // A front-desk key is refused at sign-in.
    await page.evaluate(() => sessionStorage.clear());
    await page.goto(`${base}/reports`);
    const dialog = page.getByRole("dialog", { name: "Sign in" });
    await dialog.getByLabel("API key").fill(KEYS.desk1);
    await dialog.getByLabel("API key").press("Enter");
    await expect(dialog.getByRole("alert")).toHaveText("The day report needs an admin or viewer key; this one is front-desk.");
  } finally {
    await server.dispose();
  }
});

test("the report page's screenshot, after a morning at the demo clinic", async ({ browser }) => {
  expect(existsSync(FAKETIME), `${FAKETIME} (Debian's libfaketime)`).toBe(true);
  mkdirSync(DIRECTORY, { recursive: true });
  const date = new Date().toISOString().slice(0, 10);
  const server = await OwnServer.start({
    env: {
      LD_PRELOAD: FAKETIME,
      // The wall clock starts at 08:30 today and runs 360 times faster
      // (a minute in a sixth of a second); timers keep real time.
      FAKETIME: `@${date} 08:30:00 x${SPEED}`,
      FAKETIME_DONT_FAKE_MONOTONIC: "1",
    },
  });
  try {
    await morning(server.base);
    const context = await browser.newContext({ viewport: { width: 1440, height: 900 } });
    const page = await context.newPage();
    const blocked = watchPolicy(page);
    await signedIn(page, `${server.base}/reports`, KEYS.viewer);
    await expect(page.locator("#chart-hours svg rect.bar").first()).toBeVisible();
    await expect(page.locator("#range-table tbody tr")).toHaveCount(7);
    await page.screenshot({ path: join(DIRECTORY, "report.png"), fullPage: true });
    expect(blocked).toEqual([]);
    await context.close();
  } finally {
    await server.dispose();
  }
});

const SPEED = 360;

/** Waits until `minutes` of the server's clock have passed since `start` (real ms). */
function until(start, minutes) {
  const due = start + (minutes * 60_000) / SPEED;
  return new Promise((resolve) => setTimeout(resolve, Math.max(0, due - Date.now())));
}

/** A repeatable sequence of numbers in [0, 1). */
function numbers(seed) {
  let state = seed;
  return () => {
    state = (state * 1103515245 + 12345) % 2147483648;
    return state / 2147483648;
  };
}

/**
 * A morning at the demo clinic (D1–D3, slots 09:00–13:00): bookings the
 * evening before, patients arriving around their slot, some late, some
 * never; each doctor calls whenever free and sees each patient for about
 * the slot's share per seat; emergencies walk in. Minutes count from 08:30
 * on the server's clock; the morning ends at 12:20, when the desk marks
 * the 09:00 and 10:00 patients who never came as no-shows.
 */
async function morning(base) {
  const start = Date.now();
  const random = numbers(18);
  const doctors = { D1: { perSeat: 20 }, D2: { perSeat: 15 }, D3: { perSeat: 12 } };
  const sources = ["ONLINE", "ONLINE", "ONLINE", "FOLLOW_UP", "PAID", "WALK_IN", "WALK_IN"];
  const plan = [];
  let n = 0;
  for (const [doctor, { perSeat }] of Object.entries(doctors)) {
    const seats = 60 / perSeat;
    for (const hour of [9, 10, 11, 12]) {
      const slotId = `${doctor}-${String(hour).padStart(2, "0")}`;
      const booked = seats + (hour < 11 ? 1 : 0);
      for (let k = 0; k < booked; k += 1) {
        n += 1;
        const token = await book(base, `M${n}`, slotId, sources[Math.floor(random() * sources.length)]);
        const slotStart = (hour - 9) * 60 + 30;
        const roll = random();
        if (token.status !== "ALLOCATED") continue;
        if (roll < 0.08) {
          await act(base, token.tokenId, "cancel");
        } else if (roll < 0.2) {
          // Never comes.
        } else {
          plan.push({ at: Math.max(1, slotStart - 20 + Math.floor(random() * 30)), token, kind: "arrive" });
        }
      }
    }
  }
  // Emergencies walk in during the morning.
  for (const [at, slotId] of [[75, "D2-10"], [130, "D3-11"]]) {
    plan.push({ at, slotId, kind: "emergency" });
  }
  for (const doctor of Object.keys(doctors)) plan.push({ at: 30, doctor, kind: "free" });
  const END = 230;
  while (plan.length > 0) {
    plan.sort((a, b) => a.at - b.at);
    const next = plan.shift();
    if (next.at > END) break;
    await until(start, next.at);
    if (next.kind === "arrive") {
      // A later booking may have bumped this patient to the waitlist.
      await api(base, KEYS.desk1, "POST", `/tokens/${next.token.tokenId}/check-in`, undefined, [200, 409]);
    } else if (next.kind === "emergency") {
      n += 1;
      const token = await book(base, `M${n}`, next.slotId, "EMERGENCY");
      await act(base, token.tokenId, "check-in");
    } else if (next.kind === "free") {
      const called = await api(base, KEYS.desk1, "POST", `/doctors/${next.doctor}/call-next`, undefined, [200, 409]);
      if (!called.token) {
        plan.push({ at: next.at + 3, doctor: next.doctor, kind: "free" });
        continue;
      }
      const started = next.at + 1 + Math.floor(random() * 2);
      const length = Math.round(doctors[next.doctor].perSeat * (0.6 + random() * 0.7));
      plan.push({ at: started, token: called.token, kind: "start" });
      plan.push({ at: started + length, token: called.token, doctor: next.doctor, kind: "complete" });
    } else if (next.kind === "start") {
      await act(base, next.token.tokenId, "start");
    } else if (next.kind === "complete") {
      await act(base, next.token.tokenId, "complete");
      plan.push({ at: next.at + 1, doctor: next.doctor, kind: "free" });
    }
  }
  await until(start, END);
  for (const doctor of Object.keys(doctors)) {
    const queue = await api(base, KEYS.desk1, "GET", `/doctors/${doctor}/queue`);
    for (const token of queue.notArrived || []) {
      if (token.slotId.endsWith("-09") || token.slotId.endsWith("-10")) {
        await act(base, token.tokenId, "no-show");
      }
    }
  }
}
