"""OpenAI-compatible chat-completions providers (OpenAI, Ollama, vLLM, llama.cpp server, LM Studio).

A provider streams one model call: `LLMProvider.stream(messages, tools)` is an
async iterator of `TextDelta`, `ReasoningDelta`, `ToolCallDelta` and, last,
`Finish`.  Every way the call can go wrong (nothing listening, an HTTP error,
a chunk that is not JSON, a connection cut mid-stream, a timeout) ends the
iteration with an `AgentError` whose reason says which:

    llm_unavailable       the provider could not be reached
    llm_timeout           no answer within the timeout
    llm_http_error        the provider answered an HTTP error status
    llm_bad_response      the stream held something that is not a chat.completion.chunk
    llm_connection_lost   the stream broke off before the model finished
    llm_error             the provider reported an error inside the stream
    llm_config            the provider's configuration cannot work (e.g. its key variable is unset)

Configuration (`[llm.NAME]` tables): `base_url`, `model`, optional
`api_key_env` (the environment variable holding the key; servers that need
none get a placeholder), `timeout_s` (longest wait for the response and for
each next piece of it, default 60), `connect_timeout_s` (default 10),
`total_timeout_s` (a whole model call, default 600), `max_retries` (default 0),
`temperature`, `max_tokens`, `extra_body` (a table sent with every request,
e.g. Ollama's `options`).
"""
from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import time
from collections.abc import AsyncGenerator, Iterator
from dataclasses import dataclass, field
from typing import Any, Protocol

import openai

from agents.context import AgentError
from telemetry.counters import LLM_SECONDS, Histogram

log = logging.getLogger("parley.llm")

NO_KEY = "not-needed"  # what a server that wants no key is sent (the client requires some key)
MAX_ERROR_TEXT = 300


@dataclass(frozen=True)
class TextDelta:
    text: str


@dataclass(frozen=True)
class ReasoningDelta:
    text: str


@dataclass(frozen=True)
class ToolCallDelta:
    """A piece of the tool call at `index`: its id and name come (usually) with the first piece."""

    index: int
    id: str | None
    name: str | None
    arguments: str


@dataclass(frozen=True)
class Finish:
    reason: str


LLMEvent = TextDelta | ReasoningDelta | ToolCallDelta | Finish


class ChatModel(Protocol):
    """What the react loop talks to: a provider, or a recording of one (agents/replay.py)."""

    def stream(self, messages: list[dict[str, Any]], tools: list[dict[str, Any]]) -> AsyncGenerator[LLMEvent, None]: ...


@dataclass(frozen=True)
class LLMConfig:
    name: str
    base_url: str
    model: str
    api_key_env: str | None = None
    timeout_s: float = 60.0
    connect_timeout_s: float = 10.0
    total_timeout_s: float = 600.0
    max_retries: int = 0
    temperature: float | None = None
    max_tokens: int | None = None
    extra_body: dict[str, Any] = field(default_factory=dict)

    @classmethod
    def from_table(cls, name: str, table: dict[str, Any]) -> LLMConfig:
        """An `[llm.NAME]` table, as config.py's schema checked it."""
        timeout_s = float(table.get("timeout_s", 60.0))
        return cls(
            name=name, base_url=str(table["base_url"]).rstrip("/"), model=table["model"],
            api_key_env=table.get("api_key_env"), timeout_s=timeout_s,
            connect_timeout_s=float(table.get("connect_timeout_s", min(10.0, timeout_s))),
            total_timeout_s=float(table.get("total_timeout_s", max(600.0, timeout_s))),
            max_retries=table.get("max_retries", 0), temperature=table.get("temperature"),
            max_tokens=table.get("max_tokens"), extra_body=dict(table.get("extra_body", {})),
        )

    def public(self) -> dict[str, Any]:
        return {"name": self.name, "baseUrl": self.base_url, "model": self.model}


