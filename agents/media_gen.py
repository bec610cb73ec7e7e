"""Offline stand-ins for media generation: a short melody (WAV) and a short animation (APNG)
for a prompt, the same bytes for the same prompt (the default `generate_music` and `generate_video`).

Standard library only.  Everything (the key, the scale, the notes and their lengths; the
backdrop, the camera's path, the moving light) comes from the SHA-256 of the prompt.

Speed: nothing loops over every sample or pixel in Python.  A note is one short block
holding a whole number of its cycles, computed once and repeated (`bytes * n`); its
envelope scales 2 ms slices with `bytes.translate` tables (8-bit samples make a gain a
256-byte table).  A video frame is a window cut out of one procedural picture
(agents/images.py) plus a translucent disc, each row encoded as images.py encodes PNGs.
"""
from __future__ import annotations

import hashlib
import io
import math
import random
import struct
import wave
from functools import cache

from agents.images import PNG_SIGNATURE, blend_disc, encode_png, png_chunk, render_rows

# -- music -------------------------------------------------------------------------

SAMPLE_RATE = 16_000
BEAT = SAMPLE_RATE // 4  # 0.25 s
BEATS = 20
MUSIC_SECONDS = BEATS * BEAT / SAMPLE_RATE  # 5.0
_SCALES = ((0, 2, 4, 7, 9), (0, 3, 5, 7, 10), (0, 2, 4, 5, 7, 9, 11))  # major / minor pentatonic, major
_BLOCK_S = 0.05  # a note's repeated block: about this long, so its pitch is within ~1 cent
_SLICE = 32  # samples (2 ms) sharing one envelope gain
_LEVELS = 64  # envelope gain steps
_AMPLITUDE = 100  # peak distance from the 8-bit midpoint (128), leaving headroom
_ATTACK = SAMPLE_RATE * 10 // 1000
_RELEASE = SAMPLE_RATE * 40 // 1000


def render_wav(prompt: str) -> bytes:
    """A MUSIC_SECONDS mono WAV (16 kHz, 8-bit PCM) of a melody for `prompt`: the same bytes for the same prompt."""
    rng = _rng(prompt)
    pcm = b"".join(_note(_frequency(midi), beats * BEAT) for midi, beats in _melody(rng))
    assert len(pcm) == BEATS * BEAT
    out = io.BytesIO()
    with wave.open(out, "wb") as wav:
        wav.setnchannels(1)
        wav.setsampwidth(1)
        wav.setframerate(SAMPLE_RATE)
        wav.writeframes(pcm)
    return out.getvalue()


def _rng(prompt: str) -> random.Random:
    # surrogatepass: a lone surrogate (JSON allows "\ud800") still seeds, it does not raise.
    return random.Random(int.from_bytes(hashlib.sha256(prompt.encode("utf-8", "surrogatepass")).digest(), "big"))


def _melody(rng: random.Random) -> list[tuple[int, int]]:
    """(MIDI note, beats) pairs filling BEATS beats: a walk over two octaves of a scale that
    moves mostly by step and comes home to the root on a long last note."""
    scale = rng.choice(_SCALES)
    root = rng.randrange(57, 67)  # A3 .. F#4
    degrees = [root + 12 * octave + step for octave in (0, 1) for step in scale]
    at = rng.randrange(len(scale))
    notes: list[tuple[int, int]] = []
    left = BEATS
    while left > 2:
        beats = min(rng.choice((1, 1, 1, 2, 2, 3)), left - 2)
        notes.append((degrees[at], beats))
        left -= beats
        at = min(max(at + rng.choice((-2, -1, -1, 1, 1, 2, 0)), 0), len(degrees) - 1)
    notes.append((root + 12 * (at >= len(scale)), left))
    return notes


def _frequency(midi: int) -> float:
    return 440.0 * 2.0 ** ((midi - 69) / 12)


@cache
def _block(frequency: float) -> bytes:
    """A whole number of cycles of the note's tone (a fundamental with two soft overtones), 8-bit unsigned."""
    cycles = max(1, round(frequency * _BLOCK_S))
    n = round(cycles * SAMPLE_RATE / frequency)
    step = 2 * math.pi * cycles / n
    peak = _AMPLITUDE / 1.42  # |sin x + 0.3 sin 2x + 0.12 sin 3x| < 1.42
    sin = math.sin
    return bytes(128 + round(peak * (sin(step * i) + 0.3 * sin(2 * step * i) + 0.12 * sin(3 * step * i)))
                 for i in range(n))


