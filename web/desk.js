// The front desk: today's slots at a glance, booking with the decision in
// plain words, finding a token, check-in, cancel and no-show, all kept up
// to date from the event stream so that two desks never work on stale
// screens.

import { ApiError, clock, debounce, el, get, post, query } from "./api.js";
import { showLive, signIn } from "./signin.js";
import { follow } from "./stream.js";
import { SOURCES, actionText, changeText, decisionText, problemText, reasonWord, sourceWord, statusWord } from "./words.js";

const DESK_ROLES = ["admin", "front-desk"];

const state = {
  today: null,
  slots: [],
  selected: null,
  /** The ids of the tokens the desk looked up, kept up to date live. */
  found: [],
};

const $ = (id) => document.getElementById(id);

const me = await signIn({
  refuse: (me) =>
    DESK_ROLES.includes(me.role)
      ? null
      : `The front desk needs a front-desk or admin key; this one is ${me.role}.`,
});
state.today = me.today;
$("day").textContent = `Today: ${me.today}`;

for (const source of SOURCES) {
  $("book-source").append(el("option", { value: source }, `${source} (${sourceWord(source)})`));
}
$("book-source").value = "WALK_IN";

$("book-form").addEventListener("submit", (event) => {
  event.preventDefault();
  book();
});
$("find-form").addEventListener("submit", (event) => {
  event.preventDefault();
  find($("find-query").value.trim());
});

const refresh = debounce(async () => {
  await loadSlots();
  if (state.selected) await showSlot(state.selected, { quiet: true });
  await showFound().catch(() => {});
}, 120);

follow({
  onEvent: (event) => {
    addToFeed(event);
    refresh();
  },
  onOpen: refresh,
  onState: showLive,
});

async function loadSlots() {
  let slots;
  try {
    slots = await get(`/slots${query({ date: state.today })}`);
  } catch (error) {
    if (error instanceof ApiError) return;
    throw error;
  }
  state.slots = slots;
  renderSlots();
}

function renderSlots() {
  const body = $("slots-table").tBodies[0];
  body.replaceChildren(
    ...state.slots.map((slot) => {
      const notes = [];
      if (slot.closed) notes.push("closed");
      if (slot.overbooked) notes.push(`overbooked by ${slot.overbookedBy}`);
      else if (slot.available === 0) notes.push("full");
      const selected = slot.slotId === state.selected;
      return el(
        "tr",
        { class: [selected ? "selected" : "", slot.overbooked ? "warn" : ""].join(" ").trim() || null },
        el(
          "th",
          { scope: "row" },
          el(
            "button",
            {
              type: "button",
              class: "link",
              "aria-pressed": selected ? "true" : "false",
              onclick: () => showSlot(slot.slotId),
            },
            slot.slotId
          )
        ),
        el("td", {}, slot.doctorId),
        el("td", {}, `${slot.startTime}–${slot.endTime}`),
        el("td", { class: "n" }, `${slot.allocatedCount} / ${slot.capacity}`),
        el("td", { class: "n" }, slot.available),
        el("td", { class: "n" }, slot.waitlistCount),
        el("td", {}, notes.join(", "))
      );
    })
  );
  if (state.slots.length === 0) {
    body.append(el("tr", {}, el("td", { colspan: 7 }, "No slots today.")));
  }
  // The booking form offers today's open slots, keeping the choice.
  const select = $("book-slot");
  const chosen = select.value;
  select.replaceChildren(
    ...state.slots
      .filter((slot) => !slot.closed)
      .map((slot) =>
        el(
          "option",
          { value: slot.slotId },
          `${slot.slotId} · ${slot.doctorId} ${slot.startTime}–${slot.endTime} · ${slot.available} free`
        )
      )
  );
  if (chosen && state.slots.some((slot) => slot.slotId === chosen)) select.value = chosen;
}

async function book() {
  const result = $("book-result");
  const patientId = $("book-patient").value.trim();
  const slotId = $("book-slot").value;
  const source = $("book-source").value;
  if (!patientId || !slotId) {
    result.replaceChildren(el("p", { class: "message error" }, "Enter a patient id and choose a slot."));
    return;
  }
  try {
    const booking = await post("/tokens", { patientId, slotId, source });
    result.replaceChildren(
      el("p", { class: `message decision ${booking.decision.toLowerCase()}` }, decisionText(booking)),
      changesList(booking.changes, booking.token)
    );
    // Ready for the next patient, unless the desk has already begun typing
    // them while this answer was on its way.
    if ($("book-patient").value.trim() === patientId) {
      $("book-patient").value = "";
      $("book-patient").focus();
    }
    state.selected = slotId;
    refresh();
  } catch (error) {
    result.replaceChildren(el("p", { class: "message error" }, problemText(error)));
  }
}

