// Signing in: the page asks the server who its key is (GET /me). An open
// server (no keys configured, loopback only) answers without a key; a
// server with keys gets one typed into the sign-in dialog, once per tab.

import { ApiError, el, forgetKey, get, storeKey, storedKey, whenUnauthorized } from "./api.js";

/**
 * Signs the page in. `refuse(me)` returns why the key's role may not use
 * this page (shown in the dialog), or null. Resolves with the key's
 * description from GET /me: {name, role, doctorId, today}.
 */
export async function signIn({ refuse = () => null } = {}) {
  let me = null;
  let reason = null;
  try {
    me = await get("/me");
    reason = refuse(me);
    if (reason) forgetKey();
  } catch (error) {
    if (!(error instanceof ApiError) || error.status !== 401) throw error;
    if (storedKey()) {
      forgetKey();
      reason = "The key this tab used is no longer valid. Sign in again.";
    }
  }
  if (!me || reason) me = await askForKey(refuse, reason);
  // From now on a 401 means the key was withdrawn (the keys file was
  // reloaded without it): start over with the sign-in dialog.
  whenUnauthorized(() => {
    forgetKey();
    location.reload();
  });
  showWho(me);
  return me;
}

function askForKey(refuse, reason) {
  const message = el("p", { id: "signin-message", class: "message error", role: "alert" }, reason || "");
  const input = el("input", {
    id: "signin-key",
    name: "key",
    type: "password",
    autocomplete: "off",
    spellcheck: "false",
    required: true,
    "aria-describedby": "signin-help signin-message",
  });
  const form = el(
    "form",
    { method: "dialog" },
    el("h2", { id: "signin-title" }, "Sign in"),
    el(
      "p",
      { id: "signin-help" },
      "Type the API key you were given. It is kept only while this tab is open."
    ),
    el("label", { for: "signin-key" }, "API key"),
    input,
    message,
    el("button", { type: "submit", class: "primary" }, "Sign in")
  );
  const dialog = el("dialog", { id: "signin", "aria-labelledby": "signin-title" }, form);
  document.body.append(dialog);
  // The dialog cannot be dismissed: the page is of no use without a key.
  dialog.addEventListener("cancel", (event) => event.preventDefault());
  dialog.showModal();
  input.focus();
  return new Promise((resolve) => {
    form.addEventListener("submit", async (event) => {
      event.preventDefault();
      const key = input.value.trim();
      if (!key) return;
      message.textContent = "";
      try {
        const me = await get("/me", { key });
        const refused = refuse(me);
        if (refused) {
          message.textContent = refused;
          return;
        }
        storeKey(key);
        dialog.close();
        dialog.remove();
        resolve(me);
      } catch (error) {
        message.textContent =
          error.status === 401
            ? "The server does not know this key. Check it and try again."
            : error.message;
      }
    });
  });
}

/** "Signed in as desk-1 (front-desk)" and a sign-out button in the page's header. */
function showWho(me) {
  const who = document.getElementById("who");
  if (!who) return;
  who.replaceChildren();
  if (!storedKey()) {
    who.append(el("span", {}, "Open server: no key needed"));
    return;
  }
  who.append(
    el("span", {}, `Signed in as ${me.name} (${me.role})`),
    el(
      "button",
      {
        type: "button",
        class: "quiet",
        onclick: () => {
          forgetKey();
          location.reload();
        },
      },
      "Sign out"
    )
  );
}

/** Shows the event stream's state in the header's status line. */
export function showLive(state) {
  const live = document.getElementById("live");
  if (!live) return;
  const words = {
    live: "● Live",
    reconnecting: "○ Reconnecting…",
    unauthorized: "Signed out",
  };
  live.textContent = words[state] || state;
  live.dataset.state = state;
}
