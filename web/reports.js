// The day report (admin and viewer keys): one date's figures for the whole
// clinic or one doctor, three plain charts drawn here as SVG, the figures
// per doctor, and a range of days. Everything comes from GET /reports/day
// and GET /reports/days; nothing is loaded from another host.
//
// The page's Content-Security-Policy forbids inline styles, which includes
// `style` attributes on SVG elements: the charts use SVG presentation
// attributes (fill, stroke, font-size) and the stylesheet's classes only.

import { ApiError, authHeaders, debounce, el, get, query } from "./api.js";
import { showLive, signIn } from "./signin.js";
import { follow } from "./stream.js";
import { problemText, sourceWord } from "./words.js";

const $ = (id) => document.getElementById(id);
const SVG = "http://www.w3.org/2000/svg";

/** The colours of the charts: those of app.css, each at least 4.5:1 on white. */
const COLOUR = {
  ink: "#14202b",
  muted: "#4a5968",
  line: "#c5ced6",
  brand: "#0b4f8a",
  light: "#dcebf8",
  seen: "#1d6b32",
  noShow: "#a8201a",
  cancelled: "#4a5968",
  expired: "#8a4b00",
};

const OUTCOMES = [
  ["COMPLETED", "Seen", COLOUR.seen],
  ["NO_SHOW", "No-show", COLOUR.noShow],
  ["CANCELLED", "Cancelled", COLOUR.cancelled],
  ["EXPIRED", "Expired", COLOUR.expired],
];

const WEEKDAYS = ["Sun", "Mon", "Tue", "Wed", "Thu", "Fri", "Sat"];
const MONTHS = ["Jan", "Feb", "Mar", "Apr", "May", "Jun", "Jul", "Aug", "Sep", "Oct", "Nov", "Dec"];

const DECISIONS = [
  ["ALLOCATED", "given a seat"],
  ["BUMPED_LOWER", "took a less urgent seat"],
  ["OVERBOOKED", "overbooked"],
  ["WAITLISTED", "waitlisted"],
];

const me = await signIn({
  refuse: (me) =>
    me.role === "admin" || me.role === "viewer" ? null : `The day report needs an admin or viewer key; this one is ${me.role}.`,
});
$("day").textContent = `Today: ${me.today}`;

const params = new URLSearchParams(location.search);
$("report-date").value = params.get("date") || me.today;
const chosenDoctor = params.get("doctorId") || "";
$("range-to").value = $("report-date").value;
$("range-from").value = shiftDate($("report-date").value, -6);

/** The report of the date shown, every doctor's. */
let report = null;

$("report-form").addEventListener("submit", (event) => event.preventDefault());
$("report-date").addEventListener("change", load);
$("report-doctor").addEventListener("change", () => {
  show();
  loadRange();
});
$("report-csv").addEventListener("click", downloadCsv);
$("range-form").addEventListener("submit", (event) => {
  event.preventDefault();
  loadRange();
});

// Today's report changes as the day goes on: it is read again after
// changes, at most every two seconds.
const refresh = debounce(() => {
  if ($("report-date").value === me.today) load();
}, 2000);
follow({ onEvent: refresh, onOpen: refresh, onState: showLive });

await load();
if (chosenDoctor) {
  $("report-doctor").value = chosenDoctor;
  show();
}
loadRange();

async function load() {
  const date = $("report-date").value;
  if (!date) return;
  try {
    report = await get(`/reports/day${query({ date })}`);
  } catch (error) {
    $("report-result").replaceChildren(el("p", { class: "message error" }, problemText(error)));
    return;
  }
  $("report-result").replaceChildren();
  const select = $("report-doctor");
  const chosen = select.value;
  select.replaceChildren(
    el("option", { value: "" }, "Whole clinic"),
    ...report.doctors.map((doctor) => el("option", { value: doctor.doctorId }, `Doctor ${doctor.doctorId}`))
  );
  if (report.doctors.some((doctor) => doctor.doctorId === chosen)) select.value = chosen;
  show();
}

