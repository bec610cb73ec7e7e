"""Speech to text through an OpenAI-compatible transcription endpoint: the `[transcribe]` table.

    [transcribe]
    llm = "local"          # an [llm.NAME] provider whose base_url also serves POST /audio/transcriptions
    model = "whisper-1"    # the default
    language = "en"        # optional: an ISO-639-1 hint sent with every request
    timeout_s = 120        # a whole request, however the provider's own timeouts are set (default 120)

Without the table nothing is ever sent anywhere (the route answers 501).  The
call goes through the official `openai` client (`audio.transcriptions.create`)
of the named provider, so its key, base URL and connection timeouts apply.
Every way it can fail raises `AgentError` with agents/llm.py's reasons.
"""
from __future__ import annotations

import asyncio
from dataclasses import dataclass
from typing import Any

import openai

from agents.context import AgentError
from agents.llm import LLMProvider, _cause, _short, _status_message, provider_table

DEFAULT_MODEL = "whisper-1"
DEFAULT_TIMEOUT_S = 120.0
HOW_TO = ('no transcription backend is configured: add [transcribe] llm = "NAME" (an [llm.NAME] provider whose '
          'base_url serves the OpenAI-compatible POST /audio/transcriptions) and model = "whisper-1" to the config file')


@dataclass(frozen=True)
class TranscribeConfig:
    llm: str
    model: str = DEFAULT_MODEL
    language: str | None = None
    timeout_s: float = DEFAULT_TIMEOUT_S


@dataclass(frozen=True)
class Transcript:
    text: str
    language: str | None


def configured(extra: dict[str, Any], providers: set[str]) -> TranscribeConfig | None:
    """The config file's `[transcribe]` table, or None without one.

    Raises ValueError when it names no configured provider (config.py's schema checked the rest).
    """
    table = provider_table(extra, "transcribe", providers)
    if table is None:
        return None
    return TranscribeConfig(table["llm"], table.get("model", DEFAULT_MODEL), table.get("language"),
                            float(table.get("timeout_s", DEFAULT_TIMEOUT_S)))


async def transcribe(provider: LLMProvider, config: TranscribeConfig, wav: bytes) -> Transcript:
    """The text of a WAV recording, from the provider's transcription endpoint (AgentError on failure)."""
    with provider.counted():
        return await _transcribe(provider, config, wav)


async def _transcribe(provider: LLMProvider, config: TranscribeConfig, wav: bytes) -> Transcript:
    client = provider.client()
    where = f"The transcription backend {provider.name!r}"
    try:
        async with asyncio.timeout(config.timeout_s):
            result = await client.audio.transcriptions.create(
                file=("audio.wav", wav, "audio/wav"),  # a server-made name: the client's never leaves
                model=config.model,
                language=config.language if config.language is not None else openai.omit,
            )
    except (TimeoutError, openai.APITimeoutError):
        raise AgentError("llm_timeout", f"{where} did not answer in time (timeout_s={config.timeout_s:g})") from None
    except openai.APIConnectionError as exc:
        raise AgentError("llm_unavailable", f"{where} at {provider.config.base_url} cannot be reached: {_cause(exc)}") from None
    except openai.APIStatusError as exc:
        raise AgentError("llm_http_error", f"{where} answered HTTP {exc.status_code}: {_short(_status_message(exc))}") from None
    except openai.OpenAIError as exc:  # e.g. a body that is not a transcription
        raise AgentError("llm_bad_response", f"{where} failed: {_short(str(exc))}") from None
    except (ValueError, TypeError) as exc:  # a body that is not JSON
        raise AgentError("llm_bad_response", f"{where} sent a malformed answer: {_short(f'{type(exc).__name__}: {exc}')}") from None
    text = result if isinstance(result, str) else getattr(result, "text", None)
    if not isinstance(text, str):
        raise AgentError("llm_bad_response", f"{where} answered without a text")
    language = getattr(result, "language", None)
    return Transcript(text.strip(), language if isinstance(language, str) and language else None)
