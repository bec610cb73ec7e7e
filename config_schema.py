"""A tiny schema language for Parley's settings: what each table and key of the config file may hold.

A schema is a tree of specs (`Table`, `ArrayOf`, `List`, `Str`, `Int`, `Number`, `Bool`,
`OneOf`, `Url`, …). `check` walks a value along it once and collects every problem, each
with the place it is at in the file's own words (`[smtp] port`, `[[agents]] #2 tools`,
`[llm.local] base_url`) and what was expected; the value comes back normal (numbers as
float, paths as Path). `from_text` reads the same types from an environment variable or a
flag, so those are checked by the same specs. The specs check shape, types and bounds;
what needs other settings (an agent's provider, a tool's price) is left to their readers.
"""
from __future__ import annotations

import difflib
import json
import math
import re
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

_TRUE = {"1", "true", "yes", "on"}
_FALSE = {"0", "false", "no", "off", ""}


@dataclass(frozen=True)
class Where:
    """A place in the file: the table (`llm.local`), the entry of an array of tables (` #2`), the key."""

    table: str = ""
    entry: str = ""
    key: str = ""

    def child(self, key: str, table: bool) -> Where:
        if table and not self.key and not self.entry:
            return Where(_dotted(self.table, key))
        return Where(self.table, self.entry, _dotted(self.key, key))

    def item(self, i: int, table: bool) -> Where:
        if table and not self.entry:
            return Where(_dotted(self.table, self.key), f" #{i + 1}")
        return Where(self.table, self.entry, f"{self.key} #{i + 1}")

    def __str__(self) -> str:
        head = f"[[{self.table}]]{self.entry}" if self.entry else f"[{self.table}]" if self.table else ""
        return " ".join(part for part in (head, self.key) if part)


def _dotted(a: str, b: str) -> str:
    return f"{a}.{b}" if a else b


@dataclass(frozen=True)
class Problem:
    where: Where
    message: str

    def __str__(self) -> str:
        return f"{self.where}: {self.message}" if str(self.where) else self.message


def shown(value: Any) -> str:
    """A value as a person wrote it in TOML, cut short."""
    if isinstance(value, dict):
        return "a table"
    if isinstance(value, list):
        return "an array"
    text = json.dumps(value) if not isinstance(value, bool) else str(value).lower()
    return text if len(text) <= 60 else text[:59] + "…"


class Spec:
    """What one value may be. `check` appends problems and returns the value made normal."""

    types: tuple[type, ...] = (object,)

    @property
    def expected(self) -> str:
        return "a value"

    def check(self, value: Any, at: Where, problems: list[Problem]) -> Any:
        if not isinstance(value, self.types) or (isinstance(value, bool) and bool not in self.types):
            return self.wrong(value, at, problems)
        return self.accept(value, at, problems)

    def accept(self, value: Any, at: Where, problems: list[Problem]) -> Any:
        return value

    def wrong(self, value: Any, at: Where, problems: list[Problem]) -> None:
        problems.append(Problem(at, f"expected {self.expected}, got {shown(value)}"))

    def from_text(self, text: str) -> Any:
        """The value of an environment variable or a flag; ValueError when it is not of this type."""
        return text


class Anything(Spec):
    """Any value: a table whose keys are the user's own (`extra_body`)."""


@dataclass(frozen=True)
class Str(Spec):
    nonempty: bool = False
    pattern: str | None = None
    what: str | None = None
    types = (str,)

    @property
    def expected(self) -> str:
        return self.what or ("a non-empty string" if self.nonempty else "a string")

    def accept(self, value: Any, at: Where, problems: list[Problem]) -> Any:
        if (self.nonempty and not value.strip()) or (self.pattern and not re.fullmatch(self.pattern, value)):
            return self.wrong(value, at, problems)
        return value


class FilePath(Str):
    def accept(self, value: Any, at: Where, problems: list[Problem]) -> Any:
        return Path(value)


@dataclass(frozen=True)
class Url(Str):
    schemes: tuple[str, ...] = ("http", "https")

    @property
    def expected(self) -> str:
        names = "http(s)" if set(self.schemes) == {"http", "https"} else " or ".join(self.schemes)
        return f"an {names} URL such as {self.schemes[-1]}://host.example"

    def accept(self, value: Any, at: Where, problems: list[Problem]) -> Any:
        try:
            parts = urlsplit(value)
            ok = parts.scheme in self.schemes and bool(parts.hostname) and parts.port != 0
        except ValueError:  # a port that is not a number
            ok = False
        return value if ok else self.wrong(value, at, problems)


@dataclass(frozen=True)
class OneOf(Spec):
    """One of some words, in any case (given back in the case written here)."""

    choices: tuple[str, ...] = ()
    types = (str,)

    def __init__(self, *choices: str) -> None:
        object.__setattr__(self, "choices", choices)

    @property
    def expected(self) -> str:
        return "one of " + ", ".join(self.choices)

    def accept(self, value: Any, at: Where, problems: list[Problem]) -> Any:
        folded = {c.lower(): c for c in self.choices}
        return folded[value.lower()] if value.lower() in folded else self.wrong(value, at, problems)


@dataclass(frozen=True)
class Bool(Spec):
    types = (bool,)

    @property
    def expected(self) -> str:
        return "true or false"

    def from_text(self, text: str) -> Any:
        word = text.strip().lower()
        if word not in _TRUE | _FALSE:
            raise ValueError(text)
        return word in _TRUE


