// The schedule (admin keys): create slots, change a slot's capacity, close
// a slot; what each change did to the patients is said in plain words.

import { clock, debounce, el, get, patch, post, query } from "./api.js";
import { showLive, signIn } from "./signin.js";
import { follow } from "./stream.js";
import { changeText, problemText } from "./words.js";

const $ = (id) => document.getElementById(id);

const me = await signIn({
  refuse: (me) => (me.role === "admin" ? null : `The schedule needs an admin key; this one is ${me.role}.`),
});
$("day").textContent = `Today: ${me.today}`;
$("create-date").value = me.today;
$("list-date").value = me.today;

const refresh = debounce(load, 150);
$("list-date").addEventListener("change", load);
$("list-form").addEventListener("submit", (event) => event.preventDefault());
$("create-form").addEventListener("submit", (event) => {
  event.preventDefault();
  create();
});

follow({ onEvent: refresh, onOpen: refresh, onState: showLive });

async function create() {
  const out = $("create-result");
  const doctorId = $("create-doctor").value.trim();
  const date = $("create-date").value;
  const startTime = $("create-start").value;
  const endTime = $("create-end").value;
  const capacityText = $("create-capacity").value.trim();
  const capacity = Number(capacityText);
  const slotId = $("create-id").value.trim() || `${doctorId}-${date}-${startTime.replace(":", "")}`;
  if (!doctorId || !date || !startTime || !endTime || capacityText === "" || !Number.isInteger(capacity)) {
    out.replaceChildren(el("p", { class: "message error" }, "Fill in the doctor, date, times and a whole-number capacity."));
    return;
  }
  try {
    const slot = await post("/slots", { slotId, doctorId, date, startTime, endTime, capacity });
    out.replaceChildren(
      el("p", { class: "message ok" }, `Slot ${slot.slotId} created: doctor ${slot.doctorId}, ${slot.date} ${slot.startTime}–${slot.endTime}, capacity ${slot.capacity}.`)
    );
    $("create-id").value = "";
    $("list-date").value = slot.date;
    load();
  } catch (error) {
    const words = {
      SLOT_EXISTS: `A slot with the id ${slotId} already exists.`,
      SLOT_OVERLAP: `Doctor ${doctorId} already has a slot at that time on ${date}.`,
    };
    out.replaceChildren(el("p", { class: "message error" }, words[error.code] || problemText(error)));
  }
}

async function load() {
  let slots;
  try {
    slots = await get(`/slots${query({ date: $("list-date").value })}`);
  } catch (error) {
    $("slot-result").replaceChildren(el("p", { class: "message error" }, problemText(error)));
    return;
  }
  // A capacity being typed in is kept while the list is redrawn.
  const typing = document.activeElement?.dataset?.slot;
  const typed = typing ? document.activeElement.value : null;
  const body = $("slot-table").tBodies[0];
  body.replaceChildren(...slots.map(row));
  if (slots.length === 0) body.append(el("tr", {}, el("td", { colspan: 8 }, "No slots on this date.")));
  if (typing) {
    const input = body.querySelector(`input[data-slot="${CSS.escape(typing)}"]`);
    if (input) {
      input.value = typed;
      input.focus();
    }
  }
}

function row(slot) {
  const inputId = `capacity-${slot.slotId}`;
  const input = el("input", {
    id: inputId,
    type: "number",
    min: 0,
    max: 10000,
    step: 1,
    value: slot.capacity,
    "data-slot": slot.slotId,
    disabled: slot.closed === true,
  });
  const form = el(
    "form",
    {
      class: "capacity-form",
      novalidate: true,
      onsubmit: (event) => {
        event.preventDefault();
        changeCapacity(slot, input.value);
      },
    },
    el("label", { for: inputId, class: "visually-hidden" }, `Capacity of ${slot.slotId}`),
    input,
    el("button", { type: "submit", disabled: slot.closed === true, "aria-label": `Change capacity of ${slot.slotId}` }, "Change")
  );
  let stateText = slot.closed ? `closed at ${clock(slot.closesAt)}` : `open until ${closingWords(slot.closesAt)}`;
  if (slot.overbooked) stateText += `, overbooked by ${slot.overbookedBy}`;
  return el(
    "tr",
    {},
    el("th", { scope: "row" }, slot.slotId),
    el("td", {}, slot.doctorId),
    el("td", {}, `${slot.startTime}–${slot.endTime}`),
    el("td", { class: "n" }, `${slot.allocatedCount} / ${slot.capacity}`),
    el("td", { class: "n" }, slot.waitlistCount),
    el("td", {}, form),
    el("td", {}, stateText),
    el(
      "td",
      {},
      el(
        "button",
        {
          type: "button",
          class: "danger",
          disabled: slot.closed === true,
          "aria-label": `Close slot ${slot.slotId}`,
          onclick: () => closeSlot(slot),
        },
        "Close"
      )
    )
  );
}

/** When an open slot closes: midnight (the end of its date), or the time. */
function closingWords(closesAt) {
  const when = new Date(closesAt);
  if (when.getHours() === 0 && when.getMinutes() === 0) return "midnight";
  return clock(closesAt);
}

async function changeCapacity(slot, text) {
  const out = $("slot-result");
  const capacity = Number(text);
  if (text.trim() === "" || !Number.isInteger(capacity) || capacity < 0 || capacity > 10000) {
    out.replaceChildren(el("p", { class: "message error" }, "Capacity must be a whole number from 0 to 10,000."));
    return;
  }
  try {
    const answer = await patch(`/slots/${encodeURIComponent(slot.slotId)}`, { capacity });
    out.replaceChildren(
      el("p", { class: "message ok" }, `${slot.slotId}: capacity ${slot.capacity} → ${answer.slot.capacity}.`),
      changes(answer.changes)
    );
    load();
  } catch (error) {
    out.replaceChildren(el("p", { class: "message error" }, problemText(error)));
  }
}

async function closeSlot(slot) {
  const out = $("slot-result");
  if (!window.confirm(`Close slot ${slot.slotId} now? Patients booked who have not arrived become no-shows, and its waitlist expires.`)) return;
  try {
    const answer = await post(`/slots/${encodeURIComponent(slot.slotId)}/close`);
    out.replaceChildren(el("p", { class: "message ok" }, `${slot.slotId} is closed.`), changes(answer.changes));
    load();
  } catch (error) {
    const text = error.code === "NOT_FOUND" ? "This server cannot close slots yet (it has no POST /slots/{slotId}/close)." : problemText(error);
    out.replaceChildren(el("p", { class: "message error" }, text));
  }
}

function changes(list) {
  if (!list || list.length === 0) return "";
  return el("ul", { class: "changes" }, list.map((change) => el("li", {}, changeText(change))));
}