/** The doctors the charts and tables show: all, or the one chosen. */
function shownDoctors() {
  const chosen = $("report-doctor").value;
  return chosen ? report.doctors.filter((doctor) => doctor.doctorId === chosen) : report.doctors;
}

function show() {
  if (!report) return;
  const chosen = $("report-doctor").value;
  const figures = chosen ? shownDoctors()[0]?.figures : report.clinic;
  if (!figures) return;
  const scope = chosen ? `Doctor ${chosen}` : "Whole clinic";
  $("glance-title").textContent = `${scope}, ${longDate(report.date)}`;
  $("glance").replaceChildren(...glance(figures));
  $("chart-hours").replaceChildren(hoursChart(figures.waitsByHour, scope));
  const doctors = shownDoctors();
  $("chart-outcomes").replaceChildren(outcomesChart(doctors));
  $("chart-load").replaceChildren(loadChart(doctors));
  const patients = $("patients-table").tBodies[0];
  const times = $("times-table").tBodies[0];
  patients.replaceChildren(...doctors.map((doctor) => patientsRow(`Doctor ${doctor.doctorId}`, doctor.figures)));
  times.replaceChildren(...doctors.map((doctor) => timesRow(`Doctor ${doctor.doctorId}`, doctor.figures)));
  if (!chosen && doctors.length > 1) {
    patients.append(patientsRow("Whole clinic", report.clinic, true));
    times.append(timesRow("Whole clinic", report.clinic, true));
  }
  if (doctors.length === 0) {
    patients.append(el("tr", {}, el("td", { colspan: 8 }, "No doctor had a session or a booking on this date.")));
    times.append(el("tr", {}, el("td", { colspan: 9 }, "No doctor had a session or a booking on this date.")));
  }
}

/** The key figures as term/value tiles. */
function glance(figures) {
  const outcome = figures.outcomes;
  const share = (count) => (figures.tokens ? ` (${percent(count / figures.tokens)})` : "");
  const tiles = [
    ["Patients booked", String(figures.tokens), sourcesText(figures.bySource)],
    ["Seen", String(outcome.COMPLETED), share(outcome.COMPLETED).trim()],
    ["No-shows", String(outcome.NO_SHOW), `${share(outcome.NO_SHOW).trim()} · ${outcome.CANCELLED} cancelled, ${outcome.EXPIRED} expired`],
    [
      "Median wait for the call",
      duration(figures.waitToCall.medianSeconds),
      figures.waitToCall.count ? `90 % called within ${duration(figures.waitToCall.p90Seconds)}` : "nobody called yet",
    ],
    [
      "Median consultation",
      duration(figures.consultation.medianSeconds),
      `${figures.consultation.count} completed by the doctor`,
    ],
    [
      "Doctor time in consultation",
      figures.utilisation === null ? "–" : percent(figures.utilisation),
      `${duration(figures.consultationSeconds)} of ${duration(figures.sessionSeconds)} scheduled; idle ${duration(figures.idleSeconds)}`,
    ],
    [
      "Call estimates off by",
      duration(figures.estimateError.meanAbsoluteSeconds),
      figures.estimateError.count
        ? `on average; ${percent(figures.estimateError.underestimatedShare)} called later than told`
        : "no call measured yet",
    ],
  ];
  return tiles.map(([term, value, note]) =>
    el("div", { class: "tile" }, el("dt", {}, term), el("dd", {}, el("span", { class: "figure" }, value), el("span", { class: "note" }, note)))
  );
}

function patientsRow(name, figures, total = false) {
  const decisions = DECISIONS.filter(([code]) => figures.decisions[code] > 0)
    .map(([code, word]) => `${figures.decisions[code]} ${word}`)
    .join(", ");
  return el(
    "tr",
    { class: total ? "total" : null },
    el("th", { scope: "row" }, name),
    el("td", { class: "n" }, figures.tokens),
    el("td", {}, sourcesText(figures.bySource) || "–"),
    el("td", {}, decisions || "–"),
    ...OUTCOMES.map(([code]) => el("td", { class: "n" }, figures.outcomes[code]))
  );
}

