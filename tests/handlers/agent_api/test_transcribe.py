"""Speech to text on the Agent API (SPEC section 8): POST /api/v1/agent/transcribe against a local
OpenAI-compatible transcription endpoint (tests/agents/fake_openai.py)."""
import asyncio
import io
import json
import struct
import time
import wave

import pytest

from agents import AgentRegistry
from config import check_file
from server import Config, serve
from tests.agents import fake_openai as fo
from tests.agents.test_react import fake, refused_url  # noqa: F401  (fixtures)
from tests.handlers.agent_api.test_attachments import MP3, assert_detail
from tests.helpers import INTERNAL_KEY, body, chunked_body, multipart, raw_exchange, request_head

MIB = 1024 * 1024
ROUTE = "/api/v1/agent/transcribe"


def wav_bytes(seconds: float, rate: int = 16000, channels: int = 1, width: int = 2) -> bytes:
    buf = io.BytesIO()
    with wave.open(buf, "wb") as w:
        w.setnchannels(channels)
        w.setsampwidth(width)
        w.setframerate(rate)
        w.writeframes(b"\x00" * width * channels * int(rate * seconds))
    return buf.getvalue()


def riff(*chunks: tuple[bytes, bytes], size: int | None = None) -> bytes:
    """A RIFF/WAVE file made of (id, body) chunks, each with its true size unless the body is a (size, body) pair."""
    out = b"WAVE"
    for cid, data in chunks:
        out += cid + struct.pack("<I", len(data)) + data + (b"\x00" if len(data) % 2 else b"")
    return b"RIFF" + struct.pack("<I", len(out) if size is None else size) + out


def fmt(channels=1, rate=16000, bits=16, byte_rate=None, block_align=None, audio_format=1) -> bytes:
    align = channels * bits // 8 if block_align is None else block_align
    return struct.pack("<HHIIHH", audio_format, channels, rate, rate * align if byte_rate is None else byte_rate, align, bits)


async def transcribe(client, data, filename="speech.wav", field="file", ctype="audio/wav"):
    return await client.upload(ROUTE, {}, [(field, filename, data, ctype)])


@pytest.fixture
def transcribe_table():
    return {"llm": "fake", "model": "whisper-1"}


@pytest.fixture
def parley_config(tmp_path, fake, transcribe_table):  # noqa: F811
    extra = {"llm": {"fake": {"base_url": fake.base_url, "model": "chat-model", "timeout_s": 10}}}
    if transcribe_table is not None:
        extra["transcribe"] = transcribe_table
    return Config(data_dir=tmp_path / "data", internal_key=INTERNAL_KEY, demo_delay_ms=0, extra=extra)


# -- without a backend ---------------------------------------------------------------------------

@pytest.mark.parametrize("transcribe_table", [None])
async def test_without_config_it_is_501_saying_how(alice, parley, fake):  # noqa: F811
    detail = assert_detail(await transcribe(alice, wav_bytes(0.5)), 501, "[transcribe]", "[llm.", "whisper-1")
    assert "config" in detail
    assert fake.audio_requests == []


async def test_needs_credentials(http_server_client):
    raw, ctype = multipart({}, [("file", "a.wav", wav_bytes(0.1), "audio/wav")])
    resp = await http_server_client.fetch(ROUTE, method="POST", body=raw, headers={"Content-Type": ctype}, raise_error=False)
    assert_detail(resp, 401)


# -- a real round trip ----------------------------------------------------------------------------

async def test_round_trip_sends_a_multipart_file_and_model(alice, fake):  # noqa: F811
    fake.transcripts.append(fo.Transcript(text=" 今天天气真不错 ", language="zh"))
    audio = wav_bytes(3.5)
    resp = await transcribe(alice, audio, filename="../../secret name.wav")
    assert resp.code == 200, resp.body
    assert body(resp) == {"transcript": "今天天气真不错", "language": "zh", "duration": 3.5}
    [req] = fake.audio_requests
    assert req.headers["Content-Type"].startswith("multipart/form-data; boundary=")
    assert req.fields["model"] == "whisper-1"
    assert req.file == audio
    assert req.filename == "audio.wav" and req.file_content_type == "audio/wav"  # never the client's name
    assert "secret" not in json.dumps(req.headers)


async def test_language_is_optional_and_the_seed_field_name_works(alice, fake):  # noqa: F811
    fake.transcripts.append(fo.Transcript(text="hello"))
    resp = await transcribe(alice, wav_bytes(0.5, rate=44100, channels=2), field="audio")
    assert resp.code == 200, resp.body
    assert body(resp) == {"transcript": "hello", "language": "und", "duration": 0.5}