def _note(frequency: float, length: int) -> bytes:
    """`length` samples of the tone under an envelope: a 10 ms attack from silence, a decay
    towards a sustain level and a 40 ms release back to silence, so notes join without clicks."""
    block = _block(frequency)
    tone = (block * (length // len(block) + 1))[:length]
    out = []
    for start in range(0, length, _SLICE):
        end = min(start + _SLICE, length)
        gain = min(start / _ATTACK, 1.0) * (0.45 + 0.55 * math.exp(-start / (0.35 * SAMPLE_RATE)))
        gain *= min(max((length - end) / _RELEASE, 0.0), 1.0)
        out.append(tone[start:end].translate(_gain_table(round(gain * _LEVELS))))
    return b"".join(out)


@cache
def _gain_table(level: int) -> bytes:
    """A `bytes.translate` table scaling 8-bit unsigned samples about their midpoint by level/_LEVELS."""
    return bytes(128 + round((v - 128) * level / _LEVELS) for v in range(256))


# -- video -------------------------------------------------------------------------

VIDEO_WIDTH, VIDEO_HEIGHT = 160, 120
VIDEO_FRAMES = 12
VIDEO_FPS = 8
_BACKDROP = 192  # the square picture the camera pans over
_PAN = 14  # the radius of the camera's circle, in pixels
# 5 bits a channel: smooth gradients keep runs of equal rows and bytes, and the frames pack to
# about half the bytes (measured: 40-85 KB instead of 90-175 KB) with barely visible banding.
_QUANTISE = bytes(v & 0xF8 for v in range(256))

Color = tuple[int, int, int]


def render_apng(prompt: str) -> bytes:
    """A looping VIDEO_WIDTH x VIDEO_HEIGHT animated PNG of VIDEO_FRAMES frames at VIDEO_FPS for
    `prompt`: the camera circles over a procedural picture while a soft light crosses it.
    The same bytes for the same prompt; a viewer without APNG support shows the first frame."""
    rng = _rng(prompt)
    backdrop = [row.translate(_QUANTISE) for row in render_rows(prompt, _BACKDROP)]
    spin = rng.choice((1, -1))
    phase = rng.random() * 2 * math.pi
    light = _light_colour(rng)
    out = [PNG_SIGNATURE, png_chunk(b"IHDR", struct.pack(">IIBBBBB", VIDEO_WIDTH, VIDEO_HEIGHT, 8, 2, 0, 0, 0)),
           png_chunk(b"acTL", struct.pack(">II", VIDEO_FRAMES, 0))]  # 0 plays: loop for ever
    seq = 0
    for k in range(VIDEO_FRAMES):
        angle = phase + spin * 2 * math.pi * k / VIDEO_FRAMES
        frame = _frame(backdrop, angle, k, light)
        data = _idat(encode_png(frame, VIDEO_WIDTH, VIDEO_HEIGHT))
        # width, height, x, y, delay numerator/denominator (1/fps s), dispose none, blend source
        control = struct.pack(">IIIIIHHBB", seq, VIDEO_WIDTH, VIDEO_HEIGHT, 0, 0, 1, VIDEO_FPS, 0, 0)
        out.append(png_chunk(b"fcTL", control))
        seq += 1
        if k == 0:
            out.append(png_chunk(b"IDAT", data))  # the first frame is the default image too
        else:
            out.append(png_chunk(b"fdAT", struct.pack(">I", seq) + data))
            seq += 1
    out.append(png_chunk(b"IEND", b""))
    return b"".join(out)


def _light_colour(rng: random.Random) -> Color:
    return rng.choice(((255, 244, 214), (214, 236, 255), (255, 214, 236), (226, 255, 214)))


def _frame(backdrop: list[bytes], angle: float, k: int, light: Color) -> list[bytes]:
    """The window of the backdrop the camera sees at `angle`, with the light at its place for frame k."""
    cx = (_BACKDROP - VIDEO_WIDTH) / 2 + _PAN * math.cos(angle)
    cy = (_BACKDROP - VIDEO_HEIGHT) / 2 + _PAN * math.sin(angle)
    x0, y0 = round(cx), round(cy)
    rows = [row[3 * x0: 3 * (x0 + VIDEO_WIDTH)] for row in backdrop[y0: y0 + VIDEO_HEIGHT]]
    # The light crosses the frame once per loop, left to right, on a gentle arc.
    t = k / VIDEO_FRAMES
    lx = -20 + (VIDEO_WIDTH + 40) * t
    ly = VIDEO_HEIGHT * (0.55 - 0.25 * math.sin(math.pi * t))
    for ring in range(3):  # nested discs pile up their alpha towards the middle: a soft edge
        blend_disc(rows, VIDEO_WIDTH, VIDEO_HEIGHT, lx, ly, 22 - 3 * ring, light, 0.16)
    return rows


def _idat(png: bytes) -> bytes:
    """The compressed image data of a PNG that encode_png made (its IDAT chunks, joined)."""
    pos, data = len(PNG_SIGNATURE), []
    while pos < len(png):
        (length,) = struct.unpack(">I", png[pos: pos + 4])
        if png[pos + 4: pos + 8] == b"IDAT":
            data.append(png[pos + 8: pos + 8 + length])
        pos += 12 + length
    return b"".join(data)


