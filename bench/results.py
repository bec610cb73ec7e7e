"""Result rows, targets, the table and the JSON document."""
from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Any


@dataclass(frozen=True)
class Target:
    """`ratio_min`: Parley/baseline >= value; `ratio_max`: <= value; `min`/`max`: Parley's value itself."""

    kind: str
    value: float

    def met(self, parley: float | None, ratio: float | None) -> bool | None:
        if self.kind in ("ratio_min", "ratio_max"):
            if ratio is None:
                return None
            return ratio >= self.value if self.kind == "ratio_min" else ratio <= self.value
        if parley is None:
            return None
        return parley >= self.value if self.kind == "min" else parley <= self.value

    def describe(self, unit: str) -> str:
        if self.kind == "ratio_min":
            return f">= {self.value:g}x baseline"
        if self.kind == "ratio_max":
            return f"<= {self.value:g}x baseline"
        sign = ">=" if self.kind == "min" else "<="
        return f"{sign} {_num(self.value)} {unit}".rstrip()


@dataclass
class Metric:
    bench: str
    name: str
    unit: str
    parley: float | None
    baseline: float | None = None
    target: Target | None = None
    note: str = ""
    error: str = ""  # a failure seen while measuring (e.g. a stream that never ended); the run exits 2
    detail: dict[str, Any] = field(default_factory=dict)

    @property
    def ratio(self) -> float | None:
        if self.parley is None or self.baseline is None or self.baseline == 0:
            return None
        return self.parley / self.baseline

    @property
    def met(self) -> bool | None:
        return None if self.target is None else self.target.met(self.parley, self.ratio)

    def as_json(self) -> dict[str, Any]:
        return {
            "bench": self.bench,
            "metric": self.name,
            "unit": self.unit,
            "parley": _clean(self.parley),
            "baseline": _clean(self.baseline),
            "ratio": _clean(self.ratio),
            "target": None if self.target is None else {"kind": self.target.kind, "value": self.target.value, "text": self.target.describe(self.unit)},
            "met": self.met,
            "note": self.note,
            "error": self.error or None,
            "detail": self.detail,
        }


def _clean(v: float | None) -> float | None:
    if v is None or (isinstance(v, float) and not math.isfinite(v)):
        return None
    return round(v, 4) if isinstance(v, float) else v


def _num(v: float | None) -> str:
    if v is None:
        return "-"
    a = abs(v)
    if a >= 1000:
        return f"{v:,.0f}"
    if a >= 100:
        return f"{v:.0f}"
    if a >= 10:
        return f"{v:.1f}"
    if a >= 1:
        return f"{v:.2f}"
    return f"{v:.3f}"


def _cell(v: float | None, unit: str) -> str:
    if v is None:
        return "-"
    return f"{_num(v)} {unit}".rstrip()


def table(metrics: list[Metric], errors: list[tuple[str, str]]) -> str:
    header = ("metric", "Parley", "baseline", "ratio", "target")
    rows: list[tuple[str, ...]] = []
    for m in metrics:
        ratio = "-" if m.ratio is None else f"{m.ratio:.2f}x"
        if m.target is None:
            target = "-"
        else:
            met = m.met
            target = m.target.describe(m.unit) + ("  ok" if met else "  MISSED" if met is False else "  ?")
        parley = "FAILED" if m.error and m.parley is None else _cell(m.parley, m.unit) + (" (!)" if m.error else "")
        rows.append((m.name, parley, _cell(m.baseline, m.unit), ratio, target))
    widths = [max(len(r[i]) for r in [header, *rows]) for i in range(len(header))]
    align = ["<", ">", ">", ">", "<"]

    def fmt(r: tuple[str, ...]) -> str:
        return " | ".join(f"{c:{a}{w}}" for c, a, w in zip(r, align, widths, strict=True)).rstrip()

    lines = [fmt(header), "-+-".join("-" * w for w in widths)]
    lines.extend(fmt(r) for r in rows)
    notes = [f"  [{m.name}] {m.note}" for m in metrics if m.note]
    if notes:
        lines.append("")
        lines.append("notes:")
        lines.extend(notes)
    failed = [m for m in metrics if m.error]
    if failed or errors:
        lines.append("")
    for m in failed:
        lines.append(f"FAILURE in [{m.name}]: {m.error}")
    for bench, err in errors:
        lines.append(f"ERROR in {bench}: {err}")
    return "\n".join(lines)