@pytest.mark.parametrize("transcribe_table", [{"llm": "fake", "model": "tiny.en", "language": "en"}])
async def test_model_and_language_come_from_config(alice, parley, fake):  # noqa: F811
    fake.transcripts.append(fo.Transcript(text="hi"))
    assert (await transcribe(alice, wav_bytes(0.1))).code == 200
    assert fake.audio_requests[0].fields["model"] == "tiny.en" and fake.audio_requests[0].fields["language"] == "en"


# -- WAV checks and duration ------------------------------------------------------------------------

@pytest.mark.parametrize(("seconds", "rate", "channels", "width"), [(2.0, 16000, 1, 2), (0.25, 8000, 2, 1), (1.5, 48000, 2, 3)])
async def test_duration_is_read_from_the_header(alice, fake, seconds, rate, channels, width):  # noqa: F811
    fake.transcripts.append(fo.Transcript(text="x"))
    resp = await transcribe(alice, wav_bytes(seconds, rate, channels, width))
    assert resp.code == 200, resp.body
    assert body(resp)["duration"] == seconds


async def test_extra_chunks_and_a_streaming_data_size(alice, fake):  # noqa: F811
    fake.transcripts.extend([fo.Transcript(text="x"), fo.Transcript(text="y")])
    audio = b"\x00" * 32000  # one second of 16 kHz mono 16-bit
    with_list = riff((b"fmt ", fmt()), (b"LIST", b"INFOISFT\x05\x00\x00\x00test\x00"), (b"data", audio))
    assert body(await transcribe(alice, with_list))["duration"] == 1.0
    streaming = b"RIFF\xff\xff\xff\xffWAVE" + b"fmt " + struct.pack("<I", 16) + fmt() + b"data\xff\xff\xff\xff" + audio
    assert body(await transcribe(alice, streaming))["duration"] == 1.0


async def test_only_wav_is_taken(alice, fake):  # noqa: F811
    for data, name in [(MP3, "a.mp3"), (MP3, "a.wav"), (b"hello", "a.wav"), (b"RIFF\x04\x00\x00\x00AVI ", "a.wav"),
                       (b"RIFF\x1a\x00\x00\x00WEBPVP8L", "a.wav"), (b"RIF", "a.wav")]:
        assert_detail(await transcribe(alice, data, filename=name), 415, "WAV")
    assert fake.audio_requests == []


async def test_malformed_wav_is_422(alice, fake):  # noqa: F811
    audio = b"\x00" * 3200
    for data in [
        b"RIFF\x04\x00\x00\x00WAVE",                                   # no chunks
        riff((b"data", audio)),                                        # data before fmt
        riff((b"fmt ", fmt())),                                        # no data
        riff((b"fmt ", fmt()[:12]), (b"data", audio)),                 # a short fmt
        riff((b"fmt ", fmt(byte_rate=0)), (b"data", audio)),           # zero byte rate
        riff((b"fmt ", fmt(byte_rate=12345)), (b"data", audio)),       # a byte rate that does not fit PCM
        riff((b"fmt ", fmt(channels=0, block_align=2)), (b"data", audio)),
        riff((b"fmt ", fmt()), (b"data", audio))[:-100],               # truncated: the data chunk is larger than the file
    ]:
        assert_detail(await transcribe(alice, data), 422, "WAV")
    assert_detail(await transcribe(alice, b"", filename="empty.wav"), 415)
    raw, ctype = multipart({"file": "not a file"}, [])
    assert_detail(await alice.request("POST", ROUTE, raw=raw, headers={"Content-Type": ctype}), 422, "file")
    assert_detail(await alice.request("POST", ROUTE, {"audio": "x"}), 422, "multipart")
    assert fake.audio_requests == []


# -- limits ----------------------------------------------------------------------------------------

async def test_10_mib_plus_one_is_413_and_the_server_keeps_serving(alice, fake, http_server_client):  # noqa: F811
    raw, ctype = multipart({}, [("file", "big.wav", b"a", "audio/wav")])
    raw = raw.replace(b"a\r\n--", b"a" * (10 * MIB + 1 - len(raw) + 1) + b"\r\n--")
    assert len(raw) == 10 * MIB + 1
    assert_detail(await alice.request("POST", ROUTE, raw=raw, headers={"Content-Type": ctype}), 413)
    port = http_server_client.get_http_port()
    head = request_head("POST", ROUTE, port, ctype, "Transfer-Encoding: chunked\r\n")
    status, _, resp_body = await raw_exchange(port, head, chunked_body(raw))
    assert status == 413 and "detail" in json.loads(resp_body)
    assert fake.audio_requests == []
    # a recording of almost 10 MiB is taken
    fake.transcripts.append(fo.Transcript(text="long"))
    audio = wav_bytes(300.0)  # 9.6 MB of 16 kHz mono 16-bit
    assert len(audio) < 10 * MIB - 1000
    resp = await transcribe(alice, audio)
    assert resp.code == 200, resp.body
    assert body(resp)["duration"] == 300.0