function timesRow(name, figures, total = false) {
  const spread = (s) => (s.count ? `${duration(s.medianSeconds)} (${duration(s.p90Seconds)})` : "–");
  const estimate = figures.estimateError;
  return el(
    "tr",
    { class: total ? "total" : null },
    el("th", { scope: "row" }, name),
    el("td", { class: "n" }, spread(figures.waitToCall)),
    el("td", { class: "n" }, spread(figures.waitToStart)),
    el("td", { class: "n" }, spread(figures.consultation)),
    el("td", { class: "n" }, figures.consultation.count),
    el("td", { class: "n" }, figures.utilisation === null ? "–" : percent(figures.utilisation)),
    el("td", { class: "n" }, duration(figures.idleSeconds)),
    el("td", { class: "n" }, estimate.count ? duration(estimate.meanAbsoluteSeconds) : "–"),
    el("td", { class: "n" }, estimate.count ? percent(estimate.underestimatedShare) : "–")
  );
}

/** "2 walk-in, 1 online, …", most common first. */
function sourcesText(bySource) {
  return Object.entries(bySource)
    .filter(([, count]) => count > 0)
    .sort((a, b) => b[1] - a[1])
    .map(([source, count]) => `${count} ${sourceWord(source)}`)
    .join(", ");
}

// ---- Charts ----------------------------------------------------------

/** An SVG element with presentation attributes (never `style`). */
function svg(tag, attributes = {}, ...children) {
  const element = document.createElementNS(SVG, tag);
  for (const [name, value] of Object.entries(attributes)) {
    if (value !== null && value !== undefined) element.setAttribute(name, String(value));
  }
  for (const child of children.flat()) {
    if (child === null || child === undefined) continue;
    element.append(child instanceof Node ? child : document.createTextNode(String(child)));
  }
  return element;
}

function text(x, y, words, attributes = {}) {
  return svg("text", { x, y, "font-size": 13, fill: COLOUR.ink, ...attributes }, words);
}

/** A chart's frame: an SVG scaled to its box, with a title for screen readers. */
function frame(width, height, label, className) {
  return svg(
    "svg",
    { viewBox: `0 0 ${width} ${height}`, width: "100%", role: "img", "aria-label": label, class: `chart-svg ${className}` },
    svg("title", {}, label)
  );
}

function empty(words) {
  return el("p", { class: "hint chart-empty" }, words);
}

/** Seconds or minutes, whichever reads better for the largest value. */
function unitFor(maxSeconds) {
  return maxSeconds < 120 ? { seconds: 1, name: "s" } : { seconds: 60, name: "min" };
}

/** A round step for an axis up to `max`, with about four gridlines. */
function niceStep(max) {
  const rough = max / 4;
  const power = 10 ** Math.floor(Math.log10(rough));
  const step = [1, 2, 5, 10].map((m) => m * power).find((candidate) => candidate >= rough);
  return step || power * 10;
}

