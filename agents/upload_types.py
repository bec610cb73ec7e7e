"""What an uploaded file is: its media type, from its name and its content, and a WAV file's duration.

No HTTP here: handlers answer each kind of `UploadRefused` in their surface's way.  A
file is taken only when its extension (or, for a name without one, its declared type) is
on the allowlist (else UnsupportedType) and its content is what that type says (else
InvalidContent): the client's word alone is never trusted, and a type served inline (an
image) is always a verified one.
"""
from __future__ import annotations

import struct
from dataclasses import dataclass
from pathlib import PurePosixPath

import orjson

PNG, JPEG, GIF, WEBP = "image/png", "image/jpeg", "image/gif", "image/webp"
PDF = "application/pdf"
TEXT, MARKDOWN, CSV, JSON = "text/plain", "text/markdown", "text/csv", "application/json"
WAV, MP3 = "audio/wav", "audio/mpeg"

IMAGE_TYPES = frozenset({PNG, JPEG, GIF, WEBP})
TEXT_TYPES = frozenset({TEXT, MARKDOWN, CSV, JSON})
BY_EXTENSION = {
    ".png": PNG, ".jpg": JPEG, ".jpeg": JPEG, ".gif": GIF, ".webp": WEBP, ".pdf": PDF,
    ".txt": TEXT, ".text": TEXT, ".md": MARKDOWN, ".markdown": MARKDOWN, ".csv": CSV, ".json": JSON,
    ".wav": WAV, ".mp3": MP3,
}
EXTENSION = {PNG: "png", JPEG: "jpg", GIF: "gif", WEBP: "webp", PDF: "pdf", TEXT: "txt", MARKDOWN: "md",
             CSV: "csv", JSON: "json", WAV: "wav", MP3: "mp3"}
ALLOWED = tuple(EXTENSION)
_ALIASES = {"image/jpg": JPEG, "image/pjpeg": JPEG, "audio/x-wav": WAV, "audio/wave": WAV, "audio/vnd.wave": WAV,
            "audio/mp3": MP3, "text/x-markdown": MARKDOWN}
# A PDF may be all ASCII: a text file never starts like one.  Other binary formats fail the
# UTF-8 and control-character checks.
_NOT_TEXT = (b"%PDF-",)
_TEXT_CONTROLS = frozenset("\t\n\r\f\v\x1b")


class UploadRefused(Exception):
    """The file cannot be taken; `message` says why, to the uploader."""

    def __init__(self, message: str) -> None:
        super().__init__(message)
        self.message = message


class UnsupportedType(UploadRefused):
    """A type that is not on the allowlist (or, for audio to transcribe, not WAV)."""


class InvalidContent(UploadRefused):
    """Content that is not what its type says: empty, another format, a malformed WAV file."""


def claimed_type(filename: str, declared: str | None = None) -> str:
    """The allowed media type the file claims to be: its extension's, or for a name without one,
    its declared Content-Type's.  UnsupportedType when that is not allowed."""
    suffix = PurePosixPath(filename).suffix.lower()
    if suffix:
        media_type = BY_EXTENSION.get(suffix)
        what = f"files of type {suffix!r}"
    else:
        hint = (declared or "").split(";", 1)[0].strip().lower()
        media_type = _ALIASES.get(hint, hint) if hint in (*ALLOWED, *_ALIASES) else None
        what = f"a file without an extension of type {hint!r}" if hint else "a file without an extension or a type"
    if media_type is None:
        raise UnsupportedType(f"{what} cannot be uploaded; allowed: {', '.join(sorted(BY_EXTENSION))}")
    return media_type


def detect(filename: str, data: bytes, declared: str | None = None) -> str:
    """The verified media type of an upload (UnsupportedType or InvalidContent otherwise)."""
    media_type = claimed_type(filename, declared)
    verify(media_type, data)
    return media_type


def verify(media_type: str, data: bytes) -> None:
    """InvalidContent unless `data` is a file of `media_type`."""
    if not data:
        raise InvalidContent("the file is empty")
    ok = _CHECKS[media_type](data)
    if not ok:
        raise InvalidContent(f"the content of the file is not {media_type}")


def _png(d: bytes) -> bool:
    return d.startswith(b"\x89PNG\r\n\x1a\n") and d[12:16] == b"IHDR" and len(d) >= 33


def _jpeg(d: bytes) -> bool:
    return d.startswith(b"\xff\xd8\xff") and len(d) >= 4


def _gif(d: bytes) -> bool:
    return d[:6] in (b"GIF87a", b"GIF89a") and len(d) >= 13


def _webp(d: bytes) -> bool:
    return d[:4] == b"RIFF" and d[8:12] == b"WEBP" and d[12:16] in (b"VP8 ", b"VP8L", b"VP8X")


