"""Offline procedural images: a deterministic PNG for a prompt (the default `generate_image`).

Standard library only (zlib, struct).  The picture is a smooth three-colour
gradient, a few coloured glows (soft circles) and a couple of translucent
discs; everything about it (colours, directions, positions, sizes) comes
from the SHA-256 of the prompt, and colour words in the prompt ("a red fox")
steer the palette.

Speed: nothing loops over pixels in Python.  Rows are bytes; sums are done
on whole rows at once as big integers whose 16-bit lanes hold one channel
value each (so carries never cross channels and a final step clamps each
lane to 255), and scaling by a factor is `bytes.translate` with a cached
table.  A 256x256 image renders in a few milliseconds.
"""
from __future__ import annotations

import hashlib
import math
import random
import re
import struct
import zlib
from functools import cache, lru_cache

MIN_SIZE = 16
MAX_SIZE = 1024
PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"
_LEVELS = 64  # the steps of a glow's vertical falloff (more look the same)
_ZLIB_LEVEL = 6  # level 9 saves ~5% of the bytes but takes ~8 times as long on these rows

Color = tuple[int, int, int]

# Colour words that steer the palette: "a red fox" comes out reddish.
_NAMED: dict[str, Color] = {
    "red": (214, 48, 49), "crimson": (190, 24, 60), "orange": (240, 130, 40), "gold": (235, 190, 60),
    "golden": (235, 190, 60), "yellow": (245, 215, 70), "green": (60, 170, 90), "forest": (34, 110, 60),
    "teal": (30, 150, 150), "cyan": (60, 200, 220), "blue": (50, 100, 220), "sky": (120, 180, 240),
    "ocean": (20, 90, 160), "sea": (30, 110, 170), "navy": (25, 40, 110), "purple": (130, 60, 180),
    "violet": (150, 90, 210), "pink": (240, 130, 180), "magenta": (210, 50, 160), "brown": (130, 80, 45),
    "fox": (210, 100, 40), "sunset": (245, 120, 70), "night": (20, 24, 60), "snow": (235, 240, 250),
    "white": (240, 240, 240), "grey": (130, 130, 135), "gray": (130, 130, 135), "black": (20, 20, 24),
    "fire": (240, 90, 30), "grass": (90, 170, 60), "sand": (220, 195, 140), "desert": (215, 170, 110),
}
_WORD = re.compile(r"[a-z]+")


def render_png(prompt: str, size: int = 256) -> bytes:
    """A `size` x `size` RGB PNG for `prompt`: the same bytes for the same prompt and size.

    Raises ValueError when `size` is outside MIN_SIZE..MAX_SIZE.
    """
    if not MIN_SIZE <= size <= MAX_SIZE:
        raise ValueError(f"size must be {MIN_SIZE} to {MAX_SIZE}, not {size}")
    return encode_png(render_rows(prompt, size), size, size)


def render_rows(prompt: str, size: int) -> list[bytes]:
    """The picture as `size` rows of packed RGB bytes (3 * size bytes each)."""
    # surrogatepass: a lone surrogate (JSON allows "\ud800") still seeds, it does not raise.
    rng = random.Random(int.from_bytes(hashlib.sha256(prompt.encode("utf-8", "surrogatepass")).digest(), "big"))
    palette = _palette(prompt, rng)
    rows = _gradient(size, palette[:3], rng)
    _discs(rows, size, palette, rng)
    return _glows(rows, size, palette, rng)


def encode_png(rows: list[bytes], width: int, height: int) -> bytes:
    """An 8-bit RGB PNG of `rows` (each 3 * width bytes), every row Up-filtered.

    The Up filter (each byte minus the byte above, mod 256) turns smooth
    vertical change into runs of equal small values, which zlib packs well
    (on these pictures better than Sub or Average: measured).
    """
    n = 3 * width
    assert len(rows) == height and all(len(r) == n for r in rows)
    bias = int.from_bytes(b"\x01\x00" * n, "big")  # +256 in each lane: a lane never borrows from its neighbour
    prev = _lanes(bytes(n))
    raw = bytearray()
    for row in rows:
        cur = _lanes(row)
        raw += b"\x02" + _bytes(cur + bias - prev, n)
        prev = cur
    header = struct.pack(">IIBBBBB", width, height, 8, 2, 0, 0, 0)
    idat = zlib.compress(bytes(raw), _ZLIB_LEVEL)
    return PNG_SIGNATURE + png_chunk(b"IHDR", header) + png_chunk(b"IDAT", idat) + png_chunk(b"IEND", b"")