function hoursChart(hours, scope) {
  if (!hours || hours.length === 0) return empty("Nobody has been called yet on this date.");
  const max = Math.max(...hours.map((hour) => hour.p90Seconds || 0), 1);
  const unit = unitFor(max);
  const top = max / unit.seconds;
  const step = niceStep(top);
  const ceiling = Math.ceil(top / step) * step;
  const first = hours[0].hour;
  const last = hours[hours.length - 1].hour;
  const columns = last - first + 1;
  const [width, height, left, bottom, right, upper] = [560, 260, 52, 44, 12, 16];
  const plotWidth = width - left - right;
  const plotHeight = height - bottom - upper;
  const y = (value) => upper + plotHeight - (value / ceiling) * plotHeight;
  const column = plotWidth / columns;
  const chart = frame(width, height, `${scope}: median wait for the call by hour of arrival`, "hours");
  for (let value = 0; value <= ceiling + 1e-9; value += step) {
    chart.append(
      svg("line", { x1: left, x2: width - right, y1: y(value), y2: y(value), stroke: COLOUR.line, "stroke-width": 1 }),
      text(left - 6, y(value) + 4, `${round(value)}`, { "text-anchor": "end", fill: COLOUR.muted })
    );
  }
  chart.append(text(4, upper - 4, unit.name, { fill: COLOUR.muted }));
  for (let hour = first; hour <= last; hour += 1) {
    const x = left + (hour - first) * column;
    chart.append(
      text(x + column / 2, height - bottom + 18, `${String(hour).padStart(2, "0")}:00`, { "text-anchor": "middle" })
    );
    const entry = hours.find((each) => each.hour === hour);
    if (!entry) continue;
    const median = entry.medianSeconds / unit.seconds;
    const p90 = entry.p90Seconds / unit.seconds;
    const barWidth = Math.min(column * 0.6, 56);
    const barX = x + (column - barWidth) / 2;
    chart.append(
      svg(
        "rect",
        { x: barX, y: y(median), width: barWidth, height: Math.max(y(0) - y(median), 1), fill: COLOUR.brand, class: "bar" },
        svg("title", {}, `${String(hour).padStart(2, "0")}:00–${String(hour).padStart(2, "0")}:59: ${entry.count} patients, median ${duration(entry.medianSeconds)}, 90 % within ${duration(entry.p90Seconds)}`)
      ),
      svg("line", { x1: barX - 6, x2: barX + barWidth + 6, y1: y(p90), y2: y(p90), stroke: COLOUR.ink, "stroke-width": 3, class: "p90" }),
      text(x + column / 2, height - bottom + 34, `${entry.count} pt`, { "text-anchor": "middle", fill: COLOUR.muted, "font-size": 12 })
    );
  }
  return chart;
}

/** Horizontal rows, one per doctor, with the doctor's name on the left. */
function rowsFrame(doctors, label, className, legend) {
  const rowHeight = 34;
  const [width, left, upper] = [560, 96, legend ? 30 : 6];
  const height = upper + doctors.length * rowHeight + 6;
  const chart = frame(width, height, label, className);
  if (legend) {
    let x = left;
    for (const [words, colour] of legend) {
      chart.append(svg("rect", { x, y: 6, width: 14, height: 14, fill: colour }), text(x + 19, 18, words));
      x += 28 + words.length * 7.5;
    }
  }
  return { chart, width, left, upper, rowHeight };
}

function outcomesChart(doctors) {
  const withTokens = doctors.filter((doctor) => doctor.figures.tokens > 0);
  if (withTokens.length === 0) return empty("No bookings on this date.");
  const legend = OUTCOMES.map(([, words, colour]) => [words, colour]);
  const { chart, width, left, upper, rowHeight } = rowsFrame(withTokens, "Outcomes of each doctor's bookings", "outcomes", legend);
  const most = Math.max(...withTokens.map((doctor) => doctor.figures.tokens));
  const span = width - left - 100;
  withTokens.forEach((doctor, row) => {
    const y = upper + row * rowHeight;
    chart.append(text(left - 8, y + 21, `Dr ${doctor.doctorId}`, { "text-anchor": "end", "font-weight": 600 }));
    let x = left;
    for (const [code, words, colour] of OUTCOMES) {
      const count = doctor.figures.outcomes[code];
      if (!count) continue;
      const w = (count / most) * span;
      chart.append(
        svg("rect", { x, y: y + 6, width: w, height: 22, fill: colour, class: `segment ${code}` }, svg("title", {}, `Doctor ${doctor.doctorId}: ${count} ${words.toLowerCase()}`))
      );
      if (w >= 18) chart.append(text(x + w / 2, y + 22, count, { "text-anchor": "middle", fill: "#ffffff", "font-weight": 700 }));
      x += w;
    }
    const ended = OUTCOMES.reduce((sum, [code]) => sum + doctor.figures.outcomes[code], 0);
    const open = doctor.figures.tokens - ended;
    chart.append(text(x + 6, y + 22, open > 0 ? `${open} still open` : "", { fill: COLOUR.muted }));
  });
  return chart;
}

