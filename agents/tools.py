"""Built-in tools.  A tool takes a JSON object and returns a JSON value."""
from __future__ import annotations

import asyncio
import base64
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any, Protocol
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

from agents.calculator import MAX_EXPRESSION
from agents.images import render_png
from agents.media_gen import MUSIC_SECONDS, VIDEO_FPS, VIDEO_FRAMES, VIDEO_HEIGHT, VIDEO_WIDTH, render_apng, render_wav
from agents.sandbox import JobError, Sandbox, SandboxFailed


@dataclass(frozen=True)
class ToolEnv:
    """Who a tool call runs for: tools that read or write user data scope it by this."""

    user_id: str
    task_id: str
    thread_id: str


class ToolError(Exception):
    """The tool could not do what was asked; the message is shown to the model and the user."""


class InsufficientCredits(Exception):
    """The user's balance does not cover a tool that costs credits: the run ends `failed`."""

    def __init__(self, tool: str, cost: int, balance: int) -> None:
        unit = "credit" if cost == 1 else "credits"
        super().__init__(f"{tool} costs {cost} {unit} and the balance is {balance}: add credits, then retry the run")
        self.tool = tool
        self.cost = cost
        self.balance = balance


class Billing(Protocol):
    """Charges tools that cost credits (runs/plans.py): `debit` before the tool runs (raising
    InsufficientCredits), `refund` when it then fails."""

    async def debit(self, tool: str, env: ToolEnv) -> int: ...

    async def refund(self, tool: str, amount: int, env: ToolEnv) -> None: ...


_FILE_URL_SCHEMES = ("data:", "https://", "http://")


@dataclass(frozen=True)
class Tool:
    name: str
    description: str
    input_schema: dict[str, Any]
    run: Callable[[dict[str, Any], ToolEnv], Awaitable[Any]] | None
    parks: bool = False  # the call parks the run until a signal answers it
    meta: dict[str, Any] = field(default_factory=dict)

    def file_of(self, output: Any) -> dict[str, str] | None:
        """The `file` event `{url, mediaType}` that a successful call with this output adds to the run, if any.

        Only tools marked `meta["emits_file"]` produce files, and only when the output
        carries a `data:` or `http(s):` url and a media type.
        """
        if not self.meta.get("emits_file") or not isinstance(output, dict):
            return None
        url, media_type = output.get("url"), output.get("mediaType")
        if not isinstance(url, str) or not isinstance(media_type, str) or not url.startswith(_FILE_URL_SCHEMES):
            return None
        return {"url": url, "mediaType": media_type}


_INLINE_LIMIT = 256


def for_model(value: Any) -> Any:
    """`value` with long `data:` URLs cut to a short note: a model gains nothing from base64 pixels,
    and an image's worth of them would fill a small model's context."""
    if isinstance(value, str) and value.startswith("data:") and len(value) > _INLINE_LIMIT:
        head = value.split(",", 1)[0]
        return f"{head},... ({len(value)} characters; shown to the user, left out here)"
    if isinstance(value, dict):
        return {k: for_model(v) for k, v in value.items()}
    if isinstance(value, list):
        return [for_model(v) for v in value]
    return value


async def _clock(args: dict[str, Any], env: ToolEnv) -> dict[str, Any]:
    name = args.get("timezone") or "UTC"
    if not isinstance(name, str):
        raise ToolError("timezone must be a string")
    try:
        tz: Any = UTC if name.upper() == "UTC" else ZoneInfo(name)
    except (ZoneInfoNotFoundError, ValueError):
        raise ToolError(f"unknown timezone: {name}") from None
    now = datetime.now(tz)
    return {"iso": now.isoformat(timespec="seconds"), "timezone": name, "epochMs": int(now.timestamp() * 1000)}


CALCULATOR_TIMEOUT_S = 1.0
# The evaluator bounds every number it makes (agents/calculator.py); the worker's time limit
# is the guarantee all the same, and keeps even a cheap parse off the event loop.
CALCULATOR = Sandbox("agents.calculator:evaluate", workers=2, memory_mb=256)


async def _calculator(args: dict[str, Any], env: ToolEnv) -> dict[str, Any]:
    expression = args.get("expression")
    if not isinstance(expression, str) or not expression.strip():
        raise ToolError("expression must be a non-empty string")
    if len(expression) > MAX_EXPRESSION:
        raise ToolError(f"expression longer than {MAX_EXPRESSION} characters")
    try:
        result = await CALCULATOR.call(CALCULATOR_TIMEOUT_S, expression=expression)
    except JobError as exc:
        raise ToolError(exc.message) from None
    except SandboxFailed as exc:
        raise ToolError(f"the expression cannot be computed: {exc}") from None
    return {"expression": expression, "result": result}


