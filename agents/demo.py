"""The demo agent: offline and deterministic (SPEC section 7).

Plain text gets a streamed reply quoting it, word by word.  Commands:
`/count N`, `/sleep S`, `/fail`, `/approve TEXT`, `/tool NAME ARGS`, `/image PROMPT`,
`/video PROMPT`, `/music PROMPT`.  Natural phrasings (the time, arithmetic, refunds,
"search …", "draw …", "make a video of …", "compose …", "make a song about …")
call the same tools.
"""
from __future__ import annotations

import asyncio
import re
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import Any

import orjson

from agents.context import AgentError, RunContext
from store.event_types import TOOL_RESULT

MAX_COUNT = 100_000  # the bounds of a free sign-up (SPEC 13); `[demo]` in the config may change them
MAX_SLEEP_S = 600.0
_ARITHMETIC = re.compile(r"^[\s\d.+\-*/%^()×÷]*\d[\s\d.+\-*/%^()×÷]*$")
_TIME = re.compile(r"\b(time|clock|date|today)\b", re.I)
_SEARCH = re.compile(r"^(?:please\s+)?(?:search|find|look up)\s+(?:for\s+)?(.+)$", re.I)
_REFUND = re.compile(r"\brefund\b", re.I)
_DRAW = re.compile(
    r"^(?:please\s+|(?:can|could|would)\s+you\s+)?"
    r"(?:(?:draw|paint|sketch)(?:\s+me)?|(?:generate|create|make)(?:\s+me)?\s+(?:an?\s+)?(?:image|picture|painting|drawing)(?:\s+of)?)"
    r"\s+(.+)$",
    re.I,
)
_POLITE = r"^(?:please\s+|(?:can|could|would)\s+you\s+)?"
_VIDEO = re.compile(
    _POLITE + r"(?:make|create|generate|film|shoot|render)(?:\s+me)?\s+(?:an?\s+)?(?:video|clip|movie|animation|film)"
    r"(?:\s+(?:of|about|showing))?\s+(.+)$",
    re.I,
)
_MUSIC = re.compile(
    # "compose an email" is not music: written things are left to the echo
    _POLITE + r"(?:compose(?:\s+me)?(?!\s+(?:an?\s+|my\s+|the\s+)?(?:e-?mail|letter|message|reply|response|tweet|post|essay|note)\b)"
    r"(?:\s+(?:an?\s+)?(?:song|tune|melody|piece|music)(?:\s+(?:of|about|for))?)?"
    r"|(?:make|create|generate|write|play|sing)(?:\s+me)?\s+(?:an?\s+)?(?:song|tune|melody|music|jingle)"
    r"(?:\s+(?:of|about|for))?)\s+(.+)$",
    re.I,
)
IMAGE_USAGE = "Tell me what to draw: /image PROMPT, for example /image a red fox in the snow."
VIDEO_USAGE = "Tell me what the video shows: /video PROMPT, for example /video waves on a beach at sunset."
MUSIC_USAGE = "Tell me what the music is about: /music PROMPT, for example /music a calm morning by the sea."
# The media commands: command -> (tool, what to say without a prompt).
MEDIA_COMMANDS = {
    "/image": ("generate_image", IMAGE_USAGE),
    "/video": ("generate_video", VIDEO_USAGE),
    "/music": ("generate_music", MUSIC_USAGE),
}


@dataclass(frozen=True)
class Limits:
    """How far `/count` and `/sleep` go; beyond, the run fails `bad_command` and says the bound."""

    max_count: int = MAX_COUNT
    max_sleep_s: float = MAX_SLEEP_S

    @classmethod
    def from_table(cls, table: dict[str, Any]) -> Limits:
        """The config file's `[demo]` table (`max_count`, `max_sleep_s`), as config.py's schema checked it."""
        return cls(table.get("max_count", MAX_COUNT), float(table.get("max_sleep_s", MAX_SLEEP_S)))


DEFAULT_LIMITS = Limits()


