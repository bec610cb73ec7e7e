#!/usr/bin/env node
// Protocol-compatibility proof for Parley's AG-UI endpoint.
//
// Drives the REAL `@ag-ui/client` HttpAgent (1.x): its request (RunAgentInput),
// its SSE parser, its event schemas (unknown material is stripped with a
// warning, which this script reports), its sequence verifier (START before
// CONTENT/END, nothing open at RUN_FINISHED, ...) and its message assembly.
//
// Usage: node tests/protocol/ag_ui_client.mjs < spec.json
//   spec: {url, headers, threadId, turns: [{runId, keep?, message?}], sse?}
//   Each turn keeps the first `keep` messages of the agent's history when given
//   (a client that regenerates or edits), adds `message` (an AG-UI user message),
//   then calls `runAgent({runId})` on the same agent, so later turns send the
//   whole history, as a real client does.  With `sse` (a response body), the
//   agent's fetch is stubbed to answer it (a renderer's output, no server).
//
// Output (exit 0): {turns: [{runId, events, error, newMessages}], messages, logs}
//   events: every event the agent applied, as its subscriber saw it;
//   error: null, or {message, status, payload} when runAgent rejected
//     (a non-2xx answer: status and the parsed JSON body);
//   messages: the agent's assembled messages after the last turn;
//   logs: [{level, text}] of console.warn / console.error during the runs.
// Exit 1 with the reason on stderr when the input is unusable.

import process from 'node:process';

import { HttpAgent } from '@ag-ui/client';

const logs = [];
for (const level of ['warn', 'error']) {
  console[level] = (...args) => {
    logs.push({ level, text: args.map((a) => (a instanceof Error ? `${a.name}: ${a.message}` : typeof a === 'string' ? a : JSON.stringify(a))).join(' ') });
  };
}

async function readStdin() {
  const chunks = [];
  for await (const chunk of process.stdin) chunks.push(chunk);
  return Buffer.concat(chunks).toString('utf8');
}

async function main() {
  let spec;
  try {
    spec = JSON.parse(await readStdin());
  } catch (err) {
    process.stderr.write(`ag_ui_client: stdin is not JSON: ${err.message}\n`);
    process.exit(1);
  }
  const options = { url: spec.url || 'http://stub.invalid/ag-ui', headers: spec.headers || {}, threadId: spec.threadId };
  if (typeof spec.sse === 'string') {
    options.fetch = async () => new Response(spec.sse, { status: 200, headers: { 'content-type': 'text/event-stream' } });
  }
  const agent = new HttpAgent(options);
  const turns = [];
  for (const turn of spec.turns || []) {
    if (Number.isInteger(turn.keep)) agent.setMessages(agent.messages.slice(0, turn.keep));
    if (turn.message) agent.addMessage(turn.message);
    const events = [];
    const out = { runId: turn.runId, events, error: null, newMessages: [] };
    try {
      const result = await agent.runAgent({ runId: turn.runId }, { onEvent: ({ event }) => { events.push(event); } });
      out.newMessages = result.newMessages;
    } catch (err) {
      out.error = { message: String(err && err.message), status: err && err.status, payload: err && err.payload };
    }
    turns.push(out);
  }
  process.stdout.write(JSON.stringify({ turns, messages: agent.messages, logs }));
}

main().catch((err) => {
  process.stderr.write(`ag_ui_client: ${err && err.stack ? err.stack : err}\n`);
  process.exit(1);
});