# -- palette and layers ------------------------------------------------------


def _palette(prompt: str, rng: random.Random) -> list[Color]:
    """Five colours: named colours of the prompt first, then seeded ones of related hues."""
    named = [_NAMED[w] for w in _WORD.findall(prompt.lower()) if w in _NAMED]
    hue = rng.random()
    colours: list[Color] = []
    for i in range(5):
        if i < len(named):
            colours.append(named[i])
            continue
        h = (hue + rng.choice((0.0, 0.08, -0.08, 0.33, 0.5, -0.33)) + (rng.random() - 0.5) * 0.1) % 1.0
        s = 0.45 + rng.random() * 0.45
        v = 0.35 + rng.random() * 0.6
        colours.append(_hsv(h, s, v))
    # A darker second colour gives the gradient depth, whatever the colours are.
    colours[1] = _shade(colours[1], 0.35 + rng.random() * 0.25)
    return colours


def _hsv(h: float, s: float, v: float) -> Color:
    i = int(h * 6) % 6
    f = h * 6 - int(h * 6)
    p, q, t = v * (1 - s), v * (1 - s * f), v * (1 - s * (1 - f))
    r, g, b = ((v, t, p), (q, v, p), (p, v, t), (p, q, v), (t, p, v), (v, p, q))[i]
    return (round(r * 255), round(g * 255), round(b * 255))


def _shade(c: Color, k: float) -> Color:
    return (round(c[0] * k), round(c[1] * k), round(c[2] * k))


def _gradient(size: int, colours: list[Color], rng: random.Random) -> list[bytes]:
    """A planar gradient: colour 0 at one corner, blending towards colour 1 across and colour 2 down.

    Each pixel is P0 + a*u*(P1-P0) + b*v*(P2-P0) with a + b = 1 (a convex mix, so
    always in range); it is a row term plus a column term, added row by row.
    """
    p0, p1, p2 = colours
    a = 0.35 + rng.random() * 0.3
    b = 1.0 - a
    flip_x, flip_y = rng.random() < 0.5, rng.random() < 0.5
    span = max(size - 1, 1)
    base = [float(c) for c in p0]
    across: list[list[int]] = []  # per channel: the non-negative column term at each x
    down: list[list[int]] = []  # per channel: the non-negative row term at each y
    for ch in range(3):
        for weight, far, flip, out in ((a, p1, flip_x, across), (b, p2, flip_y, down)):
            d = weight * (far[ch] - p0[ch])
            if d < 0:  # write d*t as |d|*(1-t) - |d| so that every term is non-negative
                base[ch] += d
                flip, d = not flip, -d
            out.append([math.floor(d * ((span - i) if flip else i) / span) for i in range(size)])
    column = bytes(v for x in range(size) for v in (across[0][x], across[1][x], across[2][x]))
    column_int = int.from_bytes(column, "big")
    # Rounding every term down keeps each sum within 0..255 (base is the darkest corner, >= 0).
    base_int = [max(math.floor(c), 0) for c in base]
    rows = []
    for y in range(size):
        row_term = bytes((base_int[0] + down[0][y], base_int[1] + down[1][y], base_int[2] + down[2][y]))
        # Byte sums stay <= 255 (the gradient is a convex mix), so one big-integer add does the row.
        rows.append((column_int + int.from_bytes(row_term * size, "big")).to_bytes(3 * size, "big"))
    return rows


def _discs(rows: list[bytes], size: int, palette: list[Color], rng: random.Random) -> None:
    """Two translucent discs with feathered edges, blended over `rows` in place."""
    for _ in range(2):
        colour = palette[rng.randrange(2, 5)]
        cx, cy = rng.random() * size, rng.random() * size
        radius = size * (0.08 + rng.random() * 0.16)
        alpha = 0.18 + rng.random() * 0.22
        feather = max(size / 128, 1.0)
        # Nested discs, each a little smaller, pile up their alpha towards the middle: a soft edge.
        for k in range(3):
            blend_disc(rows, size, size, cx, cy, radius - k * feather, colour, alpha / 3 * (1 + k * 0.5))


