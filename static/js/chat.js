// Messages: folding the stream's UI message chunks into message parts (the
// AI SDK v5 UIMessage shape that /messages returns too), and drawing them.
// A message view redraws only the parts that changed since it last drew.

import { renderMarkdown } from "./markdown.js";

/** An assistant message being streamed; `toJSON()` is enough to resume it after a reload. */
export class StreamedMessage {
  constructor(saved = {}) {
    this.id = saved.id ?? null;
    this.parts = saved.parts ?? [];
    this.open = saved.open ?? {}; // stream part id -> index in parts (open text/reasoning)
  }

  toJSON() {
    return { id: this.id, parts: this.parts, open: this.open };
  }

  tool(chunk) {
    let part = this.parts.find((p) => p.toolCallId === chunk.toolCallId);
    if (!part) {
      part = { type: `tool-${chunk.toolName ?? "tool"}`, toolCallId: chunk.toolCallId, state: "input-streaming", inputText: "" };
      this.parts.push(part);
    }
    return part;
  }

  apply(chunk) {
    const t = chunk.type;
    if (t === "start") this.id = chunk.messageId ?? this.id;
    else if (t === "start-step") this.parts.push({ type: "step-start" });
    else if (t === "text-start" || t === "reasoning-start") {
      this.open[chunk.id] = this.parts.length;
      this.parts.push({ type: t === "text-start" ? "text" : "reasoning", text: "", state: "streaming" });
    } else if (t === "text-delta" || t === "reasoning-delta") {
      const part = this.parts[this.open[chunk.id]];
      if (part) part.text += chunk.delta;
    } else if (t === "text-end" || t === "reasoning-end") {
      const part = this.parts[this.open[chunk.id]];
      if (part) part.state = "done";
      delete this.open[chunk.id];
    } else if (t === "tool-input-start") this.tool(chunk);
    else if (t === "tool-input-delta") this.tool(chunk).inputText += chunk.inputTextDelta;
    else if (t === "tool-input-available") Object.assign(this.tool(chunk), { state: "input-available", input: chunk.input });
    else if (t === "tool-output-available") Object.assign(this.tool(chunk), { state: "output-available", output: chunk.output });
    else if (t === "tool-output-error") Object.assign(this.tool(chunk), { state: "output-error", errorText: chunk.errorText });
    else if (t === "file") this.parts.push({ type: "file", url: chunk.url, mediaType: chunk.mediaType });
    else if (t.startsWith("data-")) this.parts.push({ type: t, data: chunk.data });
    else if (t === "error") this.parts.push({ type: "error", text: chunk.errorText });
  }
}

function el(tag, className, ...children) {
  const node = document.createElement(tag);
  if (className) node.className = className;
  for (const c of children) if (c !== null && c !== undefined) node.append(c);
  return node;
}

function pretty(value) {
  if (value === undefined) return "";
  if (typeof value === "string") return value;
  // a data: URL (an image) is shown as a short note, not as pages of base64
  const shorten = (key, v) => (typeof v === "string" && v.startsWith("data:") && v.length > 120
    ? `${v.slice(0, v.indexOf(",") + 1)}… (${Math.round(v.length / 1024)} KB)` : v);
  try { return JSON.stringify(value, shorten, 2); } catch { return String(value); }
}

const MEDIA_URL = /^(data:(image\/(png|apng|jpeg|gif|webp)|audio\/(wav|mpeg|ogg)|video\/(mp4|webm));base64,|https?:\/\/|\/)/i;

/** The signals a message answered: correlation key -> payload (from data-signal parts). */
function answers(parts) {
  const out = new Map();
  for (const p of parts) if (p.type === "data-signal" && p.data) out.set(p.data.correlationKey, p.data.payload ?? {});
  return out;
}

/** One message on screen. `actions.signal(key, approved, reason)` answers approval cards. */
export class MessageView {
  constructor(message, actions) {
    this.role = message.role;
    this.actions = actions;
    this.node = el("article", `msg ${message.role}`);
    this.node.dataset.id = message.id ?? "";
    this.body = el("div", "msg-body");
    this.foot = el("div", "msg-foot");
    this.node.append(this.body, this.foot);
    this.drawn = []; // [{sig, node}] per part
    this.update(message.parts ?? []);
  }

  setId(id) { this.node.dataset.id = id ?? ""; }

  /** Redraw the parts whose content changed. */
  update(parts) {
    const answered = answers(parts);
    parts.forEach((part, i) => {
      const sig = signature(part, answered);
      const old = this.drawn[i];
      if (old && old.sig === sig) return;
      const node = this.draw(part, answered) ?? el("span", "part-empty");
      if (old) old.node.replaceWith(node);
      else this.body.append(node);
      this.drawn[i] = { sig, node };
    });
    for (const gone of this.drawn.splice(parts.length)) gone.node.remove();
  }

