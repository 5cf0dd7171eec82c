// The day report: the day tests/api/reports.rs scripts, played on a
// server of the test's own whose wall clock the test sets (Debian's
// libfaketime), shows every figure, its charts (SVG drawn by the page,
// which the Content-Security-Policy must not block), one doctor and a
// range of days; a front-desk key is refused. Then the README's
// screenshot, of a morning at the demo clinic played the same way.

import { test, expect } from "@playwright/test";
import { existsSync, mkdirSync, mkdtempSync, writeFileSync } from "node:fs";
import { tmpdir } from "node:os";
import { dirname, join } from "node:path";
import { fileURLToPath } from "node:url";
import { KEYS, OwnServer, act, api, book, signedIn } from "./helpers.js";

const DIRECTORY = process.env.SCREENSHOT_DIR || join(dirname(fileURLToPath(import.meta.url)), "../../docs/screenshots");

/** Debian's libfaketime (scripts/browser-check.sh installs it and says where). */
const FAKETIME = process.env.FAKETIME_LIB || "/usr/lib/x86_64-linux-gnu/faketime/libfaketime.so.1";

/**
 * A server whose wall clock stands still at what `set` last wrote, on
 * `date` (timers keep real time, so its once-a-second tick still runs).
 */
async function serverOnSetClock(date, time = "08:00") {
  expect(existsSync(FAKETIME), `${FAKETIME} (Debian's libfaketime)`).toBe(true);
  const file = join(mkdtempSync(join(tmpdir(), "opd-clock-")), "now");
  const set = (at, day = date) => writeFileSync(file, `${day} ${at.length === 5 ? `${at}:00` : at}\n`);
  set(time);
  const server = await OwnServer.start({
    env: {
      LD_PRELOAD: FAKETIME,
      FAKETIME_TIMESTAMP_FILE: file,
      FAKETIME_NO_CACHE: "1",
      FAKETIME_DONT_FAKE_MONOTONIC: "1",
    },
  });
  return { server, set };
}

/** Collects what the page's policy blocked and the page's script errors. */
function watchPolicy(page) {
  const blocked = [];
  page.on("console", (message) => {
    if (/Content Security Policy/i.test(message.text())) blocked.push(message.text());
  });
  page.on("pageerror", (error) => blocked.push(error.message));
  return blocked;
}

const DATE = "2030-01-15";