function changesList(changes, cause) {
  if (!changes || changes.length === 0) return "";
  return el("ul", { class: "changes" }, changes.map((change) => el("li", {}, changeText(change, cause))));
}

const UUID = /^[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}$/i;

/** Finds the tokens of a token id or a patient id and shows them. */
async function find(text) {
  const out = $("find-result");
  if (!text) return;
  state.found = [];
  try {
    if (UUID.test(text)) {
      state.found = [text];
    } else {
      // By patient: the patient's tokens in today's slots (seated or
      // waiting; cancelled ones are found by token id). Searched once; the
      // live view then follows these tokens by id.
      const details = await Promise.all(state.slots.map((slot) => get(`/slots/${encodeURIComponent(slot.slotId)}`)));
      state.found = details
        .flatMap((slot) => [...slot.allocated, ...slot.waitlist])
        .filter((token) => token.patientId === text)
        .map((token) => token.tokenId);
      if (state.found.length === 0) {
        out.replaceChildren(el("p", { class: "message" }, `No token of ${text} in today's slots.`));
        return;
      }
    }
    await showFound();
  } catch (error) {
    out.replaceChildren(
      el("p", { class: "message error" }, error.code === "TOKEN_NOT_FOUND" ? "No token has this id." : problemText(error))
    );
  }
}

/** The tokens found, read again by id (with their history). */
async function showFound() {
  if (state.found.length === 0) return;
  const details = await Promise.all(state.found.map((id) => get(`/tokens/${id}`)));
  const open = new Set([...document.querySelectorAll("#find-result details[open]")].map((details) => details.dataset.token));
  $("find-result").replaceChildren(...details.map((detail) => tokenCard(detail, detail.history, open.has(detail.tokenId))));
}

function tokenCard(token, history, historyOpen) {
  const facts = [
    ["Patient", token.patientId],
    ["Slot", `${token.slotId} (doctor ${token.doctorId})`],
    ["Source", `${token.source} (${sourceWord(token.source)})`],
    ["Status", statusWord(token.status)],
  ];
  if (token.waitlistPosition) facts.push(["Waitlist position", token.waitlistPosition]);
  if (token.queuePosition) facts.push(["Place in queue", token.queuePosition]);
  if (token.estimatedCallAt) facts.push(["Expected call", clock(token.estimatedCallAt)]);
  if (token.checkedInAt) facts.push(["Arrived", clock(token.checkedInAt)]);
  return el(
    "article",
    { class: "token-card", "aria-label": `Token ${token.tokenNumber} of ${token.patientId}` },
    el("h3", {}, `Token ${token.tokenNumber}`, el("span", { class: `status ${token.status}` }, statusWord(token.status))),
    el("dl", {}, facts.map(([name, value]) => [el("dt", {}, name), el("dd", {}, value)])),
    el("p", { class: "token-id" }, `Token id: ${token.tokenId}`),
    actionButtons(token),
    history
      ? el(
          "details",
          { "data-token": token.tokenId, open: historyOpen },
          el("summary", {}, "History"),
          el(
            "ol",
            { class: "history" },
            history.map((line) =>
              el("li", {}, `${clock(line.at)} ${line.from ? statusWord(line.from) + " → " : ""}${statusWord(line.to)} (${reasonWord(line.reason)}, ${line.actor})`)
            )
          )
        )
      : ""
  );
}

const DESK_ACTIONS = [
  { action: "check-in", label: "Check in", from: ["ALLOCATED", "WAITLISTED", "SKIPPED"] },
  { action: "cancel", label: "Cancel", from: ["ALLOCATED", "WAITLISTED", "CHECKED_IN", "CALLED", "SKIPPED"], confirm: true },
  { action: "no-show", label: "No-show", from: ["ALLOCATED", "CALLED", "SKIPPED"], confirm: true },
];

