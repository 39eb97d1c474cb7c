"""The figures and reports of ``locks bench`` (the measurements themselves run in test_cli.py)."""

from __future__ import annotations

import io
import json

import pytest

from locks.bench import BenchConfig, Result, percentile, ratios, render_svg, render_table, to_json


def results() -> list[Result]:
    return [
        Result("locks (X)", 6.0, 9.0, 1000.0, 4, 0.2, 0.4),
        Result("raw", 3.0, 4.0, 4000.0, 4, 0.1, 0.2, floor=True),
        Result("peer <b>", None, None, None, 4, None, None, errors=["uncontended: RuntimeError: boom"]),
    ]


def test_percentile_is_nearest_rank() -> None:
    values = [float(v) for v in range(1, 101)]
    assert percentile(values, 0.5) == 50.0
    assert percentile(values, 0.99) == 99.0
    assert percentile(values, 1.0) == 100.0
    assert percentile([7.0], 0.99) == 7.0
    with pytest.raises(ValueError):
        percentile([], 0.5)


def test_ratios_are_against_the_floor() -> None:
    rel = ratios(results())
    assert rel["locks (X)"] == {"uncontended_median": 2.0, "contended_throughput": 0.25, "handoff_median": 2.0}
    assert rel["raw"]["uncontended_median"] == 1.0
    assert rel["peer <b>"]["uncontended_median"] is None
    assert ratios(results()[:1]) == {}


def test_each_subject_is_compared_with_the_floor_listed_before_it() -> None:
    two_servers = [
        *results(),
        Result("other server", 1.0, 2.0, 8000.0, 4, 0.5, 0.6, floor=True),
        Result("locks on the other server", 1.5, 3.0, 4000.0, 4, 1.0, 1.2),
    ]
    rel = ratios(two_servers)
    assert rel["locks (X)"]["uncontended_median"] == 2.0  # before any floor: the first one
    assert rel["other server"]["uncontended_median"] == 1.0
    assert rel["locks on the other server"] == {
        "uncontended_median": 1.5,
        "contended_throughput": 0.5,
        "handoff_median": 2.0,
    }


def test_table_and_json_show_failures_instead_of_numbers() -> None:
    out = io.StringIO()
    render_table(results(), out)
    text = out.getvalue()
    assert "raw (floor)" in text  # the floor's row says so
    assert "6.0 / 9.0" in text and "2.00" in text and "failed" in text and "! uncontended: RuntimeError" in text
    report = json.loads(to_json(results(), BenchConfig(), {"backend": "x"}))
    assert report["results"][2]["errors"] == ["uncontended: RuntimeError: boom"]
    assert report["ratios_to_floor"]["locks (X)"]["contended_throughput"] == 0.25


def test_svg_escapes_labels_and_draws_one_bar_per_figure() -> None:
    svg = render_svg(results(), "title & more")
    assert svg.startswith("<svg") and svg.rstrip().endswith("</svg>")
    assert "peer &lt;b&gt;" in svg and "title &amp; more" in svg
    assert svg.count("<rect") == 6  # 2 subjects with figures x 3 panels
    assert svg.count(">failed<") == 3
