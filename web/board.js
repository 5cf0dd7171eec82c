// The waiting-hall board. It reads only GET /board and GET /events, which
// carry token numbers and no patient ids: the screen is public.
//
// When a token is called, the board chimes and says "Token 12, Doctor D1"
// through the browser's speech synthesis, once per call (each call is one
// event, and the stream gives each event once, across reconnections), in
// the language the page is set to: `?lang=hi` or the selector at the
// bottom.

import { debounce, el, get, query } from "./api.js";
import { showLive, signIn } from "./signin.js";
import { follow } from "./stream.js";

const LANGUAGES = {
  en: {
    title: "Waiting hall",
    doctor: (doctor) => `Doctor ${doctor}`,
    now: "Now serving",
    next: "Next",
    waiting: "Waiting",
    CALLED: "Please go in",
    IN_CONSULTATION: "In consultation",
    noDoctors: "No doctor has a slot today.",
    live: "● Live",
    reconnecting: "○ Reconnecting…",
    sound: "Turn sound on",
    language: "Language",
    say: (token, doctor) => `Token ${token}, Doctor ${doctor}`,
    speech: "en-IN",
  },
  hi: {
    title: "प्रतीक्षा कक्ष",
    doctor: (doctor) => `डॉक्टर ${doctor}`,
    now: "अभी",
    next: "अगले",
    waiting: "प्रतीक्षा में",
    CALLED: "कृपया अंदर जाएँ",
    IN_CONSULTATION: "परामर्श जारी",
    noDoctors: "आज किसी डॉक्टर का स्लॉट नहीं है।",
    live: "● लाइव",
    reconnecting: "○ फिर से जुड़ रहा है…",
    sound: "आवाज़ चालू करें",
    language: "भाषा",
    say: (token, doctor) => `टोकन ${token}, डॉक्टर ${doctor}`,
    speech: "hi-IN",
  },
};

const $ = (id) => document.getElementById(id);
const params = new URLSearchParams(location.search);
const doctors = params.getAll("doctorId");
let lang = LANGUAGES[params.get("lang")] ? params.get("lang") : "en";
let words = LANGUAGES[lang];
let board = null;
/** Doctors whose card flashes because one of their tokens was just called. */
const justCalled = new Map();
/** Ids of the call events already announced: each call is said once. */
const announced = new Set();

await signIn();

$("language").value = lang;
$("language").addEventListener("change", () => {
  lang = $("language").value;
  words = LANGUAGES[lang];
  const url = new URL(location.href);
  url.searchParams.set("lang", lang);
  history.replaceState(null, "", url);
  applyLanguage();
  render();
});
$("sound").addEventListener("click", () => {
  audio()?.resume();
  $("sound").hidden = true;
});
applyLanguage();
tick();
setInterval(tick, 1000);

const refresh = debounce(load, 100);

follow({
  filters: { doctorId: doctors },
  onEvent: (event) => {
    if (event.type === "token" && event.data.to === "CALLED") announce(event);
    refresh();
  },
  onOpen: refresh,
  onState: (state) => {
    showLive(state);
    const live = $("live");
    if (words[state]) live.textContent = words[state];
  },
});

async function load() {
  try {
    board = await get(`/board${query({ doctorId: doctors })}`);
  } catch {
    // The stream's reconnection reloads the board when the server is back.
    return;
  }
  render();
}

function applyLanguage() {
  document.documentElement.lang = lang;
  $("board-title").textContent = words.title;
  document.title = `${words.title} · OPD`;
  $("language-label").textContent = words.language;
  $("sound").textContent = words.sound;
  const live = $("live");
  if (words[live.dataset.state]) live.textContent = words[live.dataset.state];
}

function render() {
  if (!board) return;
  const list = $("doctors");
  const count = board.doctors.length;
  list.style.setProperty("--columns", String(count <= 3 ? Math.max(count, 1) : count <= 4 ? 2 : count <= 6 ? 3 : 4));
  $("empty").hidden = count > 0;
  $("empty").textContent = words.noDoctors;
  list.replaceChildren(
    ...board.doctors.map((doctor) => {
      const now = doctor.nowServing;
      const flashing = (justCalled.get(doctor.doctorId) || 0) > Date.now();
      return el(
        "li",
        { class: `board-card${flashing ? " just-called" : ""}`, "data-doctor": doctor.doctorId },
        el(
          "header",
          {},
          el("h2", {}, words.doctor(doctor.doctorId)),
          el("span", { class: "waiting" }, `${words.waiting}: `, el("strong", { class: "waiting-count" }, doctor.waiting))
        ),
        el(
          "div",
          { class: "now" },
          el("span", { class: "now-label" }, words.now),
          el("span", { class: `number${now ? "" : " none"}` }, now ? now.tokenNumber : "—"),
          el("span", { class: `state ${now ? now.status : ""}` }, now ? words[now.status] || "" : "")
        ),
        el(
          "div",
          { class: "next" },
          el("span", { class: "next-label" }, `${words.next}:`),
          el("ol", {}, doctor.next.map((number) => el("li", {}, number)))
        )
      );
    })
  );
}

function tick() {
  const now = new Date();
  const clock = $("clock");
  clock.dateTime = now.toISOString();
  clock.textContent = now.toLocaleTimeString([], { hour: "2-digit", minute: "2-digit", hour12: false });
}

function announce(event) {
  if (announced.has(event.id)) return;
  announced.add(event.id);
  const { tokenNumber, doctorId } = event.data;
  justCalled.set(doctorId, Date.now() + 12_000);
  setTimeout(render, 12_100);
  const text = words.say(tokenNumber, doctorId);
  $("announcement").textContent = text;
  chime();
  // After the chime has rung out; the browser queues utterances in order.
  setTimeout(() => speak(text, words.speech), 900);
}

function speak(text, language) {
  if (!("speechSynthesis" in window)) return;
  const utterance = new SpeechSynthesisUtterance(text);
  utterance.lang = language;
  utterance.rate = 0.9;
  const voice = speechSynthesis.getVoices().find((candidate) => candidate.lang.replace("_", "-").startsWith(language.slice(0, 2)));
  if (voice) utterance.voice = voice;
  speechSynthesis.speak(utterance);
}

let context = null;
function audio() {
  if (!context && window.AudioContext) context = new AudioContext();
  return context;
}

/** A two-note chime made on the spot (no sound file to fetch). */
function chime() {
  const ctx = audio();
  if (!ctx) return;
  if (ctx.state !== "running") {
    ctx.resume();
    // A browser that allows no sound before someone touches the page: a
    // button says so (a kiosk can allow it from the start instead).
    setTimeout(() => {
      if (ctx.state !== "running") $("sound").hidden = false;
    }, 300);
  }
  [
    [659.25, 0],
    [523.25, 0.35],
  ].forEach(([frequency, delay]) => {
    const oscillator = ctx.createOscillator();
    const gain = ctx.createGain();
    oscillator.type = "sine";
    oscillator.frequency.value = frequency;
    const start = ctx.currentTime + delay;
    gain.gain.setValueAtTime(0.0001, start);
    gain.gain.exponentialRampToValueAtTime(0.4, start + 0.02);
    gain.gain.exponentialRampToValueAtTime(0.0001, start + 0.8);
    oscillator.connect(gain).connect(ctx.destination);
    oscillator.start(start);
    oscillator.stop(start + 0.85);
  });
}
