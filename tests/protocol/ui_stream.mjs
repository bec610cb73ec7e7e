#!/usr/bin/env node
// Protocol-compatibility proof for Parley's AI SDK v5 UI message stream.
//
// Runs chunks through the REAL `ai` package's client code path, the one that
// `useChat` uses:
//   HttpChatTransport.sendMessages (stub fetch answering with the bytes)
//     -> DefaultChatTransport.processResponseStream
//          (parseJsonEventStream + the package's own uiMessageChunkSchema;
//           ai@5.0.0's schema is strict: unknown fields/types are rejected)
//     -> readUIMessageStream (processUIMessageStream assembles the UIMessage)
//
// Usage:
//   node tests/protocol/ui_stream.mjs <ai-5.0.0|ai-latest>          < chunks.json
//   node tests/protocol/ui_stream.mjs <ai-5.0.0|ai-latest> --sse    < stream.sse
//
// Default mode: stdin is a JSON array of UI message chunk objects; they are
// framed by the package's own server-side encoder (JsonToSseTransformStream:
// `data: {json}\n\n` ... `data: [DONE]\n\n`) before entering the transport.
// --sse mode: stdin is the raw response body (AI SDK framing) as a server
// sends it; it is delivered in small pieces to exercise the frame parser.
//
// Output (exit 0): {"message": <final UIMessage or null>, "errors": [...]}
// where `errors` are the errorText of `error` chunks, in order (the SDK hands
// them to onError; useChat would set status "error").
// Exit 1 with the error on stderr when a chunk is rejected by the schema, the
// body is not parseable, the SDK throws while assembling (e.g. a delta with
// no start), or the input is unusable.

import process from 'node:process';

const PACKAGES = ['ai-5.0.0', 'ai-latest'];

function fail(msg) {
  process.stderr.write(`ui_stream: ${msg}\n`);
  process.exit(1);
}

// zod's union error lists every branch; keep the branch(es) whose `type`
// matched, which name the offending fields.
function schemaIssues(err) {
  // ai@5.0.0 (provider-utils 3.0.0) keeps the issue array as `cause`;
  // later versions keep the ZodError.
  const cause = err.cause;
  const issues = Array.isArray(cause) ? cause : cause && Array.isArray(cause.issues) ? cause.issues : null;
  if (!issues) return null;
  const out = [];
  for (const issue of issues) {
    if (issue.code !== 'invalid_union' || !Array.isArray(issue.errors)) {
      out.push(`${(issue.path || []).join('.') || '<chunk>'}: ${issue.message}`);
      continue;
    }
    const matching = issue.errors.filter(
      (branch) => !branch.some((i) => i.path && i.path.length === 1 && i.path[0] === 'type'),
    );
    if (!matching.length) out.push('unknown chunk type');
    for (const branch of matching) {
      for (const i of branch) out.push(`${(i.path || []).join('.') || '<chunk>'}: ${i.message}`);
    }
  }
  return out;
}

function describe(err) {
  if (err instanceof Error) {
    if (err.name === 'AI_TypeValidationError') {
      const issues = schemaIssues(err);
      if (issues) {
        return `chunk rejected by uiMessageChunkSchema: ${JSON.stringify(err.value)}: ${issues.join('; ')}`;
      }
    }
    if (err.name === 'AI_JSONParseError') {
      return `frame is not JSON: ${JSON.stringify(err.text)}: ${err.message}`;
    }
    let s = `${err.name}: ${err.message}`;
    if (err.cause instanceof Error && !s.includes(err.cause.message)) {
      s += `\ncause: ${err.cause.name}: ${err.cause.message}`;
    }
    return s;
  }
  try {
    return JSON.stringify(err);
  } catch {
    return String(err);
  }
}

async function readStdin() {
  const parts = [];
  for await (const part of process.stdin) parts.push(part);
  return Buffer.concat(parts);
}

async function main() {
  const args = process.argv.slice(2);
  const pkg = args.find((a) => !a.startsWith('--'));
  const sse = args.includes('--sse');
  const unknown = args.filter((a) => a.startsWith('--') && a !== '--sse');
  if (!PACKAGES.includes(pkg) || unknown.length) {
    fail(`usage: node tests/protocol/ui_stream.mjs <${PACKAGES.join('|')}> [--sse] < input`);
  }

  const ai = await import(pkg);
  const { DefaultChatTransport, JsonToSseTransformStream, readUIMessageStream } = ai;
  for (const [name, v] of Object.entries({ DefaultChatTransport, JsonToSseTransformStream, readUIMessageStream })) {
    if (typeof v !== 'function') fail(`${pkg} does not export ${name}`);
  }

  const input = await readStdin();

  // The response body the stub fetch answers with.
  let body;
  if (sse) {
    const bytes = new Uint8Array(input);
    const PIECE = 16; // split mid-frame, as a network would
    body = new ReadableStream({
      start(controller) {
        for (let i = 0; i < bytes.length; i += PIECE) controller.enqueue(bytes.slice(i, i + PIECE));
        controller.close();
      },
    });
  } else {
    let chunks;
    try {
      chunks = JSON.parse(input.toString('utf8'));
    } catch (err) {
      fail(`stdin is not JSON: ${err.message}`);
    }
    if (!Array.isArray(chunks)) fail('stdin must be a JSON array of UI message chunks');
    body = new ReadableStream({
      start(controller) {
        for (const c of chunks) controller.enqueue(c);
        controller.close();
      },
    })
      .pipeThrough(new JsonToSseTransformStream())
      .pipeThrough(new TextEncoderStream());
  }

  const transport = new DefaultChatTransport({
    api: 'http://parley.test/agent/streaming',
    fetch: async () =>
      new Response(body, {
        status: 200,
        headers: {
          'content-type': 'text/event-stream',
          'x-vercel-ai-ui-message-stream': 'v1',
        },
      }),
  });

  let validated;
  try {
    validated = await transport.sendMessages({
      chatId: 'thread-1',
      trigger: 'submit-message',
      messageId: undefined,
      messages: [{ id: 'u1', role: 'user', parts: [{ type: 'text', text: 'hi' }] }],
      abortSignal: new AbortController().signal,
    });
  } catch (err) {
    fail(describe(err));
  }

  // Tap (after validation): remember errorTexts of `error` chunks so that
  // onError can tell an error chunk apart from a failure.
  const pendingErrorTexts = [];
  const tapped = validated.pipeThrough(
    new TransformStream({
      transform(chunk, controller) {
        if (chunk && chunk.type === 'error') pendingErrorTexts.push(chunk.errorText);
        controller.enqueue(chunk);
      },
    }),
  );

  const errors = [];
  const failures = [];
  const onError = (err) => {
    if (err instanceof Error && Object.getPrototypeOf(err) === Error.prototype) {
      const i = pendingErrorTexts.indexOf(err.message);
      if (i !== -1) {
        pendingErrorTexts.splice(i, 1);
        errors.push(err.message);
        return;
      }
    }
    failures.push(err);
  };

  let message = null;
  try {
    for await (const m of readUIMessageStream({ stream: tapped, onError })) message = m;
  } catch (err) {
    failures.push(err);
  }

  if (failures.length) fail(failures.map(describe).join('\n'));
  process.stdout.write(JSON.stringify({ message, errors }) + '\n');
}

main().catch((err) => fail(describe(err)));
