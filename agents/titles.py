"""Thread titles named by a model: the `[titles]` table, the request, and cleaning the answer.

    [titles]
    llm = "local"    # an [llm.NAME] provider; without [titles] no model is ever asked for a title

The model gets a short instruction, the conversation's first user message and
the assistant's reply (each cut to `MAX_INPUT_CHARS`), and no tools.  Its answer
is cleaned to one line of at most `MAX_TITLE_CHARS` characters.
"""
from __future__ import annotations

import asyncio
import contextlib
import re
from typing import Any

from agents.context import AgentError
from agents.llm import ChatModel, TextDelta, provider_table

SYSTEM_PROMPT = "Give this conversation a short title of at most 6 words. Answer with the title only."
TIMEOUT_S = 15.0  # a whole title request, however the provider's own timeouts are set
MAX_INPUT_CHARS = 2000
MAX_ANSWER_CHARS = 2000  # a model that rambles is cut off: only the first line is used
MAX_TITLE_CHARS = 60

_EDGES = "\"'`*#_“”‘’«»„ \t"
_LABEL = re.compile(r"^title\s*:\s*", re.IGNORECASE)


def configured_llm(extra: dict[str, Any], providers: set[str]) -> str | None:
    """The provider named by the config file's `[titles]` table, or None without one.

    Raises ValueError when it names no configured provider.
    """
    table = provider_table(extra, "titles", providers)
    return None if table is None else str(table["llm"])


def title_messages(user_text: str, reply_text: str) -> list[dict[str, Any]]:
    """The chat messages of a title request: the instruction, then the conversation quoted in one
    user message (a conversation ending on an assistant turn confuses some local models' templates)."""
    quoted = f"User: {user_text[:MAX_INPUT_CHARS]}"
    if reply_text:
        quoted += f"\n\nAssistant: {reply_text[:MAX_INPUT_CHARS]}"
    return [
        {"role": "system", "content": SYSTEM_PROMPT},
        {"role": "user", "content": f"The conversation:\n\n{quoted}"},
    ]


async def ask_title(model: ChatModel, user_text: str, reply_text: str, timeout_s: float | None = None) -> str | None:
    """The model's title for the conversation, cleaned; None when it answered nothing usable.

    Raises AgentError when the call fails (the provider's reasons, or `llm_timeout`
    after `timeout_s`, default `TIMEOUT_S`).
    """
    timeout_s = TIMEOUT_S if timeout_s is None else timeout_s
    answer: list[str] = []
    size = 0
    try:
        async with asyncio.timeout(timeout_s):
            async with contextlib.aclosing(model.stream(title_messages(user_text, reply_text), [])) as events:
                async for event in events:
                    if isinstance(event, TextDelta):
                        answer.append(event.text)
                        size += len(event.text)
                        if size >= MAX_ANSWER_CHARS:
                            break
    except TimeoutError:
        raise AgentError("llm_timeout", f"no title within {timeout_s:g}s") from None
    return clean_title("".join(answer))


def clean_title(raw: str) -> str | None:
    """The first non-empty line, without quotes, backticks, markdown marks, a `Title:` label or a
    final period, whitespace collapsed, cut to `MAX_TITLE_CHARS` with "…"; None when nothing is left."""
    line = next((ln for ln in raw.splitlines() if ln.strip(_EDGES)), "")
    previous = None
    while line != previous:
        previous = line
        line = _LABEL.sub("", line.strip(_EDGES)).rstrip(".").strip()
    return shorten(line.replace("**", "").replace("`", ""))


def shorten(text: str) -> str | None:
    """`text` as a title: whitespace collapsed, cut to `MAX_TITLE_CHARS` with "…"; None when empty.
    (A thread's first message becomes its title this way too.)"""
    words = " ".join(text.split())
    if not words:
        return None
    return words if len(words) <= MAX_TITLE_CHARS else words[: MAX_TITLE_CHARS - 3].rstrip() + "…"
