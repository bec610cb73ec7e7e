"""`generate_image` (SPEC section 7): the offline procedural PNG, the tool, its `file` event,
the demo agent's `/image PROMPT` and "draw …", the react agent, replay, and /mcp."""
from __future__ import annotations

import base64
import json
import struct
import zlib

import pytest

from agents import demo, images
from agents.tools import BUILTIN_TOOLS, ToolEnv, ToolError, for_model
from tests.agents import fake_openai as fo
from tests.agents.test_react import fake, refused_url  # noqa: F401  (fixtures)
from tests.agents.test_replay import replay_and_compare
from tests.handlers.mcp.test_server import internal, mcp_session
from tests.helpers import ENDED
from tests.protocol import test_ai_sdk as sdk

ENV = ToolEnv("alice", "task", "thread")
DATA_URL = "data:image/png;base64,"


def decode_png(png: bytes) -> tuple[int, int, list[bytes]]:
    """(width, height, rows of RGB bytes) of an 8-bit RGB PNG, checking every chunk's CRC."""
    assert png[:8] == b"\x89PNG\r\n\x1a\n"
    pos, chunks = 8, []
    while pos < len(png):
        (length,) = struct.unpack(">I", png[pos:pos + 4])
        kind, data = png[pos + 4:pos + 8], png[pos + 8:pos + 8 + length]
        (crc,) = struct.unpack(">I", png[pos + 8 + length:pos + 12 + length])
        assert crc == zlib.crc32(kind + data), f"bad CRC on {kind!r}"
        chunks.append((kind, data))
        pos += 12 + length
    assert pos == len(png)
    assert chunks[0][0] == b"IHDR" and chunks[-1] == (b"IEND", b"")
    width, height, depth, colour, compression, filtering, interlace = struct.unpack(">IIBBBBB", chunks[0][1])
    assert (depth, colour, compression, filtering, interlace) == (8, 2, 0, 0, 0)
    raw = zlib.decompress(b"".join(d for k, d in chunks if k == b"IDAT"))
    stride = 3 * width
    assert len(raw) == height * (1 + stride)
    rows, prev = [], bytes(stride)
    for y in range(height):
        line = raw[y * (1 + stride):(y + 1) * (1 + stride)]
        assert line[0] == 2, "every row is Up-filtered"
        row = bytes((v + p) & 0xFF for v, p in zip(line[1:], prev, strict=True))
        rows.append(row)
        prev = row
    return width, height, rows


def png_of(url: str) -> bytes:
    assert url.startswith(DATA_URL)
    return base64.b64decode(url[len(DATA_URL):], validate=True)


def chunks_of(frames):
    return [c for f in frames if f.id is not None and f.event is None for c in f.chunks]


async def stream_chunks(client, task_id):
    code, frames = await client.stream(task_id)
    assert code == 200 and frames[-1].event == "done", frames[-1:]
    return chunks_of(frames)


async def assistant_parts(client, thread_id):
    resp = await client.request("GET", f"/messages/{thread_id}")
    assert resp.code == 200, resp.body
    messages = json.loads(resp.body)["messages"]
    assert [m["role"] for m in messages] == ["user", "assistant"]
    return messages[1]["parts"]


def streamed_text(chunks):
    return "".join(c["delta"] for c in chunks if c["type"] == "text-delta")


# -- the picture -----------------------------------------------------------------


def test_png_is_valid_deterministic_and_varied():
    png = images.render_png("a red fox")
    width, height, rows = decode_png(png)
    assert (width, height) == (256, 256)
    assert 2_000 < len(png) < 60_000, len(png)
    assert images.render_png("a red fox") == png  # the same prompt, the same bytes
    assert images.render_png("a blue whale") != png
    # A picture, not a flat fill: many colours, changing across and down.
    pixels = {row[i:i + 3] for row in rows[::16] for i in range(0, len(row), 48)}
    assert len(pixels) > 50
    assert rows[0] != rows[-1] and rows[128][:3] != rows[128][-3:]