def runner(limits: Limits) -> Callable[[RunContext], Awaitable[None]]:
    """The demo agent with these limits."""

    async def run_demo(ctx: RunContext) -> None:
        await run(ctx, limits)

    return run_demo


async def run(ctx: RunContext, limits: Limits = DEFAULT_LIMITS) -> None:
    if ctx.resume is not None:
        await _resume(ctx)
        return
    text = ctx.user_text.strip()
    command, _, rest = text.partition(" ")
    rest = rest.strip()
    if command == "/count":
        await _count(ctx, rest, limits.max_count)
    elif command == "/sleep":
        await _sleep(ctx, rest, limits.max_sleep_s)
    elif command == "/fail":
        async with ctx.step("fail"):
            raise AgentError("demo_failure", "The demo agent failed on purpose (/fail).")
    elif command == "/approve":
        async with ctx.step("wait_approval"):
            await ctx.tool_call("wait_approval", {"prompt": rest or "Approve?"})
    elif command == "/tool":
        await _tool(ctx, rest)
    elif command in MEDIA_COMMANDS:
        await _media(ctx, command, rest)
    else:
        await _natural(ctx, text)


async def _pace(ctx: RunContext) -> None:
    if ctx.demo_delay_s > 0:
        await asyncio.sleep(ctx.demo_delay_s)


async def _stream_words(ctx: RunContext, text: str) -> None:
    part = await ctx.text_start()
    words = text.split(" ")
    for i, word in enumerate(words):
        await ctx.text_delta(part, word if i == len(words) - 1 else word + " ")
        await _pace(ctx)
    await ctx.text_end(part)


async def _count(ctx: RunContext, arg: str, max_count: int) -> None:
    try:
        n = int(arg)
    except ValueError:
        raise AgentError("bad_command", "usage: /count N (a whole number)") from None
    if not 0 <= n <= max_count:
        raise AgentError("bad_command", f"/count takes 0 to {max_count}")
    async with ctx.step("count"):
        part = await ctx.text_start()
        for k in range(1, n + 1):
            await ctx.text_delta(part, f"{k} ")
            await _pace(ctx)
        await ctx.text_end(part)


async def _sleep(ctx: RunContext, arg: str, max_sleep_s: float) -> None:
    try:
        seconds = float(arg)
    except ValueError:
        raise AgentError("bad_command", "usage: /sleep SECONDS") from None
    if not 0 <= seconds <= max_sleep_s:  # NaN too
        raise AgentError("bad_command", f"/sleep takes 0 to {max_sleep_s:g} seconds")
    async with ctx.step("sleep"):
        await asyncio.sleep(seconds)
        await _stream_words(ctx, f"I slept {seconds:g} seconds.")


async def _tool(ctx: RunContext, rest: str) -> None:
    name, _, args_text = rest.partition(" ")
    args_text = args_text.strip()
    args: dict[str, Any]
    if name == "calculator":
        args = {"expression": args_text}
    elif args_text.startswith("{"):
        try:
            args = orjson.loads(args_text)
        except orjson.JSONDecodeError:
            raise AgentError("bad_command", "tool arguments must be a JSON object") from None
        if not isinstance(args, dict):
            raise AgentError("bad_command", "tool arguments must be a JSON object")
    elif name == "clock" and args_text:
        args = {"timezone": args_text}
    elif name == "wait_approval":
        args = {"prompt": args_text or "Approve?"}
    elif name in ("generate_image", "generate_video", "generate_music"):
        args = {"prompt": args_text}
    else:
        args = {}
    if not name:
        raise AgentError("bad_command", "usage: /tool NAME ARGS")
    async with ctx.step(f"tool:{name}"):
        output = await ctx.tool_call(name, args)
    await _answer_tool(ctx, name, output)