MAX_IMAGE_PROMPT = 500
IMAGE_SIZE = 256


def _prompt(args: dict[str, Any], what: str) -> str:
    """The call's `prompt`, stripped (ToolError when it is missing, blank or too long)."""
    prompt = args.get("prompt")
    if not isinstance(prompt, str) or not prompt.strip():
        raise ToolError(f"prompt must be a non-empty string describing the {what}")
    prompt = prompt.strip()
    if len(prompt) > MAX_IMAGE_PROMPT:
        raise ToolError(f"prompt longer than {MAX_IMAGE_PROMPT} characters")
    return prompt


def _data_url(media_type: str, data: bytes) -> str:
    return f"data:{media_type};base64," + base64.b64encode(data).decode("ascii")


async def _generate_image(args: dict[str, Any], env: ToolEnv) -> dict[str, Any]:
    prompt = _prompt(args, "image")
    # ~15 ms of CPU: off the event loop, so other runs keep streaming meanwhile.
    png = await asyncio.to_thread(render_png, prompt, IMAGE_SIZE)
    return {"url": _data_url("image/png", png), "mediaType": "image/png", "prompt": prompt,
            "width": IMAGE_SIZE, "height": IMAGE_SIZE}


async def _generate_music(args: dict[str, Any], env: ToolEnv) -> dict[str, Any]:
    prompt = _prompt(args, "music")
    wav = await asyncio.to_thread(render_wav, prompt)  # a few ms; off the loop all the same
    return {"url": _data_url("audio/wav", wav), "mediaType": "audio/wav", "prompt": prompt,
            "durationS": MUSIC_SECONDS}


async def _generate_video(args: dict[str, Any], env: ToolEnv) -> dict[str, Any]:
    prompt = _prompt(args, "video")
    apng = await asyncio.to_thread(render_apng, prompt)  # ~30 ms of CPU: off the event loop
    return {"url": _data_url("image/apng", apng), "mediaType": "image/apng", "prompt": prompt,
            "frames": VIDEO_FRAMES, "fps": VIDEO_FPS}


_PROMPT_SCHEMA = {
    "type": "object",
    "properties": {"prompt": {"type": "string", "minLength": 1, "maxLength": MAX_IMAGE_PROMPT}},
    "required": ["prompt"],
    "additionalProperties": False,
}


BUILTIN_TOOLS: dict[str, Tool] = {
    t.name: t
    for t in (
        Tool(
            "clock",
            "The current date and time, in a timezone (IANA name, default UTC).",
            {"type": "object", "properties": {"timezone": {"type": "string"}}, "additionalProperties": False},
            _clock,
        ),
        Tool(
            "calculator",
            "Evaluates an arithmetic expression: + - * / // % ** ( ) sqrt abs round min max sin cos tan log exp pi e.",
            {
                "type": "object",
                "properties": {"expression": {"type": "string"}},
                "required": ["expression"],
                "additionalProperties": False,
            },
            _calculator,
        ),
        Tool(
            "wait_approval",
            "Asks a human to approve; the run waits (parked) until a signal answers {approved, reason?}.",
            {
                "type": "object",
                "properties": {"prompt": {"type": "string"}},
                "required": ["prompt"],
                "additionalProperties": False,
            },
            None,
            parks=True,
        ),
        Tool(
            "generate_image",
            f"Draws a {IMAGE_SIZE}x{IMAGE_SIZE} PNG image from a text prompt (offline: an abstract picture "
            "whose colours follow the prompt) and shows it to the user.",
            _PROMPT_SCHEMA,
            _generate_image,
            meta={"emits_file": True},
        ),
        Tool(
            "generate_music",
            f"Composes a {MUSIC_SECONDS:g}-second piece of music (a WAV file) from a text prompt and plays it to "
            "the user. An offline stand-in for a music model: a simple melody whose key and notes follow the prompt.",
            _PROMPT_SCHEMA,
            _generate_music,
            meta={"emits_file": True},
        ),
        Tool(
            "generate_video",
            f"Makes a short looping video ({VIDEO_FRAMES} frames of {VIDEO_WIDTH}x{VIDEO_HEIGHT} at {VIDEO_FPS} fps, "
            "an animated PNG) from a text prompt and shows it to the user. An offline stand-in for a video model: "
            "an abstract moving picture whose colours follow the prompt.",
            _PROMPT_SCHEMA,
            _generate_video,
            meta={"emits_file": True},
        ),
    )
}