@pytest.mark.parametrize("size", [16, 17, 100])
def test_png_sizes(size):
    width, height, rows = decode_png(images.render_png("sizes", size))
    assert (width, height, len(rows[0])) == (size, size, 3 * size)


@pytest.mark.parametrize("size", [0, 15, 1025])
def test_png_size_out_of_range(size):
    with pytest.raises(ValueError):
        images.render_png("x", size)


def test_png_of_any_prompt():
    for prompt in ["", " ", "ünïcödé 🦊", "lone \ud800 surrogate", "x" * 500, "white snow", "black night"]:
        decode_png(images.render_png(prompt, 32))


# -- the tool --------------------------------------------------------------------


async def test_tool_output():
    tool = BUILTIN_TOOLS["generate_image"]
    assert tool.input_schema["required"] == ["prompt"]
    output = await tool.run({"prompt": "  a red fox "}, ENV)
    assert output["mediaType"] == "image/png" and output["prompt"] == "a red fox"
    assert (output["width"], output["height"]) == (256, 256)
    assert png_of(output["url"]) == images.render_png("a red fox")
    assert tool.file_of(output) == {"url": output["url"], "mediaType": "image/png"}
    # What a model is told: everything but the pixels.
    told = for_model(output)
    assert told["prompt"] == "a red fox" and told["url"].startswith("data:image/png;base64,...")
    assert len(json.dumps(told)) < 300


@pytest.mark.parametrize("args, message", [
    ({}, "non-empty string"),
    ({"prompt": ""}, "non-empty string"),
    ({"prompt": "   "}, "non-empty string"),
    ({"prompt": 42}, "non-empty string"),
    ({"prompt": "x" * 501}, "longer than 500"),
])
async def test_tool_bad_input(args, message):
    with pytest.raises(ToolError, match=message):
        await BUILTIN_TOOLS["generate_image"].run(args, ENV)


def test_only_marked_tools_emit_files():
    output = {"url": DATA_URL + "AAAA", "mediaType": "image/png"}
    assert BUILTIN_TOOLS["calculator"].file_of(output) is None
    image = BUILTIN_TOOLS["generate_image"]
    assert image.file_of({"url": "javascript:alert(1)", "mediaType": "image/png"}) is None
    assert image.file_of({"url": DATA_URL}) is None
    assert image.file_of(["not", "a", "dict"]) is None


# -- the demo agent ------------------------------------------------------------------


async def test_image_command_streams_a_tool_card_and_a_file(alice):
    task_id = await alice.start_ok("img", "/image a red fox")
    chunks = await stream_chunks(alice, task_id)
    types = [c["type"] for c in chunks]
    called = next(c for c in chunks if c["type"] == "tool-input-available")
    assert called["toolName"] == "generate_image" and called["input"] == {"prompt": "a red fox"}
    result = next(c for c in chunks if c["type"] == "tool-output-available")
    assert result["toolCallId"] == called["toolCallId"]
    output = result["output"]
    (file,) = [c for c in chunks if c["type"] == "file"]
    assert file == {"type": "file", "url": output["url"], "mediaType": "image/png"}
    decode_png(png_of(file["url"]))
    # The file right after the tool's result, then the answer.
    assert types.index("tool-output-available") + 1 == types.index("file") < types.index("text-start")
    assert streamed_text(chunks) == "Here is an image of a red fox."
    assert (await alice.task(task_id))["status"] == "completed"

    parts = await assistant_parts(alice, "img")
    assert [p["type"] for p in parts] == ["step-start", "tool-generate_image", "file", "step-start", "text"]
    assert parts[1]["state"] == "output-available" and parts[1]["output"] == output
    assert parts[2] == {"type": "file", "url": output["url"], "mediaType": "image/png"}
    assert parts[4]["text"] == "Here is an image of a red fox."


