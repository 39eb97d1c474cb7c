"""``locks bench``: latency and throughput of a backend, measured beside its peers in one run.

Three figures per subject (a locks backend or a peer library on the same server):

* **uncontended**: one process takes and releases a free lock, over and over; the median and p99
  of one acquire+release, in microseconds;
* **contended**: ``processes`` processes loop on one name for ``seconds``; acquisitions per second
  summed over all of them;
* **handoff**: a waiter is blocked on a held lock; the time from the holder's ``release()`` call to
  the waiter's ``acquire()`` returning (median and p99, milliseconds). Both sides read the same
  system-wide monotonic clock.

Every subject runs in fresh processes (``spawn``), so figures of one report are comparable: same
machine, same server, same moment. Uncontended and contended figures are taken in turns (a round
of every subject, then the next round), so a machine whose speed drifts slows every subject alike;
handoff runs go one subject after the other. Ratios are given against the subject whose
is marked ``floor``: the bare minimum any lock on that server must do.
"""

from __future__ import annotations

from locks.bench.report import Result, percentile, ratios, render_svg, render_table, to_json
from locks.bench.runner import Bench, BenchConfig
from locks.bench.subjects import (
    PEERS_GROUP,
    BackendLocks,
    EnteredLocks,
    KeptLocks,
    backend_subject,
    close_django_connections,
    configure_django,
    setup_django,
    subjects_for,
)

__all__ = [
    "PEERS_GROUP",
    "BackendLocks",
    "Bench",
    "BenchConfig",
    "EnteredLocks",
    "KeptLocks",
    "Result",
    "backend_subject",
    "close_django_connections",
    "configure_django",
    "percentile",
    "ratios",
    "render_svg",
    "render_table",
    "setup_django",
    "subjects_for",
    "to_json",
]
