// Follows GET /events (Server-Sent Events) and keeps following it.
//
// A browser's EventSource cannot send an Authorization header, so the
// stream is read with fetch, which can, and parsed here. When the stream
// ends or breaks (a network drop, a server restart) it reconnects by
// itself, sending the last event id it saw as Last-Event-ID, and the
// server resumes with the next event: nothing is missed and nothing comes
// twice.

import { authHeaders, query, unauthorized } from "./api.js";

/** With no byte for this long (the server sends a comment every 15 s), the connection is taken as dead. */
const SILENCE_MS = 40_000;
/** Waits between reconnection attempts, growing to the last one. */
const BACKOFF_MS = [250, 500, 1000, 2000, 3000];

/**
 * Follows the stream with `filters` (doctorId, slotId). Calls
 * `onEvent({id, type, data})` for each event, `onOpen()` each time the
 * stream (re)opens (the page reloads its view then: what happened while it
 * was away arrives as events too, but a fresh read is simplest), and
 * `onState(state, detail)` with "live", "reconnecting" or "unauthorized".
 * Returns a function that stops following.
 */
export function follow({ filters = {}, onEvent, onOpen = () => {}, onState = () => {} }) {
  let lastId = null;
  let stopped = false;
  let controller = null;
  let attempt = 0;

  async function connectOnce() {
    controller = new AbortController();
    const headers = { Accept: "text/event-stream", ...authHeaders() };
    if (lastId !== null) headers["Last-Event-ID"] = String(lastId);
    let watchdog = null;
    const feed = () => {
      clearTimeout(watchdog);
      watchdog = setTimeout(() => controller.abort(), SILENCE_MS);
    };
    try {
      feed();
      const response = await fetch(`/events${query(filters)}`, {
        headers,
        cache: "no-store",
        signal: controller.signal,
      });
      if (response.status === 401) {
        onState("unauthorized");
        unauthorized();
        return false;
      }
      if (!response.ok || !response.body) {
        onState("reconnecting", `the server answered ${response.status}`);
        return true;
      }
      attempt = 0;
      onState("live");
      onOpen();
      const reader = response.body.pipeThrough(new TextDecoderStream()).getReader();
      let buffer = "";
      for (;;) {
        const { value, done } = await reader.read();
        if (done) break;
        feed();
        buffer += value.replace(/\r\n?/g, "\n");
        let end;
        while ((end = buffer.indexOf("\n\n")) >= 0) {
          const block = buffer.slice(0, end);
          buffer = buffer.slice(end + 2);
          const event = parse(block);
          if (!event) continue;
          if (event.id !== null) lastId = event.id;
          onEvent(event);
        }
      }
    } catch {
      // A dropped connection, a refused one while the server restarts, or
      // the watchdog's abort: all end in a reconnection.
    } finally {
      clearTimeout(watchdog);
    }
    if (!stopped) onState("reconnecting");
    return true;
  }

  (async () => {
    while (!stopped) {
      const again = await connectOnce();
      if (!again || stopped) return;
      const wait = BACKOFF_MS[Math.min(attempt, BACKOFF_MS.length - 1)];
      attempt += 1;
      await new Promise((resolve) => setTimeout(resolve, wait));
    }
  })();

  return () => {
    stopped = true;
    controller?.abort();
  };
}

/** One event block of the stream as {id, type, data}; null for a comment. */
function parse(block) {
  let id = null;
  let type = "message";
  const data = [];
  for (const line of block.split("\n")) {
    if (line === "" || line.startsWith(":")) continue;
    const colon = line.indexOf(":");
    const field = colon < 0 ? line : line.slice(0, colon);
    let value = colon < 0 ? "" : line.slice(colon + 1);
    if (value.startsWith(" ")) value = value.slice(1);
    if (field === "id") id = Number(value);
    else if (field === "event") type = value;
    else if (field === "data") data.push(value);
  }
  if (data.length === 0) return null;
  let parsed;
  try {
    parsed = JSON.parse(data.join("\n"));
  } catch {
    return null;
  }
  return { id, type, data: parsed };
}
