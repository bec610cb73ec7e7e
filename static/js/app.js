// The page: signing in, the thread list, and the chat with its one live run.
// Everything it does goes through Parley's public API, as any client would.

import { api, session } from "./api.js";
import { MessageView, StreamedMessage } from "./chat.js";
import { followTask } from "./stream.js";

const $ = (id) => document.getElementById(id);
const LIVE_KEY = "parley.live"; // sessionStorage: the streamed message and its cursor, for a reload
const PENDING_KEY = "parley.pending-email";
const AGENT_KEY = "parley.agent";
const LIVE_STATUSES = new Set(["pending", "running", "parked"]);

const state = {
  threadId: null, // the thread on screen (null: a new one, made by the first message)
  threads: [],
  live: null, // {taskId, threadId, message, view, lastEventId, abort, stopping}
  generation: 0, // bumps when the screen changes thread: late answers for the old one are dropped
};

// -- small helpers ---------------------------------------------------------------

function show(node, visible) { node.hidden = !visible; }

function banner(text, kind = "error") {
  const b = $("banner");
  b.textContent = text || "";
  b.className = `banner ${kind}`;
  show(b, Boolean(text));
}

function relativeTime(ms) {
  const s = Math.round((Date.now() - ms) / 1000);
  if (s < 60) return "just now";
  if (s < 3600) return `${Math.floor(s / 60)} min ago`;
  if (s < 86400) return `${Math.floor(s / 3600)} h ago`;
  return new Date(ms).toLocaleDateString();
}

// Follow the end of the conversation unless the reader scrolled up to read.
let stick = true;

function nearBottom() {
  const m = $("messages");
  return m.scrollHeight - m.scrollTop - m.clientHeight < 80;
}

function scrollToEnd(force = false) {
  const m = $("messages");
  if (force || stick) {
    m.scrollTop = m.scrollHeight;
    stick = true;
  }
}

// -- signed out --------------------------------------------------------------------

function authView(view) {
  for (const tab of document.querySelectorAll(".tabs [role=tab]")) {
    tab.setAttribute("aria-selected", String(tab.dataset.view === view || (view === "code" && tab.dataset.view === "signup")));
  }
  show($("login-form"), view === "login");
  show($("signup-form"), view === "signup");
  show($("code-form"), view === "code");
  authMessage(null);
  const first = { login: "login-form", signup: "signup-form", code: "code-form" }[view];
  $(first).querySelector("input")?.focus();
}

function authMessage(error, info = null) {
  $("auth-error").textContent = error || "";
  show($("auth-error"), Boolean(error));
  $("auth-info").textContent = info || "";
  show($("auth-info"), Boolean(info));
}

async function showCodeForm(email) {
  sessionStorage.setItem(PENDING_KEY, email);
  $("code-email").textContent = email;
  authView("code");
  show($("dev-code"), false);
  try {
    const config = await api("GET", "/api/v1/auth/config", undefined, { auth: false });
    show($("code-hint"), config?.mail === "outbox");
    if (config?.mail === "outbox") await showDevCode(email);
  } catch {
    show($("code-hint"), true);
  }
}

/** Dev mode, in a browser on the server's machine: show the code from the outbox and fill it in. */
async function showDevCode(email) {
  let found;
  try {
    found = await api("GET", `/api/v1/auth/dev-code?email=${encodeURIComponent(email)}`, undefined, { auth: false });
  } catch {
    return; // another machine, or no code yet: the hint says where to look
  }
  $("dev-code-value").textContent = found.code;
  $("code-form").elements.code.value = found.code;
  show($("dev-code"), true);
  show($("code-hint"), false);
}

function busy(form, on) {
  for (const b of form.querySelectorAll("button")) b.disabled = on;
}

function onSubmit(form, handler) {
  form.addEventListener("submit", async (e) => {
    e.preventDefault();
    busy(form, true);
    authMessage(null);
    try {
      await handler(Object.fromEntries(new FormData(form)));
    } catch (err) {
      authMessage(err.message);
    } finally {
      busy(form, false);
    }
  });
}

