"""Checks a history of critical sections for overlap: the evidence of mutual exclusion."""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass


@dataclass(frozen=True, order=True)
class Interval:
    """One critical section: monotonic start and end (seconds) and who ran it."""

    start: float
    end: float
    who: str = ""


def overlaps(intervals: Iterable[Interval]) -> list[tuple[Interval, Interval]]:
    """Every pair of consecutive critical sections (by start) that overlap."""
    ordered = sorted(intervals)
    found = []
    latest = None
    for interval in ordered:
        if latest is not None and interval.start < latest.end:
            found.append((latest, interval))
        if latest is None or interval.end > latest.end:
            latest = interval
    return found


def assert_exclusive(intervals: Iterable[Interval]) -> None:
    """Fail with the first overlapping pairs when two critical sections overlapped."""
    bad = overlaps(intervals)
    assert not bad, f"{len(bad)} overlapping critical sections, first: {bad[:3]}"