function loadChart(doctors) {
  const withSessions = doctors.filter((doctor) => doctor.figures.sessionSeconds > 0 || doctor.figures.consultationSeconds > 0);
  if (withSessions.length === 0) return empty("No sessions on this date.");
  const legend = [["In consultation", COLOUR.brand], ["Scheduled, not in consultation", COLOUR.light]];
  const { chart, width, left, upper, rowHeight } = rowsFrame(withSessions, "Time in consultation out of each doctor's session", "load", legend);
  const longest = Math.max(...withSessions.map((doctor) => Math.max(doctor.figures.sessionSeconds, doctor.figures.consultationSeconds)));
  const span = width - left - 150;
  withSessions.forEach((doctor, row) => {
    const figures = doctor.figures;
    const y = upper + row * rowHeight;
    const session = (figures.sessionSeconds / longest) * span;
    const busy = (figures.consultationSeconds / longest) * span;
    chart.append(
      text(left - 8, y + 21, `Dr ${doctor.doctorId}`, { "text-anchor": "end", "font-weight": 600 }),
      svg("rect", { x: left, y: y + 6, width: Math.max(session, 1), height: 22, fill: COLOUR.light, stroke: COLOUR.brand, "stroke-width": 1, class: "session" }),
      svg("rect", { x: left, y: y + 6, width: busy, height: 22, fill: COLOUR.brand, class: "busy" }, svg("title", {}, `Doctor ${doctor.doctorId}: ${duration(figures.consultationSeconds)} in consultation of ${duration(figures.sessionSeconds)} scheduled`)),
      text(left + Math.max(session, busy) + 8, y + 22, `${figures.utilisation === null ? "–" : percent(figures.utilisation)} · ${figures.tokens} booked`)
    );
  });
  return chart;
}

// ---- Range -----------------------------------------------------------

async function loadRange() {
  const from = $("range-from").value;
  const to = $("range-to").value;
  const out = $("range-result");
  if (!from || !to) {
    out.replaceChildren(el("p", { class: "message error" }, "Choose the first and the last date."));
    return;
  }
  let range;
  try {
    range = await get(`/reports/days${query({ from, to, doctorId: $("report-doctor").value })}`);
  } catch (error) {
    out.replaceChildren(el("p", { class: "message error" }, problemText(error)));
    return;
  }
  out.replaceChildren();
  const chosen = $("report-doctor").value;
  const rows = range.days.map((day) => ({ date: day.date, figures: chosen ? day.doctors[0]?.figures : day.clinic }));
  $("chart-range").replaceChildren(rangeChart(rows.filter((row) => row.figures), chosen ? `Doctor ${chosen}` : "Whole clinic"));
  $("range-table").tBodies[0].replaceChildren(
    ...rows.map(({ date, figures }) =>
      figures
        ? el(
            "tr",
            {},
            el("th", { scope: "row" }, longDate(date)),
            el("td", { class: "n" }, figures.tokens),
            el("td", { class: "n" }, figures.outcomes.COMPLETED),
            el("td", { class: "n" }, figures.outcomes.NO_SHOW),
            el("td", { class: "n" }, figures.outcomes.CANCELLED),
            el("td", { class: "n" }, figures.waitToCall.count ? `${duration(figures.waitToCall.medianSeconds)} (${duration(figures.waitToCall.p90Seconds)})` : "–"),
            el("td", { class: "n" }, figures.consultation.count ? duration(figures.consultation.medianSeconds) : "–"),
            el("td", { class: "n" }, figures.utilisation === null ? "–" : percent(figures.utilisation))
          )
        : el("tr", {}, el("th", { scope: "row" }, longDate(date)), el("td", { colspan: 7 }, "–"))
    )
  );
}