@pytest.mark.parametrize("text, prompt", [
    ("draw a cat", "a cat"),
    ("Draw me a cat.", "a cat"),
    ("please paint a sunset over the sea", "a sunset over the sea"),
    ("can you sketch a lighthouse?", "a lighthouse"),
    ("generate an image of a red fox", "a red fox"),
    ("Create a picture of two moons!", "two moons"),
])
async def test_natural_phrasings_draw(alice, text, prompt):
    task_id = await alice.start_ok("draw", text)
    chunks = await stream_chunks(alice, task_id)
    called = next(c for c in chunks if c["type"] == "tool-input-available")
    assert called["toolName"] == "generate_image" and called["input"] == {"prompt": prompt}
    assert [c["mediaType"] for c in chunks if c["type"] == "file"] == ["image/png"]
    assert streamed_text(chunks) == f"Here is an image of {prompt}."


@pytest.mark.parametrize("text", ["I like to draw", "what time is it?", "drawing is fun"])
async def test_other_text_does_not_draw(alice, text):
    chunks = await stream_chunks(alice, await alice.start_ok("nodraw", text))
    assert not any(c.get("toolName") == "generate_image" for c in chunks)
    assert not any(c["type"] == "file" for c in chunks)


@pytest.mark.parametrize("text", ["/image", "/image   "])
async def test_image_without_a_prompt_answers_with_usage(alice, text):
    task_id = await alice.start_ok("noprompt", text)
    chunks = await stream_chunks(alice, task_id)
    assert not any(c["type"].startswith("tool-") or c["type"] == "file" for c in chunks)
    assert streamed_text(chunks) == demo.IMAGE_USAGE
    assert (await alice.task(task_id))["status"] == "completed"


async def test_too_long_prompt_is_a_tool_error_not_a_crash(alice):
    task_id = await alice.start_ok("long", "/image " + "x" * 501)
    chunks = await stream_chunks(alice, task_id)
    error = next(c for c in chunks if c["type"] == "tool-output-error")
    assert "longer than 500" in error["errorText"]
    assert not any(c["type"] == "file" for c in chunks)
    assert streamed_text(chunks) == "The generate_image tool failed."


async def test_tool_command_and_the_demo_agents_tools(alice):
    chunks = await stream_chunks(alice, await alice.start_ok("tool", "/tool generate_image a cat"))
    assert next(c for c in chunks if c["type"] == "tool-input-available")["input"] == {"prompt": "a cat"}
    assert any(c["type"] == "file" for c in chunks)
    agents = json.loads((await alice.request("GET", "/api/agents")).body)["agents"]
    assert "generate_image" in next(a for a in agents if a["id"] == "demo")["tools"]


@pytest.mark.parametrize("pkg", sdk.PACKAGES)
async def test_the_ai_sdk_accepts_the_file_chunk(alice, pkg):
    """The real `ai` package (strict chunk schema) assembles the run as /messages stores it."""
    sdk._node()
    task_id = await alice.start_ok("img-sdk", "/image a red fox")
    _, chunks = await sdk.read_all(alice, task_id)
    result = await sdk.assemble(pkg, chunks)
    sdk.check_finished(chunks, result)
    message = sdk.check_common(chunks, result, await sdk.stored_assistant(alice, "img-sdk"))
    (file,) = [p for p in message["parts"] if p["type"] == "file"]
    assert file["mediaType"] == "image/png" and file["url"].startswith(DATA_URL)


async def test_image_job_replays_with_its_file_without_drawing(alice, parley, monkeypatch):
    resp = await alice.request("POST", "/api/runs", {"workflow_id": "w", "input": {"agent_id": "demo", "message": "/image a red fox"}})
    job_id = json.loads(resp.body)["job_id"]
    assert (await alice.wait_job(job_id, *ENDED))["status"] == "completed"

    def no_drawing(*args):
        raise AssertionError("a replay must not draw")

    monkeypatch.setattr("agents.tools.render_png", no_drawing)
    original, again = await replay_and_compare(alice, job_id)  # the same event sequence, file included
    files = [e["data"] for e in again["events"] if e["type"] == "file"]
    assert len(files) == 1 and files == [e["data"] for e in original["events"] if e["type"] == "file"]
    assert files[0]["mediaType"] == "image/png"