test("the day report shows a scripted day's figures, charts and range", async ({ page }) => {
  const { server, set } = await serverOnSetClock(DATE);
  try {
    const base = server.base;
    await scriptedDay(base, set);
    // The day ends at midnight: the consultation still open is completed.
    set("00:00:01", "2030-01-16");
    await expect.poll(async () => (await api(base, KEYS.admin, "GET", "/reports/day?date=2030-01-15")).clinic.outcomes.COMPLETED).toBe(3);

    const blocked = watchPolicy(page);
    await signedIn(page, `${base}/reports?date=${DATE}`, KEYS.viewer);
    await expect(page.locator("#report-date")).toHaveValue(DATE);
    await expect(page.locator("#glance-title")).toHaveText("Whole clinic, Tue 15 Jan 2030");
    const tile = (term) => page.locator(".tile").filter({ has: page.getByText(term, { exact: true }) });
    await expect(tile("Patients booked").locator(".figure")).toHaveText("6");
    await expect(tile("Seen").locator(".figure")).toHaveText("3");
    await expect(tile("No-shows")).toContainText("1(17 %) · 1 cancelled, 1 expired");
    await expect(tile("Median wait for the call")).toContainText("10 min90 % called within 25 min");
    await expect(tile("Median consultation")).toContainText("10 min2 completed by the doctor");
    // The demo doctors' sessions count too: 30 min of 14 hours.
    await expect(tile("Doctor time in consultation")).toContainText("4 %30 min of 14 h 00 min scheduled");
    await expect(tile("Call estimates off by")).toContainText("9 minon average; 25 % called later than told");

    const patients = page.locator("#patients-table");
    await expect(patients.getByRole("row", { name: /Doctor DR/ }).getByRole("cell")).toHaveText([
      "6",
      "2 walk-in, 1 emergency, 1 paid, 1 follow-up, 1 online",
      "3 given a seat, 1 took a less urgent seat, 1 overbooked, 1 waitlisted",
      "3",
      "1",
      "1",
      "1",
    ]);
    await expect(patients.getByRole("row", { name: /Doctor D1/ }).getByRole("cell").first()).toHaveText("0");
    await expect(patients.getByRole("row", { name: /Whole clinic/ }).getByRole("cell").first()).toHaveText("6");
    await expect(page.locator("#times-table").getByRole("row", { name: /Doctor DR/ }).getByRole("cell")).toHaveText([
      "10 min (25 min)",
      "2 min (10 min)",
      "10 min (20 min)",
      "2",
      "25 %",
      "1 h 30 min",
      "9 min",
      "25 %",
    ]);

    // The charts: a bar and a 90th-percentile mark for 09:00 and 10:00, a
    // segment per outcome of DR's bookings, a session bar per doctor.
    const hours = page.locator("#chart-hours svg");
    await expect(hours).toHaveAttribute("role", "img");
    await expect(hours.locator("rect.bar")).toHaveCount(2);
    await expect(hours.locator("line.p90")).toHaveCount(2);
    await expect(hours.locator("rect.bar").first().locator("title")).toHaveText("09:00–09:59: 2 patients, median 10 min, 90 % within 25 min");
    await expect(hours).toContainText("10:00");
    const outcomes = page.locator("#chart-outcomes svg");
    await expect(outcomes.locator("rect.segment")).toHaveCount(4);
    await expect(outcomes.locator("rect.segment.COMPLETED title")).toHaveText("Doctor DR: 3 seen");
    await expect(page.locator("#chart-load svg rect.busy")).toHaveCount(4);
    await expect(page.locator("#chart-load svg")).toContainText("25 % · 6 booked");

    // One doctor: that doctor's figures, charts and days.
    await page.getByLabel("Doctor", { exact: true }).selectOption("DR");
    await expect(page.locator("#glance-title")).toHaveText("Doctor DR, Tue 15 Jan 2030");
    await expect(tile("Doctor time in consultation")).toContainText("25 %30 min of 2 h 00 min scheduled; idle 1 h 30 min");
    await expect(page.locator("#chart-load svg rect.busy")).toHaveCount(1);
    const days = page.locator("#range-table tbody tr");
    await expect(days).toHaveCount(7);
    await expect(days.first().getByRole("rowheader")).toHaveText("Wed 9 Jan 2030");
    await expect(days.last().getByRole("cell")).toHaveText(["6", "3", "1", "1", "10 min (25 min)", "10 min", "25 %"]);
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

/**
 * The day of tests/api/reports.rs: doctor DR, slots R-09 (09:00–10:00)
 * and R-10 (10:00–11:00) of two seats, every step at a set time, so that
 * each wait is known: P3 waits 10 min for the call, P1 25, P6 10.
 */
async function scriptedDay(base, set) {
  for (const [slotId, startTime, endTime] of [["R-09", "09:00", "10:00"], ["R-10", "10:00", "11:00"]]) {
    await api(base, KEYS.admin, "POST", "/slots", { slotId, doctorId: "DR", date: DATE, startTime, endTime, capacity: 2 });
  }
  const p1 = await book(base, "P1", "R-09", "ONLINE");
  await book(base, "P2", "R-09", "WALK_IN");
  const p3 = await book(base, "P3", "R-09", "PAID");
  await book(base, "P4", "R-09", "EMERGENCY");
  const p5 = await book(base, "P5", "R-09", "WALK_IN");
  const p6 = await book(base, "P6", "R-10", "FOLLOW_UP");
  await act(base, p5.tokenId, "cancel");
  const steps = [
    ["09:00", p3, "check-in"], ["09:00", p1, "check-in"], ["09:10", p3, "call"], ["09:12", p3, "start"],
    ["09:22", p3, "complete"], ["09:25", p1, "call"], ["09:30", p1, "skip"], ["09:40", p1, "check-in"],
    ["09:45", p1, "call"], ["09:46", p1, "start"], ["10:06", p1, "complete"],
  ];
  for (const [at, token, action] of steps) {
    set(at);
    await act(base, token.tokenId, action);
  }
  set("10:10");
  await api(base, KEYS.admin, "POST", "/slots/R-09/close");
  for (const [at, action] of [["10:10", "check-in"], ["10:20", "call"], ["10:30", "start"]]) {
    set(at);
    await act(base, p6.tokenId, action);
  }
}

test("the report page's screenshot, after a morning at the demo clinic", async ({ browser }) => {
  mkdirSync(DIRECTORY, { recursive: true });
  const date = new Date().toISOString().slice(0, 10);
  const { server, set } = await serverOnSetClock(date, "07:30");
  try {
    await morning(server.base, set);
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

/** A repeatable sequence of numbers in [0, 1). */
function numbers(seed) {
  let state = seed;
  return () => {
    state = (state * 1103515245 + 12345) % 2147483648;
    return state / 2147483648;
  };
}

/** HH:MM:SS of `minutes` after midnight. */
function clockOf(minutes) {
  const seconds = Math.round(minutes * 60);
  const pad = (n) => String(n).padStart(2, "0");
  return `${pad(Math.floor(seconds / 3600))}:${pad(Math.floor(seconds / 60) % 60)}:${pad(seconds % 60)}`;
}

/**
 * A morning at the demo clinic (D1–D3, slots 09:00–13:00; 20, 15 and 12
 * minutes a seat): bookings the evening before, patients arriving around
 * their slot, some never; each doctor calls whenever free and sees each
 * patient for about the slot's share per seat; two emergencies walk in.
 * At 12:50 the desk marks the 09:00–11:00 patients who never came as
 * no-shows.
 */
async function morning(base, set) {
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
        const roll = random();
        if (token.status !== "ALLOCATED") continue;
        if (roll < 0.08) {
          await act(base, token.tokenId, "cancel");
        } else if (roll >= 0.2) {
          // Most come 20 minutes early to 10 late; the rest never come.
          plan.push({ at: hour * 60 - 20 + random() * 30, token, kind: "arrive" });
        }
      }
    }
  }
  for (const [at, slotId] of [[10 * 60 + 5, "D2-10"], [11 * 60 + 20, "D3-11"]]) {
    plan.push({ at, slotId, kind: "emergency" });
  }
  for (const doctor of Object.keys(doctors)) plan.push({ at: 9 * 60, doctor, kind: "free" });
  const end = 12 * 60 + 50;
  while (plan.length > 0) {
    plan.sort((a, b) => a.at - b.at);
    const next = plan.shift();
    if (next.at > end) break;
    set(clockOf(next.at));
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
        plan.push({ at: next.at + 2, doctor: next.doctor, kind: "free" });
        continue;
      }
      const started = next.at + 0.5 + random() * 1.5;
      const length = doctors[next.doctor].perSeat * (0.6 + random() * 0.7);
      plan.push({ at: started, token: called.token, kind: "start" });
      plan.push({ at: started + length, token: called.token, doctor: next.doctor, kind: "complete" });
    } else if (next.kind === "start") {
      await act(base, next.token.tokenId, "start");
    } else if (next.kind === "complete") {
      await act(base, next.token.tokenId, "complete");
      plan.push({ at: next.at + 0.5 + random(), doctor: next.doctor, kind: "free" });
    }
  }
  set(clockOf(end));
  for (const doctor of Object.keys(doctors)) {
    const queue = await api(base, KEYS.desk1, "GET", `/doctors/${doctor}/queue`);
    for (const token of queue.notArrived) {
      if (!token.slotId.endsWith("-12")) await act(base, token.tokenId, "no-show");
    }
  }
}
