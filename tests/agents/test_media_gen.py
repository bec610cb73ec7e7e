"""`generate_music` and `generate_video` (SPEC section 10): the offline WAV and APNG, and the tools."""
from __future__ import annotations

import base64
import io
import struct
import wave
import zlib

import pytest

from agents import media_gen, upload_types
from agents.tools import BUILTIN_TOOLS, ToolEnv, ToolError, for_model

ENV = ToolEnv("alice", "task", "thread")
PROMPTS = ["a red fox", "the sea at night", "", " ", "ünïcödé 🦊", "lone \ud800 surrogate", "x" * 500]


def data_of(url: str, media_type: str) -> bytes:
    head = f"data:{media_type};base64,"
    assert url.startswith(head)
    return base64.b64decode(url[len(head):], validate=True)


# -- music -------------------------------------------------------------------------------


def read_wav(data):
    with wave.open(io.BytesIO(data), "rb") as wav:
        return wav.getparams(), wav.readframes(wav.getnframes())


def test_wav_header_and_duration():
    data = media_gen.render_wav("a red fox")
    assert data[:4] == b"RIFF" and data[8:16] == b"WAVEfmt "
    assert struct.unpack_from("<I", data, 4)[0] == len(data) - 8
    assert struct.unpack_from("<HHIIHH", data, 20) == (1, 1, 16_000, 16_000, 1, 8)  # PCM, mono, 16 kHz, 8-bit
    assert data[36:40] == b"data" and struct.unpack_from("<I", data, 40)[0] == 80_000 == len(data) - 44
    params, pcm = read_wav(data)
    assert (params.nchannels, params.sampwidth, params.framerate, params.nframes) == (1, 1, 16_000, 80_000)
    assert params.nframes / params.framerate == media_gen.MUSIC_SECONDS == 5.0
    info = upload_types.wav_info(data)  # what POST /transcribe would read
    assert info.duration_s == 5.0 and info.sample_rate == 16_000
    assert len(pcm) == 80_000


def test_wav_is_a_melody_not_silence_nor_clipped():
    _, pcm = read_wav(media_gen.render_wav("a red fox"))
    swing = [abs(v - 128) for v in pcm]
    assert max(swing) <= media_gen._AMPLITUDE + 1  # headroom: never clipped
    assert max(swing) > 50  # audible
    # Every note starts and ends in silence (no clicks where notes join), the piece too.
    assert pcm[0] == 128 and pcm[-1] == 128
    notes = media_gen._melody(media_gen._rng("a red fox"))
    assert sum(beats for _, beats in notes) == media_gen.BEATS and len(notes) >= 5
    assert len({midi for midi, _ in notes}) >= 3  # a tune, not one repeated note
    at = 0
    for _, beats in notes:
        assert pcm[at] == 128 and pcm[at + beats * media_gen.BEAT - 1] == 128
        at += beats * media_gen.BEAT


def test_wav_is_deterministic_per_prompt():
    data = media_gen.render_wav("a red fox")
    assert media_gen.render_wav("a red fox") == data
    assert media_gen.render_wav("a blue whale") != data


@pytest.mark.parametrize("prompt", PROMPTS)
def test_wav_of_any_prompt(prompt):
    params, _ = read_wav(media_gen.render_wav(prompt))
    assert params.nframes == 80_000


def test_block_pitch_is_within_a_few_cents():
    for midi in range(57, 91):
        f = media_gen._frequency(midi)
        block = media_gen._block(f)
        cycles = max(1, round(f * media_gen._BLOCK_S))
        played = cycles * media_gen.SAMPLE_RATE / len(block)
        assert abs(played / f - 1) < 0.003, midi  # about 5 cents


# -- video -------------------------------------------------------------------------------


def chunks_of(png: bytes) -> list[tuple[bytes, bytes]]:
    """The chunks of a PNG, checking its signature, every CRC and that nothing trails."""
    assert png[:8] == b"\x89PNG\r\n\x1a\n"
    pos, out = 8, []
    while pos < len(png):
        (length,) = struct.unpack(">I", png[pos:pos + 4])
        kind, data = png[pos + 4:pos + 8], png[pos + 8:pos + 8 + length]
        (crc,) = struct.unpack(">I", png[pos + 8 + length:pos + 12 + length])
        assert crc == zlib.crc32(kind + data), f"bad CRC on {kind!r}"
        out.append((kind, data))
        pos += 12 + length
    assert pos == len(png)
    return out