function actionButtons(token) {
  const buttons = DESK_ACTIONS.filter(
    ({ action, from }) =>
      from.includes(token.status) && !(action === "check-in" && token.status === "WAITLISTED" && token.checkedInAt)
  ).map(({ action, label, confirm }) =>
    el(
      "button",
      {
        type: "button",
        class: action === "check-in" ? "primary" : "danger",
        "aria-label": `${label} token ${token.tokenNumber} (${token.patientId})`,
        onclick: () => act(token, action, label, confirm),
      },
      label
    )
  );
  return buttons.length ? el("div", { class: "actions" }, buttons) : "";
}

async function act(token, action, label, needsConfirmation) {
  if (needsConfirmation && !window.confirm(`${label} token ${token.tokenNumber} of ${token.patientId}?`)) return;
  const out = $("action-result");
  try {
    const answer = await post(`/tokens/${token.tokenId}/${action}`);
    out.replaceChildren(el("p", { class: "message ok" }, actionText(action, answer.token)), changesList(answer.changes));
    refresh();
  } catch (error) {
    out.replaceChildren(el("p", { class: "message error" }, problemText(error)));
  }
}

async function showSlot(slotId, { quiet = false } = {}) {
  state.selected = slotId;
  const out = $("slot-detail");
  let slot;
  try {
    slot = await get(`/slots/${encodeURIComponent(slotId)}`);
  } catch (error) {
    if (!quiet) out.replaceChildren(el("p", { class: "message error" }, problemText(error)));
    return;
  }
  $("slot-title").textContent = `Slot ${slot.slotId}: doctor ${slot.doctorId}, ${slot.startTime}–${slot.endTime}`;
  const table = (caption, tokens, extra) =>
    el(
      "table",
      {},
      el("caption", {}, caption),
      el(
        "thead",
        {},
        el("tr", {}, ["Token", "Patient", "Source", "Status", extra.title, "Actions"].map((title) => el("th", { scope: "col" }, title)))
      ),
      el(
        "tbody",
        {},
        tokens.length
          ? tokens.map((token) =>
              el(
                "tr",
                {},
                el("td", { class: "n" }, token.tokenNumber),
                el("th", { scope: "row" }, token.patientId),
                el("td", {}, sourceWord(token.source)),
                el("td", {}, el("span", { class: `status ${token.status}` }, statusWord(token.status))),
                el("td", {}, extra.value(token)),
                el("td", {}, actionButtons(token))
              )
            )
          : el("tr", {}, el("td", { colspan: 6 }, "Nobody."))
      )
    );
  out.replaceChildren(
    el(
      "p",
      {},
      `${slot.allocatedCount} of ${slot.capacity} seats used, ${slot.available} free, ${slot.waitlistCount} waiting`,
      slot.overbooked ? `, overbooked by ${slot.overbookedBy}` : "",
      slot.closed ? " · closed" : "",
      "."
    ),
    table(`Seated (${slot.allocated.length})`, slot.allocated, {
      title: "Queue",
      value: (token) => (token.queuePosition ? `#${token.queuePosition} ~${clock(token.estimatedCallAt)}` : ""),
    }),
    table(`Waitlist (${slot.waitlist.length})`, slot.waitlist, {
      title: "Position",
      value: (token) => `${token.waitlistPosition}${token.checkedInAt ? " (arrived)" : ""}`,
    })
  );
  if (!quiet) renderSlots();
}

const FEED_MAX = 30;

function addToFeed(event) {
  const feed = $("feed");
  let text;
  if (event.type === "token") {
    const data = event.data;
    const change = data.from ? `${statusWord(data.from)} → ${statusWord(data.to)}` : statusWord(data.to);
    text = `${clock(data.at)} ${data.slotId} token ${data.tokenNumber}: ${change} (${reasonWord(data.reason)}, ${data.actor})`;
  } else if (event.type === "slot") {
    const data = event.data;
    const what = { CREATED: "created", CAPACITY_CHANGED: `capacity now ${data.slot.capacity}`, CLOSED: "closed" }[data.reason] || data.reason;
    text = `${clock(data.at)} slot ${data.slot.slotId}: ${what} (${data.actor})`;
  } else {
    return;
  }
  feed.prepend(el("li", {}, text));
  while (feed.children.length > FEED_MAX) feed.lastElementChild.remove();
}
