"""Figures and reports of ``locks bench``: results, ratios to the floor, table, JSON, SVG."""

from __future__ import annotations

import dataclasses
import json
import math
import sys
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, TextIO

if TYPE_CHECKING:
    from locks.bench.runner import BenchConfig

#: How reports mark the floor's row.
FLOOR_SUFFIX = "(floor)"


@dataclass
class Result:
    """The figures of one subject; ``None`` where a measurement failed (see ``errors``)."""

    label: str
    uncontended_median_us: float | None = None
    uncontended_p99_us: float | None = None
    contended_ops_per_s: float | None = None
    contended_processes: int = 0
    handoff_median_ms: float | None = None
    handoff_p99_ms: float | None = None
    errors: list[str] = field(default_factory=list)
    #: The bare minimum any lock on that server must do, that ratios are taken against.
    floor: bool = False

    @property
    def is_floor(self) -> bool:
        return self.floor

    @property
    def shown(self) -> str:
        """The label as reports show it: a floor says so."""
        return f"{self.label} {FLOOR_SUFFIX}" if self.floor else self.label


def percentile(values: Sequence[float], q: float) -> float:
    """The ``q`` quantile (0..1) by the nearest-rank method."""
    if not values:
        raise ValueError("no values")
    ordered = sorted(values)
    rank = max(1, math.ceil(q * len(ordered)))
    return ordered[rank - 1]


def ratios(results: Sequence[Result]) -> dict[str, dict[str, float | None]]:
    """Each subject's figures divided by its floor's (uncontended and handoff: lower is better;
    throughput: higher is better). A run can hold several floors (one per server, when it
    measures two): a subject's floor is the nearest one listed before it, or the first one for
    the subjects listed before any floor."""
    floor = next((r for r in results if r.is_floor), None)
    out: dict[str, dict[str, float | None]] = {}
    if floor is None:
        return out
    for r in results:
        if r.is_floor:
            floor = r
        out[r.label] = {
            "uncontended_median": _ratio(r.uncontended_median_us, floor.uncontended_median_us),
            "contended_throughput": _ratio(r.contended_ops_per_s, floor.contended_ops_per_s),
            "handoff_median": _ratio(r.handoff_median_ms, floor.handoff_median_ms),
        }
    return out


def _ratio(value: float | None, base: float | None) -> float | None:
    if value is None or not base:
        return None
    return value / base


def to_json(results: Sequence[Result], config: BenchConfig, about: dict[str, Any]) -> str:
    return json.dumps(
        {
            "about": about,
            "config": dataclasses.asdict(config),
            "results": [dataclasses.asdict(r) for r in results],
            "ratios_to_floor": ratios(results),
        },
        indent=2,
    )


def render_table(results: Sequence[Result], stream: TextIO = sys.stdout) -> None:
    rel = ratios(results)
    width = max([len(r.shown) for r in results] + [7])
    header = (
        f"{'subject':<{width}}  {'uncontended µs':>16}  {'x floor':>7}  "
        f"{'contended ops/s':>15}  {'x floor':>7}  {'handoff ms':>15}"
    )
    print(header, file=stream)
    print("-" * len(header), file=stream)

    def fmt(value: float | None, spec: str) -> str:
        return "failed" if value is None else format(value, spec)

    for r in results:
        ratio = rel.get(r.label, {})
        unc = f"{fmt(r.uncontended_median_us, '.1f')} / {fmt(r.uncontended_p99_us, '.1f')}"
        hand = f"{fmt(r.handoff_median_ms, '.2f')} / {fmt(r.handoff_p99_ms, '.2f')}"
        unc_ratio = ratio.get("uncontended_median")
        thr_ratio = ratio.get("contended_throughput")
        print(
            f"{r.shown:<{width}}  {unc:>16}  {'' if unc_ratio is None else f'{unc_ratio:.2f}':>7}  "
            f"{fmt(r.contended_ops_per_s, ',.0f'):>15}  {'' if thr_ratio is None else f'{thr_ratio:.2f}':>7}  "
            f"{hand:>15}",
            file=stream,
        )
        for error in r.errors:
            print(f"{'':<{width}}  ! {error}", file=stream)
    print(
        "uncontended: median / p99 of one acquire+release; handoff: release → blocked waiter acquires, "
        "median / p99; contended: acquisitions per second summed over all processes.",
        file=stream,
    )


def render_svg(results: Sequence[Result], title: str) -> str:
    """Three bar charts side by side (uncontended latency, contended throughput, handoff), one
    bar per subject: a plot for the docs, with no plotting library needed."""
    panels = [
        ("uncontended acquire+release, median µs (lower is better)", [r.uncontended_median_us for r in results]),
        ("contended throughput, acquisitions/s (higher is better)", [r.contended_ops_per_s for r in results]),
        ("handoff to a blocked waiter, median ms (lower is better)", [r.handoff_median_ms for r in results]),
    ]
    label_width, bar_width, row, gap = 210, 230, 22, 30
    width = label_width + len(panels) * (bar_width + gap) + 10
    height = 60 + row * len(results) + 20
    parts = [
        f'<svg xmlns="http://www.w3.org/2000/svg" width="{width}" height="{height}" '
        f'font-family="sans-serif" font-size="12">',
        f'<text x="10" y="20" font-size="14" font-weight="bold">{_xml(title)}</text>',
    ]
    for i, r in enumerate(results):
        y = 60 + i * row
        parts.append(f'<text x="10" y="{y + 14}">{_xml(r.label)}</text>')
    for p, (heading, values) in enumerate(panels):
        x0 = label_width + p * (bar_width + gap)
        parts.append(f'<text x="{x0}" y="45" font-size="11">{_xml(heading)}</text>')
        top = max((v for v in values if v is not None), default=0.0) or 1.0
        for i, value in enumerate(values):
            y = 60 + i * row
            if value is None:
                parts.append(f'<text x="{x0}" y="{y + 14}" fill="#b00">failed</text>')
                continue
            length = max(1.0, (bar_width - 70) * value / top)
            colour = "#2f6fb0" if i == 0 else ("#888" if results[i].is_floor else "#b7c9dc")
            parts.append(f'<rect x="{x0}" y="{y + 3}" width="{length:.1f}" height="{row - 8}" fill="{colour}"/>')
            parts.append(f'<text x="{x0 + length + 4:.1f}" y="{y + 14}">{_figure(value)}</text>')
    parts.append("</svg>")
    return "\n".join(parts) + "\n"


def _figure(value: float) -> str:
    if value >= 1000:
        return f"{value:,.0f}"
    if value >= 10:
        return f"{value:.1f}"
    return f"{value:.2f}"


def _xml(text: str) -> str:
    return text.replace("&", "&amp;").replace("<", "&lt;").replace(">", "&gt;")