def frames_of(apng: bytes) -> list[bytes]:
    """The raw (filtered) scanlines of each frame, checking the APNG structure on the way."""
    chunks = chunks_of(apng)
    kinds = [k for k, _ in chunks]
    assert kinds[0] == b"IHDR" and kinds[1] == b"acTL" and kinds[-1] == b"IEND"
    width, height, depth, colour, *_ = struct.unpack(">IIBBBBB", chunks[0][1])
    assert (width, height, depth, colour) == (160, 120, 8, 2)
    frames, plays = struct.unpack(">II", chunks[1][1])
    assert (frames, plays) == (12, 0)
    assert kinds.count(b"fcTL") == 12 and kinds.count(b"IDAT") == 1 and kinds.count(b"fdAT") == 11
    assert kinds.index(b"fcTL") < kinds.index(b"IDAT")  # the first frame is the default image
    sequence, raw = [], []
    for kind, data in chunks:
        if kind == b"fcTL":
            seq, w, h, x, y, num, den, dispose, blend = struct.unpack(">IIIIIHHBB", data)
            assert (w, h, x, y, num, den, dispose, blend) == (160, 120, 0, 0, 1, 8, 0, 0)
            sequence.append(seq)
        elif kind == b"fdAT":
            sequence.append(struct.unpack(">I", data[:4])[0])
            raw.append(zlib.decompress(data[4:]))
        elif kind == b"IDAT":
            raw.append(zlib.decompress(data))
    assert sequence == list(range(23))  # fcTL and fdAT share one sequence, from 0, no gaps
    for r in raw:
        assert len(r) == height * (1 + 3 * width)
    return raw


def test_apng_structure():
    apng = media_gen.render_apng("a red fox")
    raw = frames_of(apng)
    assert len(set(raw)) == 12  # every frame differs: it moves
    assert 10_000 < len(apng) < 150_000, len(apng)


def test_apng_is_deterministic_per_prompt():
    apng = media_gen.render_apng("a red fox")
    assert media_gen.render_apng("a red fox") == apng
    assert media_gen.render_apng("a blue whale") != apng


@pytest.mark.parametrize("prompt", PROMPTS)
def test_apng_of_any_prompt(prompt):
    frames_of(media_gen.render_apng(prompt))


# -- the tools ---------------------------------------------------------------------------


async def test_music_tool_output():
    tool = BUILTIN_TOOLS["generate_music"]
    assert tool.meta == {"emits_file": True} and "offline stand-in" in tool.description
    output = await tool.run({"prompt": "  a calm morning "}, ENV)
    assert set(output) == {"url", "mediaType", "prompt", "durationS"}
    assert output["mediaType"] == "audio/wav" and output["prompt"] == "a calm morning" and output["durationS"] == 5.0
    assert data_of(output["url"], "audio/wav") == media_gen.render_wav("a calm morning")
    assert tool.file_of(output) == {"url": output["url"], "mediaType": "audio/wav"}
    assert len(str(for_model(output))) < 300


async def test_video_tool_output():
    tool = BUILTIN_TOOLS["generate_video"]
    assert tool.meta == {"emits_file": True} and "offline stand-in" in tool.description
    output = await tool.run({"prompt": "waves"}, ENV)
    assert set(output) == {"url", "mediaType", "prompt", "frames", "fps"}
    assert (output["mediaType"], output["prompt"], output["frames"], output["fps"]) == ("image/apng", "waves", 12, 8)
    assert data_of(output["url"], "image/apng") == media_gen.render_apng("waves")
    assert tool.file_of(output) == {"url": output["url"], "mediaType": "image/apng"}


@pytest.mark.parametrize("name", ["generate_music", "generate_video"])
@pytest.mark.parametrize("args, message", [
    ({}, "non-empty string"),
    ({"prompt": "   "}, "non-empty string"),
    ({"prompt": 42}, "non-empty string"),
    ({"prompt": "x" * 501}, "longer than 500"),
])
async def test_tool_bad_input(name, args, message):
    assert BUILTIN_TOOLS[name].input_schema["required"] == ["prompt"]
    with pytest.raises(ToolError, match=message):
        await BUILTIN_TOOLS[name].run(args, ENV)