class LLMProvider:
    """One named OpenAI-compatible endpoint.  Holds one client per event loop; `aclose()` releases it."""

    def __init__(self, config: LLMConfig) -> None:
        self.config = config
        self._client: openai.AsyncOpenAI | None = None
        self._client_loop: asyncio.AbstractEventLoop | None = None
        self.calls: dict[str, int] = {}  # model calls by outcome (metrics)
        self.call_seconds = Histogram(LLM_SECONDS)

    @property
    def name(self) -> str:
        return self.config.name

    def _api_key(self) -> str:
        env = self.config.api_key_env
        if env is None:
            return NO_KEY
        key = os.environ.get(env)
        if not key:
            raise AgentError("llm_config", f"LLM provider {self.name!r}: the environment variable {env} (api_key_env) is not set")
        return key

    def client(self) -> openai.AsyncOpenAI:
        """The official client of this provider on the running event loop (AgentError `llm_config`
        when its key variable is unset), for endpoints other than chat completions."""
        return self._client_for_loop()

    def _client_for_loop(self) -> openai.AsyncOpenAI:
        loop = asyncio.get_running_loop()
        key = self._api_key()  # read per call: a changed variable takes effect without a restart
        if (self._client is None or self._client_loop is not loop or self._client.is_closed()
                or self._client.api_key != key):
            cfg = self.config
            self._client = openai.AsyncOpenAI(
                base_url=cfg.base_url,
                api_key=key,
                timeout=openai.Timeout(cfg.timeout_s, connect=cfg.connect_timeout_s),
                max_retries=cfg.max_retries,
            )
            self._client_loop = loop
        return self._client

    async def aclose(self) -> None:
        client, self._client, self._client_loop = self._client, None, None
        if client is not None:
            with contextlib.suppress(Exception):
                await client.close()

    @contextlib.contextmanager
    def counted(self) -> Iterator[None]:
        """Count the model call made inside: its outcome (`ok`; the AgentError's reason; `cancelled` when
        the caller stopped it, e.g. the run was stopped) and its duration."""
        started = time.monotonic()
        outcome = "cancelled"
        try:
            yield
            outcome = "ok"
        except AgentError as exc:
            outcome = exc.reason
            raise
        except Exception:
            outcome = "error"
            raise
        finally:
            self.calls[outcome] = self.calls.get(outcome, 0) + 1
            self.call_seconds.observe(time.monotonic() - started)

    async def stream(self, messages: list[dict[str, Any]], tools: list[dict[str, Any]]) -> AsyncGenerator[LLMEvent, None]:
        """Stream one model call.  Use it under `contextlib.aclosing` so that an early exit closes the response."""
        with self.counted():
            deadline = asyncio.get_running_loop().time() + self.config.total_timeout_s
            client = self._client_for_loop()
            response = await self._open(client, self._request(messages, tools), deadline)
            finished = False
            try:
                iterator = response.__aiter__()
                while True:
                    try:
                        async with asyncio.timeout_at(deadline):
                            chunk = await anext(iterator)
                    except StopAsyncIteration:
                        break
                    for event in _chunk_events(chunk):
                        if isinstance(event, Finish):
                            finished = True
                        yield event
            except Exception as exc:
                raise self._broken_off(exc) from None
            finally:
                with contextlib.suppress(Exception):
                    await response.close()
            if not finished:
                raise self._lost("the stream ended without a finish reason")

    def _request(self, messages: list[dict[str, Any]], tools: list[dict[str, Any]]) -> dict[str, Any]:
        """The arguments of a streamed chat completion: the configured ones beside the messages and tools."""
        cfg = self.config
        kwargs: dict[str, Any] = {"model": cfg.model, "messages": messages, "stream": True}
        if tools:
            kwargs["tools"] = tools
        if cfg.temperature is not None:
            kwargs["temperature"] = cfg.temperature
        if cfg.max_tokens is not None:
            kwargs["max_tokens"] = cfg.max_tokens
        if cfg.extra_body:
            kwargs["extra_body"] = cfg.extra_body
        return kwargs

    async def _open(self, client: openai.AsyncOpenAI, kwargs: dict[str, Any], deadline: float) -> Any:
        """The streaming response of the request; AgentError when none comes."""
        try:
            async with asyncio.timeout_at(deadline):
                return await client.chat.completions.create(**kwargs)
        except TimeoutError:
            raise self._timeout() from None
        except openai.APITimeoutError:
            raise self._timeout() from None
        except openai.APIConnectionError as exc:
            raise AgentError("llm_unavailable", f"The LLM provider {self.name!r} at {self.config.base_url} cannot be reached: "
                             f"{_cause(exc)}") from None
        except openai.APIStatusError as exc:
            raise self._http_error(exc) from None
        except openai.OpenAIError as exc:
            raise AgentError("llm_error", f"The LLM provider {self.name!r} failed: {_short(str(exc))}") from None

    def _broken_off(self, exc: Exception) -> AgentError:
        """The AgentError of what broke a streaming response off."""
        if isinstance(exc, TimeoutError | openai.APITimeoutError):
            return self._timeout()
        if isinstance(exc, openai.APIConnectionError):
            return self._lost(_cause(exc))
        if isinstance(exc, openai.APIStatusError):
            return self._http_error(exc)
        if isinstance(exc, openai.APIError):
            return AgentError("llm_error", f"The LLM provider {self.name!r} reported an error: {_short(exc.message)}")
        if isinstance(exc, ValueError | TypeError | KeyError | AttributeError):  # json.JSONDecodeError is a ValueError
            return AgentError("llm_bad_response", f"The LLM provider {self.name!r} sent a malformed stream chunk: "
                              f"{_short(f'{type(exc).__name__}: {exc}')}")
        # Transport errors that openai 1.x lets through raw (httpx.ReadTimeout, ...).
        if "Timeout" in type(exc).__name__:
            return self._timeout()
        return self._lost(f"{type(exc).__name__}: {exc}")

    def _http_error(self, exc: openai.APIStatusError) -> AgentError:
        return AgentError("llm_http_error", f"The LLM provider {self.name!r} answered HTTP {exc.status_code}: "
                          f"{_short(_status_message(exc))}")

    def _timeout(self) -> AgentError:
        cfg = self.config
        return AgentError("llm_timeout", f"The LLM provider {self.name!r} did not answer in time "
                          f"(timeout_s={cfg.timeout_s:g}, total_timeout_s={cfg.total_timeout_s:g})")

    def _lost(self, detail: str) -> AgentError:
        return AgentError("llm_connection_lost", f"The stream from LLM provider {self.name!r} broke off before the model "
                          f"finished: {_short(detail)}")


