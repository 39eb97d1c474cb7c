"""The demo: workers contend for one lock and prove that mutual exclusion held (no server needed).

``hatch run demo`` (or ``python -m locks.demo``). Each worker takes the lock ``demo:ledger``
again and again; under it, it reads a counter file, works for a moment and writes the counter back
plus one, the read-modify-write that loses updates without a lock. Then the demo prints each
worker's acquisitions, the wait-time percentiles, and the proof that mutual exclusion held: no two
critical sections overlapped, the counter equals the number of acquisitions, and fencing tokens
grew with every acquisition.

The workers are processes on the file backend (``file://``) when one is installed (locks-file);
otherwise they are threads of one process on the in-process backend (``memory://``), and the demo
says so.
"""

from __future__ import annotations

import argparse
import multiprocessing
import os
import queue
import random
import shutil
import sys
import tempfile
import threading
import time
from collections.abc import Sequence
from typing import Any

LOCK_NAME = "demo:ledger"


def _worker(url: str, index: int, counter_path: str, start_at: float, seconds: float, progress: Any, out: Any) -> None:
    import locks

    backend = locks.connect(url)
    lock = backend.lock(LOCK_NAME)
    rng = random.Random(index)
    waits: list[float] = []
    sections: list[tuple[float, float, int | None]] = []
    while time.time() < start_at:
        time.sleep(0.001)
    end = time.monotonic() + seconds
    try:
        while time.monotonic() < end:
            asked = time.monotonic()
            with lock:
                entered = time.monotonic()
                with open(counter_path, "r+") as counter:
                    value = int(counter.read() or 0)
                    time.sleep(rng.uniform(0.0002, 0.002))  # the work; overlapping writers would lose updates
                    counter.seek(0)
                    counter.write(str(value + 1))
                    counter.truncate()
                left = time.monotonic()
                token = lock.token
            waits.append(entered - asked)
            sections.append((entered, left, token))
            progress[index] += 1
            time.sleep(rng.uniform(0, 0.001))  # do something else before asking again
    finally:
        backend.close()
    out.put((index, waits, sections))


