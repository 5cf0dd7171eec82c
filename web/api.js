// Calls to the OPD Token Engine's API from the pages.
//
// The API key is typed once per browser tab and kept in sessionStorage:
// it survives a reload of the page, never outlives the tab, never goes
// into a URL, and is sent only as `Authorization: Bearer <key>`, the
// header the API already takes. No cookie is involved, so another site's
// page cannot make the browser act with it (no CSRF to defend against).

const KEY_ITEM = "opd.apiKey";

/** The key this tab signed in with, or null (an open server needs none). */
export function storedKey() {
  return sessionStorage.getItem(KEY_ITEM);
}

export function storeKey(key) {
  sessionStorage.setItem(KEY_ITEM, key);
}

export function forgetKey() {
  sessionStorage.removeItem(KEY_ITEM);
}

/** The headers every call sends: the key, when there is one. */
export function authHeaders(key = storedKey()) {
  return key ? { Authorization: `Bearer ${key}` } : {};
}

/** An error answer of the API (problem+json), or a failed connection. */
export class ApiError extends Error {
  constructor(status, problem) {
    super(problem.detail || problem.title || `HTTP ${status}`);
    this.status = status;
    this.code = problem.code || (status === 0 ? "NETWORK" : `HTTP_${status}`);
    this.problem = problem;
  }
}

// Called when the server says the key is not (or no longer) valid, so the
// page can ask for a key again.
let onUnauthorized = () => {};
export function whenUnauthorized(handler) {
  onUnauthorized = handler;
}

/** Tells the page that the server refused the key (401). */
export function unauthorized() {
  onUnauthorized();
}

/**
 * Calls the API: `method` on `path` with an optional JSON `body`. Resolves
 * with the parsed JSON answer; rejects with an ApiError.
 */
export async function call(method, path, body, { key = storedKey() } = {}) {
  const headers = { Accept: "application/json", ...authHeaders(key) };
  const init = { method, headers, cache: "no-store" };
  if (body !== undefined) {
    headers["Content-Type"] = "application/json";
    init.body = JSON.stringify(body);
  }
  let response;
  try {
    response = await fetch(path, init);
  } catch {
    throw new ApiError(0, { detail: "The server cannot be reached. Check the network; the page keeps trying." });
  }
  const text = await response.text();
  let data = null;
  if (text) {
    try {
      data = JSON.parse(text);
    } catch {
      data = { detail: text };
    }
  }
  if (!response.ok) {
    const error = new ApiError(response.status, data || {});
    if (response.status === 401) unauthorized();
    throw error;
  }
  return data;
}

export const get = (path, options) => call("GET", path, undefined, options);
export const post = (path, body, options) => call("POST", path, body ?? {}, options);
export const patch = (path, body, options) => call("PATCH", path, body, options);

/** `?a=1&b=2` from an object, leaving out empty values; arrays repeat. */
export function query(params) {
  const search = new URLSearchParams();
  for (const [name, value] of Object.entries(params)) {
    for (const one of [].concat(value)) {
      if (one !== undefined && one !== null && one !== "") search.append(name, one);
    }
  }
  const text = search.toString();
  return text ? `?${text}` : "";
}

/** Calls `fn` at most once per `ms`, after the last of a burst of calls. */
export function debounce(fn, ms) {
  let timer = null;
  return (...args) => {
    clearTimeout(timer);
    timer = setTimeout(() => fn(...args), ms);
  };
}

/** A DOM element: `el("td", {class: "n"}, "text", child)`. Text is never parsed as HTML. */
export function el(tag, attributes = {}, ...children) {
  const element = document.createElement(tag);
  for (const [name, value] of Object.entries(attributes)) {
    if (value === false || value === null || value === undefined) continue;
    if (name.startsWith("on") && typeof value === "function") {
      element.addEventListener(name.slice(2), value);
    } else if (value === true) {
      element.setAttribute(name, "");
    } else {
      element.setAttribute(name, value);
    }
  }
  for (const child of children.flat(Infinity)) {
    if (child === null || child === undefined || child === false) continue;
    element.append(child instanceof Node ? child : document.createTextNode(String(child)));
  }
  return element;
}

/** HH:MM in the browser's time zone (the clinic's, on its own screens). */
export function clock(iso) {
  if (!iso) return "";
  return new Date(iso).toLocaleTimeString([], { hour: "2-digit", minute: "2-digit", hour12: false });
}