def _bounds(lo: float | None, hi: float | None, above: bool) -> str:
    """`, at least 0`, ` from 1 to 65535`, `, above 0 and at most 10` …"""
    low = None if lo is None else f"above {lo:g}" if above else f"at least {lo:g}"
    if hi is None:
        return f", {low}" if low else ""
    if low is None:
        return f", at most {hi:g}"
    return f", {low} and at most {hi:g}" if above else f" from {lo:g} to {hi:g}"


@dataclass(frozen=True)
class Int(Spec):
    lo: int | None = None
    hi: int | None = None
    types = (int,)

    @property
    def expected(self) -> str:
        return "an integer" + _bounds(self.lo, self.hi, False)

    def accept(self, value: Any, at: Where, problems: list[Problem]) -> Any:
        if (self.lo is not None and value < self.lo) or (self.hi is not None and value > self.hi):
            return self.wrong(value, at, problems)
        return value

    def from_text(self, text: str) -> Any:
        return int(text.strip())


@dataclass(frozen=True)
class Number(Spec):
    """A finite number (integers too, given back as float); `above`: `lo` itself is not allowed."""

    lo: float | None = None
    hi: float | None = None
    above: bool = False
    unit: str = ""
    types = (int, float)

    @property
    def expected(self) -> str:
        return "a number" + (f" of {self.unit}" if self.unit else "") + _bounds(self.lo, self.hi, self.above)

    def accept(self, value: Any, at: Where, problems: list[Problem]) -> Any:
        too_low = self.lo is not None and (value <= self.lo if self.above else value < self.lo)
        if not math.isfinite(value) or too_low or (self.hi is not None and value > self.hi):
            return self.wrong(value, at, problems)
        return float(value)

    def from_text(self, text: str) -> Any:
        return float(text.strip())


@dataclass(frozen=True)
class List(Spec):
    """An array of values; from the environment, a comma-separated list."""

    item: Spec = field(default_factory=Str)
    min_len: int = 0
    types = (list,)

    @property
    def expected(self) -> str:
        return f"an array{' (not empty)' if self.min_len else ''}, each {self.item.expected}"

    def accept(self, value: Any, at: Where, problems: list[Problem]) -> Any:
        if len(value) < self.min_len:
            return self.wrong(value, at, problems)
        return [self.item.check(v, at.item(i, False), problems) for i, v in enumerate(value)]

    def from_text(self, text: str) -> Any:
        return [self.item.from_text(v.strip()) for v in text.split(",") if v.strip()]


@dataclass(frozen=True)
class Table(Spec):
    """A table of known keys (`fields`; `required` must be there); `rest`: the spec of any other
    key (the NAME of `[llm.NAME]`), None when other keys are unknown. `dashes`: `drain-timeout`
    is `drain_timeout`."""

    fields: Mapping[str, Spec] = field(default_factory=dict)
    required: tuple[str, ...] = ()
    rest: Spec | None = None
    dashes: bool = False
    types = (dict,)

    @property
    def expected(self) -> str:
        return "a table"

    def accept(self, value: Any, at: Where, problems: list[Problem]) -> Any:
        out: dict[str, Any] = {}
        for key, item in value.items():
            name = key.replace("-", "_") if self.dashes else key
            spec = self.fields.get(name, self.rest)
            where = at.child(key, isinstance(item, dict))
            if spec is None:
                problems.append(Problem(where, self.unknown(name, isinstance(item, dict))))
                continue
            checked = spec.check(item, where, problems)
            if checked is not None:
                out[name] = checked
        for name in self.required:
            if name not in value:
                problems.append(Problem(at.child(name, False), f"missing (expected {self.fields[name].expected})"))
        return out

    def unknown(self, name: str, table: bool) -> str:
        kind = "table" if table else "key"
        close = difflib.get_close_matches(name, list(self.fields), n=1)
        if close:
            return f"unknown {kind}; did you mean {f'[{close[0]}]' if table else close[0]}?"
        return f"unknown {kind} (known: {', '.join(sorted(self.fields))})"


@dataclass(frozen=True)
class ArrayOf(Spec):
    """An array of tables: `[[agents]]`."""

    item: Table = field(default_factory=Table)
    types = (list,)

    @property
    def expected(self) -> str:
        return "an array of tables"

    def accept(self, value: Any, at: Where, problems: list[Problem]) -> Any:
        return [self.item.check(v, at.item(i, True), problems) for i, v in enumerate(value)]


@dataclass(frozen=True)
class Either(Spec):
    """One of several specs: the one whose type the value has decides; another type is refused."""

    specs: tuple[Spec, ...] = ()

    def __init__(self, *specs: Spec) -> None:
        object.__setattr__(self, "specs", specs)

    @property
    def expected(self) -> str:
        return " or ".join(s.expected for s in self.specs)

    def check(self, value: Any, at: Where, problems: list[Problem]) -> Any:
        for spec in self.specs:
            if isinstance(value, spec.types) and not (isinstance(value, bool) and bool not in spec.types):
                return spec.check(value, at, problems)
        return self.wrong(value, at, problems)

    def from_text(self, text: str) -> Any:
        return self.specs[0].from_text(text)


@dataclass(frozen=True)
class Gone(Spec):
    """A key that is no longer read: any value is refused with what to write instead."""

    instead: str = ""

    def check(self, value: Any, at: Where, problems: list[Problem]) -> Any:
        problems.append(Problem(at, f"no longer read: {self.instead}"))
