// The HTTP side of the page: the signed-in session (tokens kept in localStorage,
// renewed before they expire, one renewal at a time across tabs) and `api()`,
// a fetch wrapper that adds the Bearer token and turns every error shape of
// Parley's surfaces into one readable message.

const KEY = "parley.session";
const RENEW_BEFORE_MS = 120_000; // renew two minutes before the access token expires

export class ApiError extends Error {
  constructor(status, message, body) {
    super(message);
    this.status = status;
    this.body = body;
  }
}

/** The message of any Parley error body: {error}, {error:{message}}, problem+json, {message}, {detail}. */
export function errorMessage(status, body) {
  if (body && typeof body === "object") {
    const e = body.error;
    if (typeof e === "string") return e;
    if (e && typeof e.message === "string") return e.message;
    if (typeof body.detail === "string") {
      const fields = Array.isArray(body.errors) ? body.errors.map((f) => `${f.field}: ${f.message}`) : [];
      return fields.length ? fields.join("; ") : body.detail;
    }
    if (typeof body.message === "string") return body.message;
  }
  if (typeof body === "string" && body) return body;
  return status ? `HTTP ${status}` : "the server could not be reached";
}

class Session {
  constructor() {
    this.listeners = new Set();
    this.timer = null;
    window.addEventListener("storage", (e) => {
      if (e.key === KEY) this.emit(); // another tab signed in, out, or renewed
    });
  }

  get data() {
    try { return JSON.parse(localStorage.getItem(KEY) || "null"); } catch { return null; }
  }

  get token() { return this.data?.access_token ?? null; }
  get user() { return this.data?.user ?? null; }

  onChange(fn) { this.listeners.add(fn); }

  emit() {
    this.schedule();
    for (const fn of this.listeners) fn(this.data);
  }

  /** Keep the tokens of a sign-in, verify or renewal answer. */
  save(tokens, user) {
    const data = {
      access_token: tokens.access_token,
      refresh_token: tokens.refresh_token,
      expires_at: Date.now() + (tokens.expires_in ?? 3600) * 1000,
      user: tokens.user ?? user ?? this.user,
    };
    localStorage.setItem(KEY, JSON.stringify(data));
    this.emit();
  }

  clear() {
    localStorage.removeItem(KEY);
    this.emit();
  }

  schedule() {
    clearTimeout(this.timer);
    const data = this.data;
    if (!data) return;
    // jitter: tabs without Web Locks (plain http) then rarely renew at the same moment,
    // and the later one finds the renewed token and keeps it
    const jitter = navigator.locks ? 0 : Math.random() * 30_000;
    const wait = Math.max(0, data.expires_at - RENEW_BEFORE_MS - Date.now() + jitter);
    this.timer = setTimeout(() => this.renew().catch(() => {}), Math.min(wait, 2 ** 31 - 1));
  }

  /** Renew the access token.  One renewal at a time across tabs: a refresh token is
   * single-use, and presenting a rotated one signs the user out everywhere. */
  async renew() {
    const run = async () => {
      const before = this.data;
      if (!before) return false;
      if (before.expires_at - Date.now() > RENEW_BEFORE_MS + 5_000 && this.renewedBy !== before.refresh_token) {
        return true; // another tab renewed it already
      }
      const r = await fetch("/api/v1/auth/sessions/refresh", {
        method: "POST",
        headers: { "Content-Type": "application/json" },
        body: JSON.stringify({ refresh_token: before.refresh_token }),
      });
      if (r.status === 401) { this.clear(); return false; }
      if (!r.ok) return false;
      this.save(await r.json(), before.user);
      return true;
    };
    return navigator.locks ? navigator.locks.request("parley.renew", run) : run();
  }

  /** Renew now because a request was refused with this token. */
  async renewAfter401(token) {
    if (this.token !== token) return Boolean(this.token); // renewed meanwhile
    this.renewedBy = this.data?.refresh_token;
    try { return await this.renew(); } finally { this.renewedBy = null; }
  }
}

export const session = new Session();

/** fetch() with the session's Bearer token; one renewal and retry on 401. Returns the Response. */
export async function authedFetch(path, options = {}) {
  for (let attempt = 0; ; attempt++) {
    const token = session.token;
    const headers = new Headers(options.headers || {});
    if (token) headers.set("Authorization", `Bearer ${token}`);
    const r = await fetch(path, { ...options, headers });
    if (r.status === 401 && token && attempt === 0 && await session.renewAfter401(token)) continue;
    if (r.status === 401 && token && attempt > 0) session.clear();
    return r;
  }
}

/** A JSON call: resolves to the parsed body (null for 204), rejects with ApiError. */
export async function api(method, path, body, { auth = true, signal } = {}) {
  const options = { method, signal, headers: {} };
  if (body !== undefined) {
    options.headers["Content-Type"] = "application/json";
    options.body = JSON.stringify(body);
  }
  let r;
  try {
    r = auth ? await authedFetch(path, options) : await fetch(path, options);
  } catch (e) {
    if (e.name === "AbortError") throw e;
    throw new ApiError(0, "the server could not be reached", null);
  }
  const text = r.status === 204 ? "" : await r.text();
  let data = null;
  try { data = text ? JSON.parse(text) : null; } catch { data = text; }
  if (!r.ok) throw new ApiError(r.status, errorMessage(r.status, data), data);
  return data;
}
