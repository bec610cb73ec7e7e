#!/usr/bin/env node
// Drives a live Parley with the REAL `ai` package's DefaultChatTransport, the
// transport `useChat` uses, over real HTTP (the package's own fetch code path):
//
//   send:      transport.sendMessages({chatId, trigger, messageId, messages})
//                -> POST <api>   (the body DefaultChatTransport builds)
//   reconnect: transport.reconnectToStream({chatId})
//                -> GET <api>/<chatId>/stream   (the transport's default URL; 204 -> null)
//
// and reads the returned chunk stream (already checked by the package's own
// uiMessageChunkSchema; ai@5.0.0's is strict) through readUIMessageStream.
//
// Usage: node tests/protocol/chat_transport.mjs <ai-5.0.0|ai-latest> < request.json
//   Prints `ready` once the package is loaded, then reads the request from stdin
//   (so that a caller can start a run and send the request at a chosen moment).
//   request: {"op": "send"|"reconnect", "api", "headers", "chatId",
//             "trigger"?, "messageId"?, "messages"?, "body"?}
// Output (exit 0) after `ready`, one JSON line:
//   {"stream": false}                          reconnect answered 204 (null)
//   {"thrown": "<error message>"}             the transport refused the response (non-2xx)
//   {"stream": true, "message": <UIMessage|null>, "errors": [errorText...]}
// Exit 1 with the reason on stderr when a chunk is rejected or assembly fails.

import process from 'node:process';

const PACKAGES = ['ai-5.0.0', 'ai-latest'];

function fail(msg) {
  process.stderr.write(`chat_transport: ${msg}\n`);
  process.exit(1);
}

function describe(err) {
  if (err instanceof Error) {
    let s = `${err.name}: ${err.message}`;
    if (err.name === 'AI_TypeValidationError') s += ` (value: ${JSON.stringify(err.value)})`;
    if (err.cause instanceof Error) s += `\ncause: ${err.cause.name}: ${err.cause.message}`;
    return s;
  }
  return String(err);
}

async function readStdin() {
  const parts = [];
  for await (const part of process.stdin) parts.push(part);
  return JSON.parse(Buffer.concat(parts).toString('utf8'));
}

async function main() {
  const pkg = process.argv[2];
  if (!PACKAGES.includes(pkg)) fail(`usage: node tests/protocol/chat_transport.mjs <${PACKAGES.join('|')}> < request.json`);
  const { DefaultChatTransport, readUIMessageStream } = await import(pkg);
  process.stdout.write('ready\n');
  const req = await readStdin();
  const transport = new DefaultChatTransport({ api: req.api, headers: req.headers, body: req.body });

  let stream;
  try {
    if (req.op === 'send') {
      stream = await transport.sendMessages({
        chatId: req.chatId,
        trigger: req.trigger ?? 'submit-message',
        messageId: req.messageId ?? undefined,
        messages: req.messages,
        abortSignal: new AbortController().signal,
      });
    } else if (req.op === 'reconnect') {
      stream = await transport.reconnectToStream({ chatId: req.chatId });
    } else {
      fail(`unknown op ${req.op}`);
    }
  } catch (err) {
    // A non-2xx answer: the transport throws new Error(<response body>).
    process.stdout.write(JSON.stringify({ thrown: err instanceof Error ? err.message : String(err) }) + '\n');
    return;
  }
  if (stream === null) {
    process.stdout.write(JSON.stringify({ stream: false }) + '\n');
    return;
  }

  // Tell the errorText of `error` chunks (handed to onError) from real failures.
  const errorTexts = [];
  const tapped = stream.pipeThrough(
    new TransformStream({
      transform(chunk, controller) {
        if (chunk && chunk.type === 'error') errorTexts.push(chunk.errorText);
        controller.enqueue(chunk);
      },
    }),
  );
  const errors = [];
  const failures = [];
  const onError = (err) => {
    const i = err instanceof Error ? errorTexts.indexOf(err.message) : -1;
    if (i !== -1) {
      errorTexts.splice(i, 1);
      errors.push(err.message);
    } else {
      failures.push(err);
    }
  };
  let message = null;
  try {
    for await (const m of readUIMessageStream({ stream: tapped, onError })) message = m;
  } catch (err) {
    failures.push(err);
  }
  if (failures.length) fail(failures.map(describe).join('\n'));
  process.stdout.write(JSON.stringify({ stream: true, message, errors }) + '\n');
}

main().catch((err) => fail(describe(err)));