function wireAuth() {
  for (const tab of document.querySelectorAll(".tabs [role=tab]")) {
    tab.addEventListener("click", () => authView(tab.dataset.view));
  }
  onSubmit($("login-form"), async ({ email, password }) => {
    session.save(await api("POST", "/api/v1/auth/sessions", { email, password }, { auth: false }));
  });
  onSubmit($("signup-form"), async ({ username, email, password }) => {
    const r = await api("POST", "/api/v1/auth/verifications", { username, email, password }, { auth: false });
    await showCodeForm(r.email);
  });
  onSubmit($("code-form"), async ({ code }) => {
    const email = sessionStorage.getItem(PENDING_KEY);
    const tokens = await api("POST", "/api/v1/auth/verifications/verify", { email, token: code.trim() }, { auth: false });
    sessionStorage.removeItem(PENDING_KEY);
    session.save(tokens);
  });
  $("resend").addEventListener("click", async () => {
    try {
      await api("POST", "/api/v1/auth/verifications/resend", { email: sessionStorage.getItem(PENDING_KEY) }, { auth: false });
      authMessage(null, "If a new code can be sent now, it is on its way (at most one a minute).");
      await showDevCode(sessionStorage.getItem(PENDING_KEY));
    } catch (err) {
      authMessage(err.message);
    }
  });
}

// -- threads -------------------------------------------------------------------------

async function loadThreads() {
  try {
    state.threads = (await api("GET", "/thread/threads")).threads;
  } catch (err) {
    banner(`Could not load threads: ${err.message}`);
    return;
  }
  drawThreads();
}

function drawThreads() {
  const list = $("threads");
  list.replaceChildren();
  for (const t of state.threads) {
    const li = document.createElement("li");
    li.className = "thread" + (t.id === state.threadId ? " active" : "");
    li.dataset.id = t.id;
    const open = document.createElement("button");
    open.type = "button";
    open.className = "thread-open";
    const title = document.createElement("span");
    title.className = "thread-title";
    title.textContent = t.title || "Untitled thread";
    const when = document.createElement("span");
    when.className = "thread-time";
    when.textContent = relativeTime(t.updatedAt);
    open.append(title, when);
    open.addEventListener("click", () => { location.hash = `t=${encodeURIComponent(t.id)}`; closeSidebar(); });
    if (t.id === state.threadId) open.setAttribute("aria-current", "true");
    const del = document.createElement("button");
    del.type = "button";
    del.className = "thread-delete icon";
    del.textContent = "×";
    del.title = "Delete thread";
    del.setAttribute("aria-label", `Delete thread ${t.title || ""}`.trim());
    del.addEventListener("click", () => deleteThread(t));
    li.append(open, del);
    list.append(li);
  }
  show($("no-threads"), state.threads.length === 0);
  const current = state.threads.find((t) => t.id === state.threadId);
  document.title = current?.title ? `${current.title} · Parley` : "Parley";
}

async function deleteThread(thread) {
  if (!confirm(`Delete “${thread.title || "Untitled thread"}”? Its messages are removed and a live run is stopped.`)) return;
  try {
    await api("DELETE", `/thread/${encodeURIComponent(thread.id)}`);
  } catch (err) {
    banner(`Could not delete the thread: ${err.message}`);
    return;
  }
  if (thread.id === state.threadId) location.hash = "";
  await loadThreads();
}