# -- the react agent ------------------------------------------------------------------


@pytest.fixture
def painter(io_loop, parley, fake):  # noqa: F811
    """A react agent with generate_image, talking to the scripted model."""
    parley.agents.configure({
        "llm": {"fake": {"base_url": fake.base_url, "model": "m", "timeout_s": 10}},
        "agents": [{"id": "painter", "type": "react", "llm": "fake", "tools": ["generate_image"]}],
    })
    yield "painter"

    async def close_providers():
        for provider in parley.agents.providers.values():
            await provider.aclose()

    io_loop.run_sync(close_providers)


async def test_react_agent_draws_and_the_model_gets_no_pixels(alice, fake, painter):  # noqa: F811
    fake.script(
        fo.tool_calls(("call_img", "generate_image", ['{"prompt": ', '"a red fox"}'])),
        fo.text("Here is your fox."),
    )
    task_id = await alice.start_ok("react-img", "draw a fox", agentId=painter)
    chunks = await stream_chunks(alice, task_id)
    types = [c["type"] for c in chunks]
    output = next(c for c in chunks if c["type"] == "tool-output-available")["output"]
    (file,) = [c for c in chunks if c["type"] == "file"]
    assert file["url"] == output["url"] and file["mediaType"] == "image/png"
    assert types.index("tool-output-available") + 1 == types.index("file")
    assert streamed_text(chunks) == "Here is your fox."
    tool_message = next(m for m in fake.requests[1]["messages"] if m["role"] == "tool")
    told = json.loads(tool_message["content"])
    assert told["prompt"] == "a red fox" and "base64," + "iVBOR" not in tool_message["content"]
    assert len(tool_message["content"]) < 300
    # A later turn sends the stored tool part back, again without the pixels.
    fake.script(fo.text("You are welcome."))
    await stream_chunks(alice, await alice.start_ok("react-img", "thanks", agentId=painter))
    history = fake.requests[2]["messages"]
    assert max(len(m.get("content") or "") for m in history) < 300
    parts = await alice.request("GET", "/messages/react-img")
    first = json.loads(parts.body)["messages"][1]["parts"]
    assert {"type": "file", "url": output["url"], "mediaType": "image/png"} in first


# -- MCP ------------------------------------------------------------------------------


async def test_mcp_lists_and_calls_generate_image(app, http_server_client):
    async with mcp_session(http_server_client.get_url("/mcp"), internal()) as session:
        await session.initialize()
        tools = {t.name: t for t in (await session.list_tools()).tools}
        assert tools["generate_image"].input_schema["required"] == ["prompt"]
        result = await session.call_tool("generate_image", {"prompt": "a red fox"})
        assert not result.is_error
        # the picture is an MCP image item (the SDK parsed it as ImageContent), not base64 inside the text
        text, image = result.content
        assert image.type == "image" and image.mime_type == "image/png"
        assert base64.b64decode(image.data) == images.render_png("a red fox")
        assert result.structured_content["mediaType"] == "image/png" and len(text.text) < 400
        assert result.structured_content["url"].startswith("data:image/png;base64,...")
        music = await session.call_tool("generate_music", {"prompt": "a calm sea"})
        assert [c.type for c in music.content] == ["text", "audio"] and music.content[1].mime_type == "audio/wav"
        assert base64.b64decode(music.content[1].data)[:4] == b"RIFF"
        failed = await session.call_tool("generate_image", {"prompt": ""})
        assert failed.is_error and "non-empty" in failed.content[0].text
