// What the browser tests share: the keys, calls to the API to arrange a
// scene, signing a page in, and starting a server of their own.

import { spawn } from "node:child_process";
import { mkdtempSync, rmSync } from "node:fs";
import { createServer } from "node:net";
import { tmpdir } from "node:os";
import { join, dirname } from "node:path";
import { fileURLToPath } from "node:url";

export const KEYS = {
  admin: "TEST-admin-key-0000000001",
  desk1: "TEST-desk-1-key-000000002",
  desk2: "TEST-desk-2-key-000000003",
  doctorWard: "TEST-doctor-ward-key-0004",
  viewer: "TEST-viewer-key-000000005",
};

export const KEYS_FILE = join(dirname(fileURLToPath(import.meta.url)), "api-keys.test");

/** The shared server that scripts/browser-check.sh started. */
export const BASE = process.env.OPD_URL;

let counter = 0;
/** An id no other test uses: tests on the shared server stay apart. */
export function unique(prefix) {
  counter += 1;
  return `${prefix}${Date.now().toString(36).slice(-5).toUpperCase()}${counter}`;
}

/** Calls the API of the server at `base` with `key`; throws on an unexpected status. */
export async function api(base, key, method, path, body, expected = [200, 201]) {
  const response = await fetch(`${base}${path}`, {
    method,
    headers: {
      Authorization: `Bearer ${key}`,
      Accept: "application/json",
      ...(body ? { "Content-Type": "application/json" } : {}),
    },
    body: body ? JSON.stringify(body) : undefined,
  });
  const text = await response.text();
  const data = text ? JSON.parse(text) : null;
  if (!expected.includes(response.status)) {
    throw new Error(`${method} ${path}: ${response.status} ${text}`);
  }
  return data;
}

/** Today in the clinic's zone, as the server says. */
export async function today(base = BASE) {
  return (await api(base, KEYS.admin, "GET", "/me")).today;
}

/** Creates a slot for `doctorId` today and returns its id. */
export async function slot(base, doctorId, { start = "09:00", end = "10:00", capacity = 3 } = {}) {
  const slotId = `${doctorId}-${start.replace(":", "")}`;
  await api(base, KEYS.admin, "POST", "/slots", {
    slotId,
    doctorId,
    date: await today(base),
    startTime: start,
    endTime: end,
    capacity,
  });
  return slotId;
}

export async function book(base, patientId, slotId, source = "ONLINE") {
  return (await api(base, KEYS.desk1, "POST", "/tokens", { patientId, slotId, source })).token;
}

export async function act(base, tokenId, action) {
  return api(base, KEYS.desk1, "POST", `/tokens/${tokenId}/${action}`);
}

/** Opens `path` in `page` and signs in with `key` through the sign-in dialog. */
export async function signedIn(page, path, key) {
  await page.goto(path);
  const dialog = page.getByRole("dialog", { name: "Sign in" });
  await dialog.getByLabel("API key").fill(key);
  await dialog.getByRole("button", { name: "Sign in" }).click();
  await dialog.waitFor({ state: "detached" });
}

/** Records what the page's speech synthesis is asked to say, instead of saying it. */
export async function recordSpeech(page) {
  await page.addInitScript(() => {
    window.__spoken = [];
    const speak = (utterance) => window.__spoken.push({ text: utterance.text, lang: utterance.lang });
    if (window.speechSynthesis) {
      window.speechSynthesis.speak = speak;
    } else {
      window.speechSynthesis = { speak, getVoices: () => [] };
    }
  });
}

export async function spoken(page) {
  return page.evaluate(() => window.__spoken);
}

async function freePort() {
  return new Promise((resolve, reject) => {
    const server = createServer();
    server.listen(0, "127.0.0.1", () => {
      const { port } = server.address();
      server.close(() => resolve(port));
    });
    server.on("error", reject);
  });
}

/**
 * A server of the test's own (the release binary, OPD_BINARY) on a free
 * port with its own data directory, which it can stop and start again on
 * the same port and data. `env` adds to its environment.
 */
export class OwnServer {
  static async start({ env = {} } = {}) {
    const server = new OwnServer(await freePort(), mkdtempSync(join(tmpdir(), "opd-browser-")), env);
    await server.start();
    return server;
  }

  constructor(port, dataDir, env = {}) {
    this.port = port;
    this.dataDir = dataDir;
    this.env = env;
    this.base = `http://127.0.0.1:${port}`;
    this.process = null;
  }

  async start() {
    const binary = process.env.OPD_BINARY;
    if (!binary) throw new Error("OPD_BINARY names the server binary (scripts/browser-check.sh sets it)");
    this.process = spawn(
      binary,
      [
        "--listen", `127.0.0.1:${this.port}`,
        "--data-dir", this.dataDir,
        "--api-keys-file", KEYS_FILE,
        "--rate-limit-per-second", "0",
      ],
      { stdio: "ignore", env: { ...process.env, ...this.env } }
    );
    const exited = new Promise((resolve) => this.process.once("exit", resolve));
    for (let attempt = 0; attempt < 200; attempt += 1) {
      try {
        const response = await fetch(`${this.base}/healthz`);
        if (response.ok) return;
      } catch {
        // Not listening yet.
      }
      const gone = await Promise.race([exited.then(() => true), new Promise((resolve) => setTimeout(() => resolve(false), 50))]);
      if (gone) throw new Error(`the server on port ${this.port} exited at start-up`);
    }
    throw new Error(`the server on port ${this.port} did not become healthy`);
  }

  async stop() {
    if (!this.process) return;
    const exited = new Promise((resolve) => this.process.once("exit", resolve));
    this.process.kill("SIGTERM");
    await exited;
    this.process = null;
  }

  async dispose() {
    await this.stop();
    rmSync(this.dataDir, { recursive: true, force: true });
  }
}

/** Books through the desk page's form. */
export async function bookAtDesk(page, patientId, slotId, source) {
  await page.getByLabel("Patient id", { exact: true }).fill(patientId);
  await page.getByRole("combobox", { name: "Slot", exact: true }).selectOption(slotId);
  await page.getByRole("combobox", { name: "Source", exact: true }).selectOption(source);
  await page.getByRole("button", { name: "Book", exact: true }).click();
}