/** Patients booked and seen per day, as pairs of bars. */
function rangeChart(rows, scope) {
  if (rows.every((row) => row.figures.tokens === 0)) return empty("No bookings on these dates.");
  const [width, height, left, bottom, upper] = [900, 190, 40, 36, 30];
  const most = Math.max(...rows.map((row) => row.figures.tokens), 1);
  const step = niceStep(most);
  const ceiling = Math.ceil(most / step) * step;
  const plotHeight = height - bottom - upper;
  const y = (value) => upper + plotHeight - (value / ceiling) * plotHeight;
  const column = (width - left - 8) / rows.length;
  const chart = frame(width, height, `${scope}: patients booked and seen per day`, "range");
  chart.append(
    svg("rect", { x: left, y: 6, width: 14, height: 14, fill: COLOUR.light, stroke: COLOUR.brand }),
    text(left + 19, 18, "Booked"),
    svg("rect", { x: left + 90, y: 6, width: 14, height: 14, fill: COLOUR.seen }),
    text(left + 109, 18, "Seen")
  );
  for (let value = 0; value <= ceiling; value += step) {
    chart.append(
      svg("line", { x1: left, x2: width - 8, y1: y(value), y2: y(value), stroke: COLOUR.line }),
      text(left - 6, y(value) + 4, value, { "text-anchor": "end", fill: COLOUR.muted })
    );
  }
  const labelEvery = Math.ceil(rows.length / 15);
  rows.forEach((row, index) => {
    const x = left + index * column;
    const barWidth = Math.min(column * 0.38, 24);
    const booked = row.figures.tokens;
    const seen = row.figures.outcomes.COMPLETED;
    chart.append(
      svg("rect", { x: x + column / 2 - barWidth, y: y(booked), width: barWidth, height: y(0) - y(booked), fill: COLOUR.light, stroke: COLOUR.brand, class: "booked" }, svg("title", {}, `${row.date}: ${booked} booked`)),
      svg("rect", { x: x + column / 2, y: y(seen), width: barWidth, height: y(0) - y(seen), fill: COLOUR.seen, class: "seen" }, svg("title", {}, `${row.date}: ${seen} seen`))
    );
    if (index % labelEvery === 0) {
      chart.append(text(x + column / 2, height - bottom + 18, shortDate(row.date), { "text-anchor": "middle", "font-size": 12 }));
    }
  });
  return chart;
}

// ---- CSV -------------------------------------------------------------

/** Downloads the date's report as CSV (the key goes in a header, so the file is fetched, then saved). */
async function downloadCsv() {
  const date = $("report-date").value;
  const doctorId = $("report-doctor").value;
  try {
    const response = await fetch(`/reports/day${query({ date, doctorId })}`, {
      headers: { Accept: "text/csv", ...authHeaders() },
      cache: "no-store",
    });
    if (!response.ok) throw new ApiError(response.status, await response.json().catch(() => ({})));
    const url = URL.createObjectURL(await response.blob());
    const link = el("a", { href: url, download: `opd-report-${date}${doctorId ? `-${doctorId}` : ""}.csv` });
    document.body.append(link);
    link.click();
    link.remove();
    setTimeout(() => URL.revokeObjectURL(url), 10_000);
  } catch (error) {
    $("report-result").replaceChildren(el("p", { class: "message error" }, problemText(error)));
  }
}

// ---- Words -----------------------------------------------------------

/** "12 min", "1 h 05 min", "40 s"; "–" when there is nothing to show. */
function duration(seconds) {
  if (seconds === null || seconds === undefined) return "–";
  if (seconds < 60) return `${Math.round(seconds)} s`;
  const minutes = Math.round(seconds / 60);
  if (minutes < 60) return `${minutes} min`;
  return `${Math.floor(minutes / 60)} h ${String(minutes % 60).padStart(2, "0")} min`;
}

function percent(share) {
  return share === null || share === undefined ? "–" : `${Math.round(share * 100)} %`;
}

function round(value) {
  return Number.isInteger(value) ? String(value) : value.toFixed(1);
}

/** "Tue 15 Jan 2030" for a YYYY-MM-DD date (a calendar date: no time zone involved). */
function longDate(date) {
  const [y, m, d] = date.split("-").map(Number);
  return `${WEEKDAYS[new Date(Date.UTC(y, m - 1, d)).getUTCDay()]} ${d} ${MONTHS[m - 1]} ${y}`;
}

/** "15 Jan" for a YYYY-MM-DD date. */
function shortDate(date) {
  const [, m, d] = date.split("-").map(Number);
  return `${d} ${MONTHS[m - 1]}`;
}

/** The date `days` after (or before) a YYYY-MM-DD date. */
function shiftDate(date, days) {
  const [y, m, d] = date.split("-").map(Number);
  return new Date(Date.UTC(y, m - 1, d + days)).toISOString().slice(0, 10);
}
