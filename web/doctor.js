// The doctor's page: who is with the doctor, who waits in the hall (in
// call order, with estimated times), who has not arrived, who was skipped,
// the waitlist; and Call next, Start, Complete and Skip as large buttons
// with keyboard shortcuts. Kept up to date from the doctor's events.

import { clock, debounce, el, get, post, query } from "./api.js";
import { showLive, signIn } from "./signin.js";
import { follow } from "./stream.js";
import { actionText, changeText, problemText, sourceWord, statusWord } from "./words.js";

const $ = (id) => document.getElementById(id);

const me = await signIn({
  refuse: (me) =>
    me.role === "viewer"
      ? "The doctor's page needs a doctor key, or a front-desk or admin key to choose a doctor; this one is viewer."
      : null,
});
$("day").textContent = `Today: ${me.today}`;

const state = { doctor: null, queue: null, stop: null };

const refresh = debounce(() => loadQueue(), 100);

async function chooseDoctor() {
  if (me.doctorId) return setDoctor(me.doctorId);
  // A desk or admin key picks the doctor; the choice is kept in the URL so
  // that a reload (or a bookmark) opens the same doctor.
  const slots = await get(`/slots${query({ date: me.today })}`);
  const doctors = [...new Set(slots.map((slot) => slot.doctorId))].sort();
  const wanted = new URLSearchParams(location.search).get("doctorId");
  if (wanted && !doctors.includes(wanted)) doctors.unshift(wanted);
  const select = $("doctor-select");
  select.replaceChildren(...doctors.map((doctor) => el("option", { value: doctor }, doctor)));
  $("choose-doctor").hidden = false;
  select.addEventListener("change", () => setDoctor(select.value));
  if (doctors.length === 0) {
    showMessage("No doctor has a slot today.", "warn");
    return;
  }
  select.value = wanted || doctors[0];
  setDoctor(select.value);
}

function setDoctor(doctor) {
  state.doctor = doctor;
  $("title").textContent = `Doctor ${doctor}`;
  document.title = `Doctor ${doctor} · OPD`;
  if (!me.doctorId) {
    const url = new URL(location.href);
    url.searchParams.set("doctorId", doctor);
    history.replaceState(null, "", url);
  }
  state.stop?.();
  state.stop = follow({ filters: { doctorId: doctor }, onEvent: refresh, onOpen: refresh, onState: showLive });
  showMessage("");
  loadQueue();
}

async function loadQueue() {
  const doctor = state.doctor;
  try {
    const queue = await get(`/doctors/${encodeURIComponent(doctor)}/queue`);
    if (doctor !== state.doctor) return;
    state.queue = queue;
    render(queue);
  } catch (error) {
    if (error.code === "DOCTOR_NOT_FOUND") {
      state.queue = null;
      render(null);
      showMessage(`Doctor ${doctor} has no slots.`, "warn");
    } else {
      showMessage(problemText(error), "error");
    }
  }
}