async def _media(ctx: RunContext, command: str, prompt: str) -> None:
    """Call the command's media tool (what it makes reaches the user as the run's `file`), then say so."""
    tool, usage = MEDIA_COMMANDS[command]
    if not prompt:
        async with ctx.step("respond"):
            await _stream_words(ctx, usage)
        return
    async with ctx.step(f"tool:{tool}"):
        output = await ctx.tool_call(tool, {"prompt": prompt})
    await _answer_tool(ctx, tool, output)


async def _answer_tool(ctx: RunContext, name: str, output: Any) -> None:
    async with ctx.step("respond"):
        if output is None:
            await _stream_words(ctx, f"The {name} tool failed.")
        elif name == "calculator":
            await _stream_words(ctx, f"{output['expression']} = {output['result']}")
        elif name == "clock":
            await _stream_words(ctx, f"It is {output['iso']} ({output['timezone']}).")
        elif name == "generate_image":
            await _stream_words(ctx, f"Here is an image of {output['prompt']}.")
        elif name == "generate_video":
            await _stream_words(ctx, f"Here is a short video of {output['prompt']}.")
        elif name == "generate_music":
            await _stream_words(ctx, f"Here is a short piece of music: {output['prompt']}.")
        elif name == "knowledge_search":
            hits = output.get("results", [])
            if not hits:
                await _stream_words(ctx, "I found nothing about that in your documents.")
            else:
                found = "; ".join(f"{h['filename']}: {h['snippet']}" for h in hits[:3])
                await _stream_words(ctx, f"I found {len(hits)} passage(s): {found}")
        else:
            await _stream_words(ctx, f"{name} returned {orjson.dumps(output).decode()}")


async def _natural(ctx: RunContext, text: str) -> None:
    question = text.rstrip("?= ").removeprefix("what is ").removeprefix("What is ").strip()
    if question and _ARITHMETIC.match(question) and any(op in question for op in "+-*/%^×÷"):
        async with ctx.step("tool:calculator"):
            output = await ctx.tool_call("calculator", {"expression": question})
        await _answer_tool(ctx, "calculator", output)
    elif (match := _DRAW.match(text)) and "generate_image" in ctx.tools:
        await _media(ctx, "/image", match.group(1).strip(" ?.!"))
    elif (match := _VIDEO.match(text)) and "generate_video" in ctx.tools:
        await _media(ctx, "/video", match.group(1).strip(" ?.!"))
    elif (match := _MUSIC.match(text)) and "generate_music" in ctx.tools:
        await _media(ctx, "/music", match.group(1).strip(" ?.!"))
    elif (match := _SEARCH.match(text)) and "knowledge_search" in ctx.tools:
        async with ctx.step("tool:knowledge_search"):
            output = await ctx.tool_call("knowledge_search", {"query": match.group(1).strip(" ?.!")})
        await _answer_tool(ctx, "knowledge_search", output)
    elif _REFUND.search(text):
        async with ctx.step("wait_approval"):
            await ctx.tool_call("wait_approval", {"prompt": text})
    elif _TIME.search(text) and len(text) < 80:
        async with ctx.step("tool:clock"):
            output = await ctx.tool_call("clock", {})
        await _answer_tool(ctx, "clock", output)
    else:
        async with ctx.step("respond"):
            await _stream_words(ctx, f'You said: "{text}"')


async def _resume(ctx: RunContext) -> None:
    """Woken by a signal answering `wait_approval`: report the decision."""
    assert ctx.resume is not None
    state, payload = ctx.resume.state, ctx.resume.payload
    call_id = state.get("toolCallId", "")
    await ctx.sink.emit(TOOL_RESULT, {"toolCallId": call_id, "output": payload})
    approved = isinstance(payload, dict) and payload.get("approved") is True
    reason = payload.get("reason") if isinstance(payload, dict) else None
    prompt = state.get("input", {}).get("prompt", "")
    async with ctx.step("respond"):
        verdict = "Approved" if approved else "Rejected"
        text = f"{verdict}: {prompt}"
        if reason:
            text += f" (reason: {reason})"
        await _stream_words(ctx, text)
