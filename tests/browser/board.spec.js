// The waiting-hall board: live, announced once per call in the page's
// language, resuming after a server restart, and never given a patient id.

import { test, expect } from "@playwright/test";
import { BASE, KEYS, OwnServer, act, api, book, recordSpeech, signedIn, slot, spoken, unique } from "./helpers.js";

/** Checks in a new patient of `slotId` and has the desk call the doctor's next. */
async function arriveAndCall(base, doctor, slotId, patientId) {
  const token = await book(base, patientId, slotId, "ONLINE");
  await act(base, token.tokenId, "check-in");
  const call = await api(base, KEYS.desk1, "POST", `/doctors/${doctor}/call-next`);
  return call.token;
}

async function finish(base, tokenId) {
  await act(base, tokenId, "start");
  await act(base, tokenId, "complete");
}

test("each call is shown and said once, in Hindi when the page is set so", async ({ page }) => {
  const doctor = unique("HI");
  const slotId = await slot(BASE, doctor);
  await recordSpeech(page);
  await signedIn(page, `/board?doctorId=${doctor}&lang=hi`, KEYS.viewer);
  await expect(page.locator("#live")).toHaveText("● लाइव");
  await expect(page.locator("html")).toHaveAttribute("lang", "hi");
  const card = page.locator(".board-card");

  const first = await arriveAndCall(BASE, doctor, slotId, `${doctor}-P1`);
  await expect(card.locator(".number")).toHaveText(String(first.tokenNumber), { timeout: 2_000 });
  await expect(card.locator(".state")).toHaveText("कृपया अंदर जाएँ");
  // Another patient arrives: the board lists them next, and says nothing.
  const next = await book(BASE, `${doctor}-P2`, slotId, "PAID");
  await act(BASE, next.tokenId, "check-in");
  await expect(card.locator(".next li")).toHaveText([String(next.tokenNumber)]);
  await expect(card.locator(".waiting-count")).toHaveText("1");
  await finish(BASE, first.tokenId);
  const call = await api(BASE, KEYS.desk1, "POST", `/doctors/${doctor}/call-next`);
  await expect(card.locator(".number")).toHaveText(String(call.token.tokenNumber), { timeout: 2_000 });

  await expect.poll(() => spoken(page).then((said) => said.length)).toBe(2);
  await page.waitForTimeout(1_500);
  expect(await spoken(page)).toEqual([
    { text: `टोकन ${first.tokenNumber}, डॉक्टर ${doctor}`, lang: "hi-IN" },
    { text: `टोकन ${call.token.tokenNumber}, डॉक्टर ${doctor}`, lang: "hi-IN" },
  ]);

  // Switching to English changes the words and the voice.
  await page.getByLabel("भाषा").selectOption("en");
  await expect(card.locator(".state")).toHaveText("Please go in");
  await finish(BASE, call.token.tokenId);
  const third = await arriveAndCall(BASE, doctor, slotId, `${doctor}-P3`);
  await expect.poll(() => spoken(page).then((said) => said.length)).toBe(3);
  expect((await spoken(page))[2]).toEqual({ text: `Token ${third.tokenNumber}, Doctor ${doctor}`, lang: "en-IN" });
});

test("the board rides out a server restart and catches up by event id", async ({ page }) => {
  const server = await OwnServer.start();
  try {
    const doctor = "RESTART";
    const slotId = await slot(server.base, doctor);
    await recordSpeech(page);
    await signedIn(page, `${server.base}/board?doctorId=${doctor}`, KEYS.viewer);
    await expect(page.locator("#live")).toHaveText("● Live");
    const number = page.locator(".board-card .number");

    const first = await arriveAndCall(server.base, doctor, slotId, "R-P1");
    await expect(number).toHaveText(String(first.tokenNumber), { timeout: 2_000 });

    await server.stop();
    await expect(page.locator("#live")).toHaveText("○ Reconnecting…");
    await server.start();
    // Changes made before the board is back are resumed from its last id;
    // later ones arrive live.
    await finish(server.base, first.tokenId);
    const second = await arriveAndCall(server.base, doctor, slotId, "R-P2");
    await expect(number).toHaveText(String(second.tokenNumber));
    await expect(page.locator("#live")).toHaveText("● Live");
    await finish(server.base, second.tokenId);
    const third = await arriveAndCall(server.base, doctor, slotId, "R-P3");
    await expect(number).toHaveText(String(third.tokenNumber), { timeout: 2_000 });

    await expect.poll(() => spoken(page).then((said) => said.length)).toBe(3);
    await page.waitForTimeout(1_500);
    expect((await spoken(page)).map((said) => said.text)).toEqual([
      `Token ${first.tokenNumber}, Doctor ${doctor}`,
      `Token ${second.tokenNumber}, Doctor ${doctor}`,
      `Token ${third.tokenNumber}, Doctor ${doctor}`,
    ]);
  } finally {
    await server.dispose();
  }
});

test("no patient id reaches the board's page", async ({ page }) => {
  const doctor = unique("PRV");
  const slotId = await slot(BASE, doctor);
  const patients = [`SECRET-${doctor}-1`, `SECRET-${doctor}-2`, `SECRET-${doctor}-3`];
  // Every byte the page's scripts read from the server, streams included.
  await page.addInitScript(() => {
    window.__received = [];
    const original = window.fetch;
    window.fetch = async (...args) => {
      const response = await original(...args);
      const copy = response.clone();
      const entry = { url: copy.url, text: "" };
      window.__received.push(entry);
      (async () => {
        const reader = copy.body?.pipeThrough(new TextDecoderStream()).getReader();
        if (!reader) return;
        for (;;) {
          const { value, done } = await reader.read();
          if (done) return;
          entry.text += value;
        }
      })().catch(() => {});
      return response;
    };
  });
  const loaded = [];
  page.on("request", (request) => loaded.push(new URL(request.url()).pathname));
  await signedIn(page, `/board?doctorId=${doctor}`, KEYS.viewer);
  await expect(page.locator("#live")).toHaveText("● Live");

  const tokens = [];
  for (const patient of patients) tokens.push(await book(BASE, patient, slotId, "ONLINE"));
  for (const token of tokens) await act(BASE, token.tokenId, "check-in");
  await api(BASE, KEYS.desk1, "POST", `/doctors/${doctor}/call-next`);
  await expect(page.locator(".board-card .number")).toHaveText(String(tokens[0].tokenNumber));
  await expect(page.locator(".board-card .next li")).toHaveCount(2);

  const received = await page.evaluate(() => window.__received);
  const streamed = received.filter((entry) => entry.url.includes("/events")).map((entry) => entry.text).join("");
  expect(streamed).toContain(`"tokenNumber":${tokens[2].tokenNumber}`);
  const everything = received.map((entry) => entry.text).join("\n") + (await page.content());
  for (const patient of patients) expect(everything).not.toContain(patient);
  expect(everything).not.toContain("SECRET");
  // What the page asked for: its own files, who the key is, the board and the stream.
  const asked = [...new Set(loaded)].filter((path) => !path.startsWith("/ui/"));
  expect(asked.sort()).toEqual(["/board", "/events", "/me"]);
});