def percentile(values: Sequence[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[max(0, min(len(ordered) - 1, round(q * (len(ordered) - 1))))]


def file_backend_available() -> bool:
    """Whether an installed package handles ``file://`` URLs (locks-file does)."""
    from django.core.exceptions import ImproperlyConfigured

    from locks.config import backend_class_for_scheme

    try:
        backend_class_for_scheme("file")
    except (ValueError, TypeError, ImproperlyConfigured):
        return False
    return True


class _ThreadWorker(threading.Thread):
    """A worker thread that reports like a worker process (``exitcode``), for the memory backend."""

    def __init__(self, target: Any, args: tuple[Any, ...]) -> None:
        super().__init__(target=self._run_target, args=(target, *args), daemon=True)
        self.failed = False

    def _run_target(self, target: Any, *args: Any) -> None:
        try:
            target(*args)
        except BaseException:
            self.failed = True
            raise

    @property
    def exitcode(self) -> int | None:
        if self.is_alive() or self.ident is None:
            return None
        return 1 if self.failed else 0

    def kill(self) -> None:
        """Threads cannot be killed: a daemon thread ends with the process."""


def run(workers: int = 4, seconds: float = 5.0, stream: Any = None) -> bool:
    """Run the demo; True when mutual exclusion held."""
    out_stream = stream or sys.stdout
    in_processes = file_backend_available()
    workdir = tempfile.mkdtemp(prefix="locks-demo-")
    counter_path = os.path.join(workdir, "counter")
    with open(counter_path, "w") as counter:
        counter.write("0")
    start_at = time.time() + (1.0 + 0.3 * workers if in_processes else 0.2)
    procs: list[Any]
    if in_processes:
        location = os.path.join(workdir, "locks")
        url = f"file://{location}"
        ctx = multiprocessing.get_context("spawn")
        progress: Any = ctx.Array("q", workers, lock=False)  # each worker writes only its own slot
        out: Any = ctx.Queue()
        procs = [
            ctx.Process(target=_worker, args=(url, i, counter_path, start_at, seconds, progress, out))
            for i in range(workers)
        ]
        where = f"{workers} worker processes take the lock {LOCK_NAME!r} on the file backend ({location})"
    else:
        url = "memory://demo"
        progress, out = [0] * workers, queue.Queue()
        procs = [
            _ThreadWorker(_worker, (url, i, counter_path, start_at, seconds, progress, out)) for i in range(workers)
        ]
        where = (
            f"locks-file is not installed: {workers} worker threads of this one process take the lock "
            f"{LOCK_NAME!r} on the in-process backend ({url})"
        )
    print(
        f"{where} for {seconds:g} s; under it each one does a read-modify-write of a counter file.",
        file=out_stream,
    )
    try:
        for proc in procs:
            proc.start()
        results = _show_progress(procs, progress, out, start_at, seconds, out_stream)
    finally:
        for proc in procs:
            proc.join(timeout=5)
            if proc.is_alive():
                proc.kill()
    with open(counter_path) as counter:
        final_count = int(counter.read() or 0)
    shutil.rmtree(workdir, ignore_errors=True)
    return _report(results, final_count, seconds, out_stream, "threads" if not in_processes else "processes")


def _show_progress(
    procs: list[Any], progress: Any, out: Any, start_at: float, seconds: float, stream: Any
) -> dict[int, tuple[list[float], list[tuple[float, float, int | None]]]]:
    live = stream.isatty() if hasattr(stream, "isatty") else False
    results: dict[int, tuple[list[float], list[tuple[float, float, int | None]]]] = {}
    last_line = 0.0
    while len(results) < len(procs):
        while not out.empty():
            index, waits, sections = out.get()
            results[index] = (waits, sections)
        if any(p.exitcode not in (None, 0) for p in procs) and len(results) < len(procs):
            failed = [i for i, p in enumerate(procs) if p.exitcode not in (None, 0)]
            raise RuntimeError(f"demo worker(s) {failed} failed")
        now = time.time()
        if now - last_line >= (0.1 if live else 1.0):
            last_line = now
            elapsed = min(seconds, max(0.0, now - start_at))
            done = int(30 * elapsed / seconds)
            counts = list(progress)
            line = (
                f"[{'#' * done}{'.' * (30 - done)}] {elapsed:4.1f}/{seconds:g} s  "
                f"acquisitions {sum(counts):6d}  per worker {' '.join(f'{c:5d}' for c in counts)}"
            )
            print(("\r" + line) if live else line, end="" if live else "\n", file=stream, flush=True)
        time.sleep(0.02)
    if live:
        print(file=stream)
    return results


def _report(
    results: dict[int, tuple[list[float], list[tuple[float, float, int | None]]]],
    final_count: int,
    seconds: float,
    stream: Any,
    workers_are: str = "processes",
) -> bool:
    all_waits = [w for waits, _ in results.values() for w in waits]
    sections = sorted(s for _, secs in results.values() for s in secs)
    total = len(sections)
    print(f"\n{'worker':>6}  {'acquisitions':>12}  {'wait p50':>9}  {'wait p90':>9}  {'wait p99':>9}", file=stream)
    for index in sorted(results):
        waits, _ = results[index]
        if waits:
            print(
                f"{index:>6}  {len(waits):>12}  {_ms(percentile(waits, 0.5))}  {_ms(percentile(waits, 0.9))}  "
                f"{_ms(percentile(waits, 0.99))}",
                file=stream,
            )
    if not all_waits:
        print("no acquisitions: the machine is too busy for the demo", file=stream)
        return False
    print(
        f"{'all':>6}  {total:>12}  {_ms(percentile(all_waits, 0.5))}  {_ms(percentile(all_waits, 0.9))}  "
        f"{_ms(percentile(all_waits, 0.99))}   max wait {_ms(max(all_waits)).strip()}, "
        f"{total / seconds:,.0f} acquisitions/s",
        file=stream,
    )
    overlaps = sum(1 for a, b in zip(sections, sections[1:]) if b[0] < a[1])
    tokens = [t for _, _, t in sections]
    increasing = all(t is not None for t in tokens) and all(a < b for a, b in zip(tokens, tokens[1:]))  # type: ignore[operator]
    held = overlaps == 0 and final_count == total and increasing
    verdict = "mutual exclusion held" if held else "MUTUAL EXCLUSION BROKEN"
    print(
        f"\n{verdict}: {total} critical sections in {len(results)} {workers_are}, {overlaps} overlapping; "
        f"counter {final_count} for {total} increments ({total - final_count} lost updates); "
        f"fencing tokens {'strictly increasing' if increasing else 'NOT increasing'}.",
        file=stream,
    )
    return held


def _ms(seconds: float) -> str:
    return f"{seconds * 1000:7.2f}ms"


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m locks.demo", description=__doc__.split("\n\n")[0])
    parser.add_argument(
        "--workers", type=int, default=4, help="worker processes, or threads without locks-file (default 4)"
    )
    parser.add_argument("--seconds", type=float, default=5.0, help="how long they contend (default 5)")
    args = parser.parse_args(argv)
    if args.workers < 2 or not 0 < args.seconds <= 3600:
        parser.error("--workers must be at least 2 and --seconds between 0 and 3600")
    return 0 if run(args.workers, args.seconds) else 1


if __name__ == "__main__":
    sys.exit(main())