def blend_disc(rows: list[bytes], width: int, height: int, cx: float, cy: float, r: float,
               colour: Color, alpha: float) -> None:
    """Blend a disc of `colour` at `alpha` over packed RGB `rows` in place (clipped to the picture)."""
    keep = _scale_table(round((1 - alpha) * 256))
    add = bytes(math.floor(c * alpha) for c in colour)
    for y in range(max(0, math.ceil(cy - r)), min(height, math.floor(cy + r) + 1)):
        half = math.sqrt(max(r * r - (y + 0.5 - cy) ** 2, 0.0))
        x0, x1 = max(0, round(cx - half)), min(width, round(cx + half))
        if x1 <= x0:
            continue
        row = rows[y]
        segment = row[3 * x0: 3 * x1].translate(keep)
        # v*(1-a) + c*a <= 255 in every byte, so the add never carries into a neighbour.
        blended = int.from_bytes(segment, "big") + int.from_bytes(add * (x1 - x0), "big")
        rows[y] = row[: 3 * x0] + blended.to_bytes(len(segment), "big") + row[3 * x1:]


def _glows(rows: list[bytes], size: int, palette: list[Color], rng: random.Random) -> list[bytes]:
    """Rows with three to five coloured Gaussian glows added (light adds up; each byte clamps at 255).

    A glow exp(-(dx²+dy²)/2s²) is exp(-dx²/2s²) * exp(-dy²/2s²): one precomputed
    row profile per glow, scaled per row by its vertical falloff.
    """
    n = 3 * size
    glows: list[tuple[bytes, list[int]]] = []
    for _ in range(rng.randrange(3, 6)):
        colour = palette[rng.randrange(0, 5)]
        cx, cy = rng.random() * size, rng.random() * size
        sigma = size * (0.06 + rng.random() * 0.14)
        strength = 0.35 + rng.random() * 0.45
        profile = bytes(
            round(c * strength * math.exp(-((x + 0.5 - cx) ** 2) / (2 * sigma * sigma)))
            for x in range(size) for c in colour
        )
        falloff = [round(_LEVELS * math.exp(-((y + 0.5 - cy) ** 2) / (2 * sigma * sigma))) for y in range(size)]
        glows.append((profile, falloff))
    out = []
    scaled: dict[tuple[int, int], int] = {}  # (glow, level) -> its row in lanes: many rows share a level
    for y, row in enumerate(rows):
        lit = [(i, falloff[y]) for i, (_, falloff) in enumerate(glows) if falloff[y]]
        if not lit:
            out.append(row)
            continue
        total = _lanes(row)
        for key in lit:
            lanes = scaled.get(key)
            if lanes is None:
                profile = glows[key[0]][0]
                lanes = scaled[key] = _lanes(profile.translate(_scale_table(key[1] * 256 // _LEVELS)))
            total += lanes
        out.append(_clamped_bytes(total, n))
    return out


# -- packed-row arithmetic ------------------------------------------------------


@cache
def _scale_table(k256: int) -> bytes:
    """A `bytes.translate` table that multiplies each byte by k256/256 (rounding down)."""
    return bytes(v * k256 >> 8 for v in range(256))


@lru_cache(maxsize=8)
def _masks(n: int) -> tuple[int, int]:
    """(0x00FF in each of n 16-bit lanes, 0x0001 in each lane)."""
    return int.from_bytes(b"\x00\xff" * n, "big"), int.from_bytes(b"\x00\x01" * n, "big")


def _lanes(data: bytes) -> int:
    """`data` as a big integer with one byte in the low half of each 16-bit lane."""
    wide = bytearray(2 * len(data))
    wide[1::2] = data
    return int.from_bytes(wide, "big")


def _bytes(lanes: int, n: int) -> bytes:
    """The low byte of each of the n lanes (a sum mod 256)."""
    return lanes.to_bytes(2 * n, "big")[1::2]


def _clamped_bytes(lanes: int, n: int) -> bytes:
    """The n lanes (each 0..1023) as bytes, each clamped to 255."""
    low, one = _masks(n)
    over = ((lanes >> 8) | (lanes >> 9)) & one  # 1 in each lane whose value passed 255
    return _bytes((lanes | over * 0xFF) & low, n)


def png_chunk(kind: bytes, data: bytes) -> bytes:
    """One PNG chunk: length, type, data, CRC."""
    return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))