function render(queue) {
  const current = queue?.current;
  const now = $("now");
  now.className = `now ${current ? current.status : ""}`;
  now.replaceChildren(
    ...(current
      ? [
          el("div", { class: "number" }, `Token ${current.tokenNumber}`),
          el("div", { class: "who" }, current.patientId),
          el("div", {}, `${current.status === "CALLED" ? "Called, on the way in" : "In consultation"} · ${sourceWord(current.source)} · slot ${current.slotId}`),
        ]
      : [el("p", {}, "Nobody is with the doctor. Call the next patient when you are ready.")])
  );
  $("start").disabled = current?.status !== "CALLED";
  $("skip").disabled = current?.status !== "CALLED";
  $("complete").disabled = current?.status !== "IN_CONSULTATION";

  // The second column (the token number) heads each row.
  const rows = (tokens, columns) =>
    tokens.map((token) => el("tr", {}, columns.map(([, value], index) => (index === 1 ? el("th", { scope: "row" }, value(token)) : el("td", {}, value(token))))));
  const table = (caption, tokens, columns) =>
    el(
      "table",
      {},
      el("caption", {}, `${caption} (${tokens.length})`),
      el("thead", {}, el("tr", {}, columns.map(([title]) => el("th", { scope: "col" }, title)))),
      el("tbody", {}, tokens.length ? rows(tokens, columns) : el("tr", {}, el("td", { colspan: columns.length }, "Nobody.")))
    );
  const token = ["Token", (t) => t.tokenNumber];
  const patient = ["Patient", (t) => t.patientId];
  const source = ["Source", (t) => sourceWord(t.source)];
  const slot = ["Slot", (t) => t.slotId];
  $("call-queue").replaceChildren(
    table("Call queue", queue?.callQueue || [], [
      ["#", (t) => t.queuePosition],
      token,
      patient,
      source,
      slot,
      ["Expected", (t) => clock(t.estimatedCallAt)],
    ])
  );
  $("others").replaceChildren(
    table("Not arrived", queue?.notArrived || [], [slot, token, patient, source]),
    table("Skipped", queue?.skipped || [], [slot, token, patient, source]),
    table("Waitlist", queue?.waitlist || [], [slot, token, patient, source, ["Position", (t) => `${t.waitlistPosition}${t.checkedInAt ? " (arrived)" : ""}`]])
  );
  $("counts").replaceChildren(
    ...(queue
      ? [
          ["Seen", queue.completedCount],
          ["No-show", queue.noShowCount],
          ["Cancelled", queue.cancelledCount],
          ["Expired", queue.expiredCount],
        ].map(([name, count]) => el("span", {}, `${name}: `, el("strong", {}, count)))
      : [])
  );
}

function showMessage(text, kind = "") {
  const message = $("message");
  message.className = `message ${kind}`;
  message.textContent = text;
}

async function run(label, path) {
  try {
    const answer = await post(path);
    const side = answer.changes.map((change) => changeText(change)).join(" ");
    showMessage(`${actionText(label, answer.token)} ${side}`.trim(), "ok");
  } catch (error) {
    if (error.code === "DOCTOR_BUSY") {
      const current = state.queue?.current;
      showMessage(
        current
          ? `Token ${current.tokenNumber} is still with you. Complete or skip it before calling the next patient.`
          : problemText(error),
        "warn"
      );
    } else if (error.code === "QUEUE_EMPTY") {
      showMessage("Nobody is waiting in the hall: no patient has checked in yet.", "warn");
    } else {
      showMessage(problemText(error), "error");
    }
  }
  loadQueue();
}

const ACTIONS = {
  "call-next": () => run("call", `/doctors/${encodeURIComponent(state.doctor)}/call-next`),
  start: () => onCurrent("start", "CALLED", "Nobody is called: call the next patient first."),
  complete: () => onCurrent("complete", "IN_CONSULTATION", "No consultation has started: start one first."),
  skip: () => onCurrent("skip", "CALLED", "Only a called patient who did not come can be skipped."),
};

function onCurrent(action, status, otherwise) {
  const current = state.queue?.current;
  if (!current || current.status !== status) {
    showMessage(otherwise, "warn");
    return;
  }
  run(action, `/tokens/${current.tokenId}/${action}`);
}

for (const [id, handler] of Object.entries(ACTIONS)) {
  $(id).addEventListener("click", () => state.doctor && handler());
}

const SHORTCUTS = { n: "call-next", s: "start", c: "complete", k: "skip" };

document.addEventListener("keydown", (event) => {
  if (event.ctrlKey || event.metaKey || event.altKey || event.repeat) return;
  if (event.target.closest("input, select, textarea, [contenteditable]")) return;
  const id = SHORTCUTS[event.key.toLowerCase()];
  if (!id || !state.doctor) return;
  event.preventDefault();
  ACTIONS[id]();
});

chooseDoctor();