async def test_20_a_minute_per_user_then_429(alice, bob, fake):  # noqa: F811
    audio = wav_bytes(0.1)
    fake.transcripts.extend(fo.Transcript(text=f"t{i}") for i in range(21))
    for i in range(20):
        resp = await transcribe(alice, audio)
        assert resp.code == 200, (i, resp.body)
    resp = await transcribe(alice, audio)
    assert_detail(resp, 429, "20")
    assert 1 <= int(resp.headers["Retry-After"]) <= 60
    assert len(fake.audio_requests) == 20
    assert (await transcribe(bob, audio)).code == 200  # per user


# -- backend failures -----------------------------------------------------------------------------

async def test_backend_500_is_502(alice, fake):  # noqa: F811
    fake.transcripts.append(fo.Transcript(status=500, error_body={"error": {"message": "the GPU caught fire"}}))
    assert_detail(await transcribe(alice, wav_bytes(0.2)), 502, "HTTP 500", "the GPU caught fire")
    assert_detail(await transcribe(alice, wav_bytes(0.2)), 502)  # nothing scripted: the fake answers 500 too


@pytest.mark.parametrize("transcribe_table", [{"llm": "fake", "timeout_s": 0.5}])
async def test_a_slow_backend_is_502_not_a_hang(alice, parley, fake):  # noqa: F811
    fake.transcripts.append(fo.Transcript(text="too late", delay_s=30))
    t0 = time.monotonic()
    assert_detail(await transcribe(alice, wav_bytes(0.2)), 502, "in time")
    assert time.monotonic() - t0 < 5


@pytest.fixture
def down_config(tmp_path, refused_url):  # noqa: F811
    return Config(data_dir=tmp_path / "data", internal_key=INTERNAL_KEY, demo_delay_ms=0, extra={
        "llm": {"down": {"base_url": refused_url, "model": "m", "timeout_s": 2}},
        "transcribe": {"llm": "down"}})


@pytest.mark.parametrize("transcribe_table", [None])
async def test_an_unreachable_backend_is_502(parley, alice, down_config):
    parley.agents.configure(down_config.extra)
    assert_detail(await transcribe(alice, wav_bytes(0.2)), 502, "cannot be reached")


# -- configuration (no server) ------------------------------------------------------------------------

async def test_an_unknown_transcribe_provider_fails_at_start(tmp_path, capsys):
    cfg = Config(data_dir=tmp_path / "data", extra={
        "llm": {"local": {"base_url": "http://127.0.0.1:9/v1", "model": "m"}},
        "transcribe": {"llm": "nope"},
    })
    assert await serve(cfg) == 2
    err = capsys.readouterr().err
    assert "config: [transcribe]: llm 'nope' names no configured provider" in err and "configured: local" in err
    assert not (tmp_path / "data").exists()


def test_configure_checks_the_transcribe_table():
    registry = AgentRegistry()
    local = {"local": {"base_url": "http://127.0.0.1:9/v1", "model": "m"}}
    for table, problem in [
        ("local", 'transcribe: expected a table, got "local"'),
        ({"llm": "local", "modle": "x"}, "[transcribe] modle: unknown key; did you mean model?"),
        ({}, "[transcribe] llm: missing (expected a non-empty string)"),
        ({"llm": "local", "model": ""}, '[transcribe] model: expected a non-empty string, got ""'),
        ({"llm": "local", "timeout_s": 0}, "[transcribe] timeout_s: expected a number of seconds, above 0, got 0"),
        ({"llm": "local", "language": 5}, '[transcribe] language: expected a language code such as "en", got 5'),
    ]:
        assert check_file({"llm": local, "transcribe": table})[1] == [problem]
    with pytest.raises(ValueError, match=r"configured: none"):
        registry.configure({"transcribe": {"llm": "local"}})
    assert registry.providers == {} and registry.transcription is None  # nothing half-configured
    registry.configure({"llm": local, "transcribe": {"llm": "local"}})
    assert registry.transcription is not None
    assert (registry.transcription.llm, registry.transcription.model, registry.transcription.timeout_s) == ("local", "whisper-1", 120.0)


async def test_concurrent_requests_do_not_block_each_other(alice, fake):  # noqa: F811
    fake.transcripts.extend([fo.Transcript(text="slow", delay_s=0.5), fo.Transcript(text="fast")])
    slow = asyncio.ensure_future(transcribe(alice, wav_bytes(0.1)))
    await asyncio.sleep(0.1)
    fast = await transcribe(alice, wav_bytes(0.1))
    assert body(fast)["transcript"] == "fast" and not slow.done()
    assert body(await slow)["transcript"] == "slow"