def _chunk_events(chunk: Any) -> list[LLMEvent]:
    """The events of one `chat.completion.chunk` (read defensively: servers differ in what they omit)."""
    out: list[LLMEvent] = []
    choices = getattr(chunk, "choices", None) or []
    if not isinstance(choices, list):
        raise TypeError("choices is not a list")
    for choice in choices[:1]:
        delta = getattr(choice, "delta", None)
        if delta is not None:
            reasoning = getattr(delta, "reasoning_content", None) or getattr(delta, "reasoning", None)
            if isinstance(reasoning, str) and reasoning:
                out.append(ReasoningDelta(reasoning))
            content = getattr(delta, "content", None)
            if isinstance(content, str) and content:
                out.append(TextDelta(content))
            for position, call in enumerate(getattr(delta, "tool_calls", None) or []):
                index = getattr(call, "index", None)
                function = getattr(call, "function", None)
                name = getattr(function, "name", None) if function is not None else None
                arguments = getattr(function, "arguments", None) if function is not None else None
                if arguments is not None and not isinstance(arguments, str):
                    raise TypeError("tool call arguments are not a string")
                out.append(ToolCallDelta(
                    index=index if isinstance(index, int) else position,
                    id=getattr(call, "id", None) or None,
                    name=name or None,
                    arguments=arguments or "",
                ))
        reason = getattr(choice, "finish_reason", None)
        if reason:
            out.append(Finish(str(reason)))
    return out


def _cause(exc: BaseException) -> str:
    """The innermost cause of a connection error, e.g. `ConnectError: [Errno 111] Connection refused`."""
    inner: BaseException = exc
    while inner.__cause__ is not None:
        inner = inner.__cause__
    text = str(inner) or type(inner).__name__
    return _short(text if inner is exc else f"{type(inner).__name__}: {text}")


def _status_message(exc: openai.APIStatusError) -> str:
    body = exc.body
    if isinstance(body, dict):
        error = body.get("error", body)
        if isinstance(error, dict) and isinstance(error.get("message"), str):
            return str(error["message"])
        if isinstance(error, str):
            return error
    return exc.message


def _short(text: str) -> str:
    text = " ".join(text.split())
    return text if len(text) <= MAX_ERROR_TEXT else text[: MAX_ERROR_TEXT - 1] + "…"


def provider_table(extra: dict[str, Any], name: str, providers: set[str]) -> dict[str, Any] | None:
    """The config table `[name]` (its shape checked by config.py's schema) whose `llm` key names an
    `[llm.NAME]` provider; None without one. Raises ValueError when that provider is not configured.
    """
    if name not in extra:
        return None
    table: dict[str, Any] = extra[name]
    llm = table["llm"]
    if llm not in providers:
        configured = ", ".join(sorted(providers)) or "none"
        raise ValueError(f"[{name}]: llm {llm!r} names no configured provider (no [llm.{llm}] table; configured: {configured})")
    return table
