// Reads a task's native stream (GET /stream/:taskId) with fetch, so that the
// Authorization header can be sent, keeping its own Last-Event-ID: after a
// dropped connection it reconnects after the last frame it handled, so nothing
// is repeated and nothing is missed.

import { authedFetch, errorMessage } from "./api.js";

/** Split SSE text into frames; returns [frames, rest]. Each frame: {id, event, data}. */
export function parseFrames(buffer) {
  const frames = [];
  let start = 0;
  for (;;) {
    const end = buffer.indexOf("\n\n", start);
    if (end < 0) break;
    const block = buffer.slice(start, end);
    start = end + 2;
    const frame = { id: null, event: null, data: [] };
    let fields = 0;
    for (const line of block.split("\n")) {
      if (!line || line.startsWith(":")) continue;
      const colon = line.indexOf(":");
      const name = colon < 0 ? line : line.slice(0, colon);
      let value = colon < 0 ? "" : line.slice(colon + 1);
      if (value.startsWith(" ")) value = value.slice(1);
      fields++;
      if (name === "id") frame.id = value;
      else if (name === "event") frame.event = value;
      else if (name === "data") frame.data.push(value);
    }
    if (fields && (frame.data.length || frame.event)) frames.push({ ...frame, data: frame.data.join("\n") });
  }
  return [frames, buffer.slice(start)];
}

/**
 * Follow a task to its end.  handlers: onChunks(chunks, id), onDone(), onError(text),
 * onRetry(attempt).  `lastEventId` resumes after that event.  Resolves when the stream
 * ended (done/error) or `signal` aborted it.
 */
export async function followTask(taskId, { lastEventId = null, signal, onChunks, onDone, onError, onRetry }) {
  let cursor = lastEventId;
  for (let attempt = 0; !signal?.aborted; attempt++) {
    if (attempt > 0) {
      onRetry?.(attempt);
      await sleep(Math.min(8000, 250 * 2 ** Math.min(attempt, 5)), signal);
      if (signal?.aborted) return;
    }
    let response;
    try {
      const headers = { Accept: "text/event-stream" };
      if (cursor !== null) headers["Last-Event-ID"] = String(cursor);
      response = await authedFetch(`/stream/${encodeURIComponent(taskId)}`, { headers, signal, cache: "no-store" });
    } catch (e) {
      if (signal?.aborted) return;
      continue; // the server is away (restart, network): try again after the last id
    }
    if (!response.ok) {
      let body = null;
      try { body = await response.json(); } catch { /* not JSON */ }
      if (response.status >= 500 || response.status === 429) continue;
      onError(errorMessage(response.status, body));
      return;
    }
    const reader = response.body.pipeThrough(new TextDecoderStream()).getReader();
    let buffer = "";
    try {
      for (;;) {
        const { value, done } = await reader.read();
        if (done) break;
        attempt = 0;
        buffer = (buffer + value).replace(/\r\n/g, "\n");
        const [frames, rest] = parseFrames(buffer);
        buffer = rest;
        for (const frame of frames) {
          if (frame.event === "done") { onDone(); return; }
          if (frame.event === "error") { onError(frame.data || "the run failed"); return; }
          if (frame.event === null) onChunks(JSON.parse(frame.data), frame.id);
          if (frame.id !== null) cursor = frame.id;
        }
      }
    } catch (e) {
      if (signal?.aborted) return;
    }
    // the response ended without a terminal frame: the connection dropped; resume
  }
}

function sleep(ms, signal) {
  return new Promise((resolve) => {
    const t = setTimeout(resolve, ms);
    signal?.addEventListener("abort", () => { clearTimeout(t); resolve(); }, { once: true });
  });
}