def _pdf(d: bytes) -> bool:
    return d.startswith(b"%PDF-") and b"%%EOF" in d[-2048:]


def _mp3(d: bytes) -> bool:
    if d[:3] == b"ID3":  # an ID3v2 tag: version 2-4, a size of four 7-bit bytes
        return len(d) > 10 and 2 <= d[3] <= 4 and all(b < 0x80 for b in d[6:10])
    if len(d) < 4 or d[0] != 0xFF or d[1] & 0xE0 != 0xE0:  # an MPEG audio frame header
        return False
    version, layer = (d[1] >> 3) & 3, (d[1] >> 1) & 3
    bitrate, rate = d[2] >> 4, (d[2] >> 2) & 3
    return version != 1 and layer == 1 and bitrate != 15 and rate != 3


def _text(d: bytes) -> bool:
    body = d.removeprefix(b"\xef\xbb\xbf")
    if body.startswith(_NOT_TEXT):
        return False
    try:
        text = body.decode("utf-8")
    except UnicodeDecodeError:
        return False
    return not any(ch < " " and ch not in _TEXT_CONTROLS for ch in text)


def _json(d: bytes) -> bool:
    if not _text(d):
        return False
    try:
        orjson.loads(d.removeprefix(b"\xef\xbb\xbf"))
    except orjson.JSONDecodeError:
        return False
    return True


def _wav(d: bytes) -> bool:
    try:
        wav_info(d)
    except UploadRefused:
        return False
    return True


_CHECKS = {PNG: _png, JPEG: _jpeg, GIF: _gif, WEBP: _webp, PDF: _pdf, TEXT: _text, MARKDOWN: _text, CSV: _text,
           JSON: _json, WAV: _wav, MP3: _mp3}


# -- WAV ---------------------------------------------------------------------------------------

@dataclass(frozen=True)
class WavInfo:
    audio_format: int
    channels: int
    sample_rate: int
    bits_per_sample: int
    data_bytes: int
    duration_s: float


def is_wav(data: bytes) -> bool:
    """A RIFF/WAVE header (nothing else is read)."""
    return len(data) >= 12 and data[:4] == b"RIFF" and data[8:12] == b"WAVE"


def wav_info(data: bytes) -> WavInfo:
    """The format and duration of a WAV file, from its `fmt ` and `data` chunks.

    UnsupportedType without a RIFF/WAVE header; InvalidContent when the chunks are missing, out
    of order, inconsistent or larger than the file (a data size of 0xFFFFFFFF, which streaming
    recorders write, means "to the end of the file").
    """
    if not is_wav(data):
        raise UnsupportedType("only WAV audio can be transcribed (no RIFF/WAVE header)")
    riff_size = struct.unpack_from("<I", data, 4)[0]
    end = len(data) if riff_size in (0, 0xFFFFFFFF) else min(len(data), riff_size + 8)
    fmt: tuple[int, int, int, int, int, int] | None = None
    pos = 12
    while pos + 8 <= end:
        chunk_id, size = data[pos:pos + 4], struct.unpack_from("<I", data, pos + 4)[0]
        body = pos + 8
        if chunk_id == b"fmt ":
            if size < 16 or body + size > end:
                raise InvalidContent("malformed WAV file: the fmt chunk is too short")
            fmt = struct.unpack_from("<HHIIHH", data, body)
        elif chunk_id == b"data":
            if fmt is None:
                raise InvalidContent("malformed WAV file: the data chunk comes before the fmt chunk")
            if size == 0xFFFFFFFF:
                size = end - body
            if body + size > end:
                raise InvalidContent("malformed WAV file: the data chunk is larger than the file")
            return _info(fmt, size)
        pos = body + size + (size & 1)
    raise InvalidContent(f"malformed WAV file: no {'data' if fmt else 'fmt'} chunk")


def _info(fmt: tuple[int, int, int, int, int, int], data_bytes: int) -> WavInfo:
    audio_format, channels, sample_rate, byte_rate, block_align, bits = fmt
    if not 1 <= channels <= 64 or not 1 <= sample_rate <= 1_000_000 or byte_rate == 0 or block_align == 0:
        raise InvalidContent("malformed WAV file: impossible channels, sample rate or byte rate in the fmt chunk")
    if audio_format in (1, 3) and (bits == 0 or byte_rate != sample_rate * block_align
                                   or block_align != channels * ((bits + 7) // 8)):
        raise InvalidContent("malformed WAV file: the byte rate does not match the sample format")
    return WavInfo(audio_format, channels, sample_rate, bits, data_bytes, data_bytes / byte_rate)