  setStatus(kind, text) {
    this.node.classList.toggle("streaming", kind === "streaming");
    // a screen reader reads the reply once it is whole, not word by word
    this.node.setAttribute("aria-busy", String(kind === "streaming"));
    this.foot.replaceChildren();
    if (kind === "error" || kind === "stopped") this.foot.append(el("p", `msg-${kind}`, text));
  }

  draw(part, answered) {
    const t = part.type;
    if (t === "text") {
      return this.role === "user" ? el("div", "text plain", part.text) : el("div", "text md", renderMarkdown(part.text));
    }
    if (t === "reasoning") {
      const d = el("details", "reasoning", el("summary", null, "Reasoning"), el("div", "md", renderMarkdown(part.text)));
      return d;
    }
    if (t.startsWith("tool-")) return this.toolCard(part);
    if (t === "file") return fileNode(part);
    if (t === "data-parked") return this.approvalCard(part.data ?? {}, answered);
    if (t === "error") return el("p", "msg-error", part.text || "error");
    return null; // step-start, data-signal (shown on its card), data-ui
  }

  toolCard(part) {
    const name = part.type.slice(5);
    const states = {
      "input-streaming": "preparing…", "input-available": "running…",
      "output-available": "done", "output-error": "failed",
    };
    const card = el("details", `tool-card state-${part.state}`);
    const waiting = part.state === "input-available" && name === "wait_approval";
    card.append(el("summary", null, el("span", "tool-icon", "⚙"), el("span", "tool-name", name),
      el("span", "tool-state", waiting ? "waiting for an answer" : states[part.state] ?? part.state)));
    const input = part.input !== undefined ? part.input : part.inputText;
    card.append(el("div", "tool-label", "Input"), el("pre", "tool-input", pretty(input)));
    if (part.state === "output-available") {
      card.append(el("div", "tool-label", "Output"), el("pre", "tool-output", pretty(part.output)));
    } else if (part.state === "output-error") {
      card.append(el("div", "tool-label", "Error"), el("pre", "tool-error", part.errorText ?? ""));
    }
    return card;
  }

  approvalCard(data, answered) {
    const key = data.correlationKey;
    const card = el("section", "approval");
    card.dataset.key = key ?? "";
    card.append(el("h3", null, "Approval needed"), el("p", "prompt", data.prompt || "The run is waiting for your answer."));
    if (answered.has(key)) {
      const payload = answered.get(key) || {};
      const word = payload.approved ? "Approved" : "Rejected";
      card.classList.add(payload.approved ? "approved" : "rejected");
      card.append(el("p", "decision", payload.reason ? `${word}: ${payload.reason}` : word));
      return card;
    }
    if (!this.actions) {
      card.append(el("p", "decision muted", "No answer was given."));
      return card;
    }
    const reason = el("input", "reason");
    reason.placeholder = "Reason (optional)";
    reason.setAttribute("aria-label", "Reason");
    const approve = el("button", "primary", "Approve");
    const reject = el("button", "danger", "Reject");
    const status = el("p", "error small");
    status.hidden = true;
    const send = async (approved) => {
      approve.disabled = reject.disabled = true;
      status.hidden = true;
      try {
        await this.actions.signal(key, approved, reason.value.trim());
        card.classList.add("sent");
      } catch (e) {
        status.textContent = e.message;
        status.hidden = false;
        approve.disabled = reject.disabled = false;
      }
    };
    approve.type = reject.type = "button";
    approve.addEventListener("click", () => send(true));
    reject.addEventListener("click", () => send(false));
    reason.addEventListener("keydown", (e) => { if (e.key === "Enter") { e.preventDefault(); send(true); } });
    card.append(reason, el("div", "row", approve, reject), status);
    return card;
  }
}

function signature(part, answered) {
  if (part.type === "text" || part.type === "reasoning") return `${part.type}:${part.state}:${part.text.length}`;
  if (part.type === "data-parked") {
    const a = answered.get(part.data?.correlationKey);
    return `parked:${part.data?.correlationKey}:${a ? JSON.stringify(a) : ""}`;
  }
  if (part.type.startsWith("tool-")) return `${part.type}:${part.state}:${(part.inputText ?? "").length}`;
  return part.type + ":" + (part.url ?? "") + (part.text ?? "");
}

function fileNode(part) {
  const media = String(part.mediaType || "");
  const url = String(part.url || "");
  const kind = media.split("/")[0];
  if (["image", "audio", "video"].includes(kind) && MEDIA_URL.test(url)) {
    const node = el(kind === "image" ? "img" : kind, `inline-${kind}`);
    node.src = url;
    if (kind === "image") {
      node.alt = "image from the run";
      node.loading = "lazy";
    } else {
      node.controls = true;
      node.preload = "metadata";
    }
    return el("figure", "file", node);
  }
  if (/^https?:\/\//i.test(url) || url.startsWith("/")) {
    const a = el("a", "file-link", `File (${media || "unknown type"})`);
    a.href = url;
    a.target = "_blank";
    a.rel = "noopener noreferrer";
    return el("p", "file", a);
  }
  return el("p", "file muted", `A file (${media || "unknown type"})`);
}