function threadFromHash() {
  const m = location.hash.match(/^#t=(.+)$/);
  return m ? decodeURIComponent(m[1]) : null;
}

/** Show the thread in the address bar's hash (or a fresh empty one). */
async function openThread(threadId) {
  const gen = ++state.generation;
  detachLive();
  state.threadId = threadId;
  banner(null);
  $("messages").replaceChildren($("empty-template").content.cloneNode(true));
  wireTryChips();
  drawThreads();
  setComposer();
  if (!threadId) { $("input").focus(); return; }
  try {
    const [{ messages }, { task }] = await Promise.all([
      api("GET", `/messages/${encodeURIComponent(threadId)}`),
      api("GET", `/thread/${encodeURIComponent(threadId)}/current-task`),
    ]);
    if (gen !== state.generation) return;
    if (messages.length) $("messages").replaceChildren();
    for (const m of messages) $("messages").append(new MessageView(m, null).node);
    scrollToEnd(true);
    if (task && LIVE_STATUSES.has(task.status)) attach(task.taskId, threadId);
  } catch (err) {
    if (gen === state.generation) banner(err.status === 403 ? "This thread belongs to another user." : err.message);
  }
  $("input").focus();
}

// -- the live run ----------------------------------------------------------------------

function saved() {
  try { return JSON.parse(sessionStorage.getItem(LIVE_KEY) || "null"); } catch { return null; }
}

/** Save the live message with its cursor (both at once, so they always agree).  During a
 * stream at most twice a second; `pagehide` saves the latest before a reload. */
function persistLive(force = true) {
  const live = state.live;
  if (!live) return;
  const now = Date.now();
  if (!force && now - (live.savedAt ?? 0) < 500) return;
  live.savedAt = now;
  sessionStorage.setItem(LIVE_KEY, JSON.stringify({
    taskId: live.taskId, threadId: live.threadId, lastEventId: live.lastEventId, message: live.message,
  }));
}

/** Follow the task on screen, resuming from what this tab saw before a reload. */
function attach(taskId, threadId) {
  const before = saved();
  const resume = before && before.taskId === taskId ? before : null;
  const message = new StreamedMessage(resume?.message);
  const abort = new AbortController();
  const live = { taskId, threadId, message, view: null, lastEventId: resume?.lastEventId ?? null, abort, stopping: false, drawPending: false };
  state.live = live;
  live.view = new MessageView({ role: "assistant", id: message.id, parts: message.parts }, { signal: (key, ok, why) => sendSignal(live, key, ok, why) });
  live.view.setStatus("streaming");
  placeView(live);
  setComposer();
  scrollToEnd(true);

  const redraw = () => {
    if (live.drawPending) return;
    live.drawPending = true;
    requestAnimationFrame(() => {
      live.drawPending = false;
      live.view.update(live.message.parts);
      scrollToEnd();
      persistLive(false);
      setComposer();
    });
  };
  followTask(taskId, {
    lastEventId: live.lastEventId,
    signal: abort.signal,
    onChunks(chunks, id) {
      for (const chunk of chunks) {
        live.message.apply(chunk);
        if (chunk.type === "start") placeView(live);
      }
      if (id !== null) live.lastEventId = id;
      redraw();
    },
    onDone() { finishLive(live, null); },
    onError(text) { finishLive(live, text); },
    onRetry() { $("run-status").textContent = "Connection lost — reconnecting…"; },
  });
}

/** Put the live message's view in place: instead of the same message drawn from history, or last. */
function placeView(live) {
  const id = live.message.id;
  live.view.setId(id);
  const old = id ? [...$("messages").querySelectorAll("article.msg")].find((n) => n.dataset.id === id && n !== live.view.node) : null;
  $("empty")?.remove();
  if (old) old.replaceWith(live.view.node);
  else if (!live.view.node.isConnected) $("messages").append(live.view.node);
}

async function finishLive(live, errorText) {
  live.view.update(live.message.parts);
  if (errorText === null) {
    live.view.setStatus("done");
  } else {
    let status = null;
    try { status = (await api("GET", `/task/${encodeURIComponent(live.taskId)}`)).status; } catch { /* shown as an error */ }
    live.view.setStatus(status === "cancelled" ? "stopped" : "error", status === "cancelled" ? "Stopped." : errorText);
  }
  if (state.live === live) {
    state.live = null;
    sessionStorage.removeItem(LIVE_KEY);
    setComposer();
    await loadThreads();
    // a server with [titles] names the thread a moment after its first run: show that name
    const thread = state.threads.find((t) => t.id === live.threadId);
    if (errorText === null && thread?.titleSource === "message") setTimeout(loadThreads, 4000);
  }
}

/** Stop following (the run goes on on the server). */
function detachLive() {
  if (state.live) {
    state.live.abort.abort();
    state.live = null;
  }
}

async function sendSignal(live, key, approved, reason) {
  const payload = reason ? { approved, reason } : { approved };
  await api("POST", `/api/jobs/${encodeURIComponent(live.taskId)}/signal`, { correlation_key: key, payload });
}

async function stopRun() {
  const live = state.live;
  if (!live || live.stopping) return;
  live.stopping = true;
  setComposer();
  try {
    await api("DELETE", `/task/${encodeURIComponent(live.taskId)}`);
  } catch (err) {
    live.stopping = false;
    banner(`Could not stop the run: ${err.message}`);
    setComposer();
  }
}

function setComposer() {
  const live = state.live;
  const parked = live && live.message.parts.some((p) => p.type === "data-parked")
    && !live.message.parts.slice(live.message.parts.findLastIndex((p) => p.type === "data-parked")).some((p) => p.type === "data-signal");
  show($("send"), !live);
  show($("stop"), Boolean(live));
  $("stop").disabled = Boolean(live?.stopping);
  $("composer").classList.toggle("running", Boolean(live));
  $("run-status").textContent = !live ? "" : live.stopping ? "Stopping…" : parked ? "Waiting for your approval." : "The agent is replying…";
}

// -- sending ---------------------------------------------------------------------------

async function send() {
  const input = $("input");
  const content = input.value.trim();
  if (!content) return;
  if (state.live) { banner("A run is still going on in this thread: wait for it, or stop it.", "info"); return; }
  banner(null);
  let threadId = state.threadId;
  const fresh = !threadId;
  if (fresh) threadId = newThreadId();
  const agentId = $("agent").value || undefined;
  $("send").disabled = true;
  let started;
  try {
    started = await api("POST", "/task", { threadId, content, agentId });
  } catch (err) {
    $("send").disabled = false;
    if (err.status === 409 && err.body?.taskId) {
      banner("This thread already has a run going on: showing it.", "info");
      if (state.threadId === threadId) attach(err.body.taskId, threadId);
      return;
    }
    banner(err.message);
    return;
  }
  $("send").disabled = false;
  input.value = "";
  autosize();
  if (fresh) {
    // the hash change opens the (new) thread; keep this run on screen meanwhile
    state.threadId = threadId;
    history.replaceState(null, "", `#t=${encodeURIComponent(threadId)}`);
  }
  $("empty")?.remove();
  const mine = new MessageView({ role: "user", parts: [{ type: "text", text: content }] }, null);
  $("messages").append(mine.node);
  attach(started.taskId, threadId);
  loadThreads();
}

/** A random UUID; `crypto.randomUUID` exists only in secure contexts (not on http://192.168.…). */
function newThreadId() {
  if (crypto.randomUUID) return crypto.randomUUID();
  const b = crypto.getRandomValues(new Uint8Array(16));
  b[6] = (b[6] & 0x0f) | 0x40;
  b[8] = (b[8] & 0x3f) | 0x80;
  const hex = [...b].map((x) => x.toString(16).padStart(2, "0")).join("");
  return `${hex.slice(0, 8)}-${hex.slice(8, 12)}-${hex.slice(12, 16)}-${hex.slice(16, 20)}-${hex.slice(20)}`;
}

function autosize() {
  const input = $("input");
  input.style.height = "auto";
  input.style.height = `${Math.min(input.scrollHeight, 240)}px`;
}

function wireTryChips() {
  for (const chip of document.querySelectorAll("[data-try]")) {
    chip.addEventListener("click", () => { $("input").value = chip.dataset.try; autosize(); $("input").focus(); });
  }
}

// -- agents, token, layout ----------------------------------------------------------------

async function loadAgents() {
  const select = $("agent");
  try {
    const { agents } = await api("GET", "/api/agents");
    select.replaceChildren(...agents.map((a) => {
      const o = document.createElement("option");
      o.value = a.id;
      o.textContent = a.name || a.id;
      o.title = a.description || "";
      return o;
    }));
    const want = localStorage.getItem(AGENT_KEY);
    if (want && agents.some((a) => a.id === want)) select.value = want;
  } catch (err) {
    banner(`Could not load agents: ${err.message}`);
  }
}

function showToken() {
  const token = session.token || "";
  const origin = location.origin;
  $("token-text").value = token;
  $("token-curl").textContent = [
    `TOKEN='${token}'`,
    `curl -s -H "Authorization: Bearer $TOKEN" ${origin}/thread/threads`,
    `curl -s -H "Authorization: Bearer $TOKEN" -H 'Content-Type: application/json' \\`,
    `     -d '{"threadId":"from-curl","content":"/count 5"}' ${origin}/task`,
    `curl -sN -H "Authorization: Bearer $TOKEN" ${origin}/stream/TASK_ID`,
  ].join("\n");
  $("token-dialog").showModal();
}

async function copy(source, button) {
  const text = source.value ?? source.textContent;
  const was = button.textContent;
  try {
    await navigator.clipboard.writeText(text);
    button.textContent = "Copied";
  } catch {
    // no clipboard (a plain-http address, or refused): select it for Ctrl+C instead
    if (source.select) source.select();
    else window.getSelection().selectAllChildren(source);
    button.textContent = "Selected: press Ctrl+C";
  }
  setTimeout(() => { button.textContent = was; }, 2500);
}

function closeSidebar() {
  document.body.classList.remove("sidebar-open");
  $("menu").setAttribute("aria-expanded", "false");
}

async function logout() {
  const refresh = session.data?.refresh_token;
  detachLive();
  sessionStorage.removeItem(LIVE_KEY);
  if (refresh) {
    try { await api("DELETE", "/api/v1/auth/sessions", { refresh_token: refresh }, { auth: false }); } catch { /* signed out here anyway */ }
  }
  leaving = true;
  session.clear();
}

function wireApp() {
  $("composer").addEventListener("submit", (e) => { e.preventDefault(); send(); });
  $("input").addEventListener("keydown", (e) => {
    if (e.key === "Enter" && !e.shiftKey && !e.isComposing) { e.preventDefault(); send(); }
    if (e.key === "Escape" && state.live) { e.preventDefault(); stopRun(); }
  });
  $("input").addEventListener("input", autosize);
  $("messages").addEventListener("scroll", () => { stick = nearBottom(); }, { passive: true });
  // an image grows the conversation after it was drawn: keep the end in view
  $("messages").addEventListener("load", () => scrollToEnd(), true);
  $("stop").addEventListener("click", stopRun);
  $("new-thread").addEventListener("click", () => {
    closeSidebar();
    if (location.hash) location.hash = ""; else openThread(null);
  });
  $("agent").addEventListener("change", () => localStorage.setItem(AGENT_KEY, $("agent").value));
  $("token-button").addEventListener("click", showToken);
  $("copy-token").addEventListener("click", (e) => copy($("token-text"), e.currentTarget));
  $("copy-curl").addEventListener("click", (e) => copy($("token-curl"), e.currentTarget));
  $("logout").addEventListener("click", logout);
  $("banner").addEventListener("click", () => banner(null));
  $("menu").addEventListener("click", () => {
    const open = document.body.classList.toggle("sidebar-open");
    $("menu").setAttribute("aria-expanded", String(open));
  });
  window.addEventListener("hashchange", () => {
    const id = threadFromHash();
    if (id !== state.threadId || !id) openThread(id);
  });
  window.addEventListener("pagehide", () => persistLive());
}

// -- start -------------------------------------------------------------------------------

let signedIn = null;
let leaving = false; // the user pressed "Log out" (not a session that ended by itself)

function render() {
  const data = session.data;
  const now = Boolean(data);
  if (now === signedIn) return;
  const wasIn = signedIn === true;
  signedIn = now;
  show($("auth"), !now);
  show($("app"), now);
  if (!now) {
    detachLive();
    state.threadId = null;
    sessionStorage.removeItem(LIVE_KEY);
    if (location.hash) history.replaceState(null, "", location.pathname); // the next user starts afresh
    const pending = sessionStorage.getItem(PENDING_KEY);
    if (pending) showCodeForm(pending); else authView("login");
    if (wasIn && !leaving) authMessage(null, "Your session ended: please log in again.");
    leaving = false;
    return;
  }
  $("whoami").textContent = data.user?.email ?? "";
  loadAgents();
  loadThreads();
  openThread(threadFromHash());
}

function start() {
  // keep the empty-state markup to restore when a thread is cleared
  const template = document.createElement("template");
  template.id = "empty-template";
  template.content.append($("empty").cloneNode(true));
  document.body.append(template);
  wireAuth();
  wireApp();
  session.onChange(render);
  session.schedule();
  render();
  document.documentElement.dataset.ready = "true";
}

start();
