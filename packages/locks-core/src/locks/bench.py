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
label ends with ``(floor)``: the bare minimum any lock on that server must do.
"""

from __future__ import annotations

import dataclasses
import json
import math
import multiprocessing
import os
import statistics
import sys
import time
import uuid
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any, TextIO

from locks.backends.base import BaseLockBackend
from locks.backends.spec import BackendSpec, BenchSubject

FLOOR_SUFFIX = "(floor)"


# -- subjects ------------------------------------------------------------------------------------
class BackendLocks:
    """Adapts a locks backend to the bench protocol (``acquire(name)``, ``release(name)``): one
    handle per name, reused, as an application holding a ``locks.lock(...)`` object does."""

    def __init__(self, spec: BackendSpec) -> None:
        spec.run_setup()
        self.backend = spec.build(alias="bench")
        self.handles: dict[str, Any] = {}

    def acquire(self, name: str) -> None:
        handle = self.handles.get(name)
        if handle is None:
            handle = self.handles[name] = self.backend.lock(name)
        handle.acquire()

    def release(self, name: str) -> None:
        self.handles[name].release()

    def close(self) -> None:
        self.backend.close()


def backend_subject(label: str, spec: BackendSpec) -> BenchSubject:
    """A :class:`BenchSubject` for any locks backend configuration (another option set of the
    backend under test, say), measured like the backend itself."""
    return BenchSubject(label, "locks.bench.BackendLocks", {"spec": spec})


def setup_django() -> None:
    """Worker set-up for backends built from Django settings (``--using``)."""
    import django
    from django.conf import settings

    if not settings.configured and not os.environ.get("DJANGO_SETTINGS_MODULE"):
        settings.configure()
    django.setup()


def subjects_for(backend: BaseLockBackend, label: str | None = None, peers: bool = True) -> list[BenchSubject]:
    """The backend itself, then (with ``peers``) what :meth:`BaseLockBackend.bench_peers` offers."""
    spec = backend.spec()
    if spec.setup is None and os.environ.get("DJANGO_SETTINGS_MODULE"):
        spec = dataclasses.replace(spec, setup="locks.bench.setup_django")
    own = backend_subject(label or f"locks ({type(backend).__name__})", spec)
    return [own, *(backend.bench_peers() if peers else [])]


# -- figures -------------------------------------------------------------------------------------
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

    @property
    def is_floor(self) -> bool:
        return self.label.endswith(FLOOR_SUFFIX)


def percentile(values: Sequence[float], q: float) -> float:
    """The ``q`` quantile (0..1) by the nearest-rank method."""
    if not values:
        raise ValueError("no values")
    ordered = sorted(values)
    rank = max(1, math.ceil(q * len(ordered)))
    return ordered[rank - 1]


# -- workers (module level: the spawn start method imports them) ---------------------------------
def _uncontended_worker(subject: BenchSubject, name: str, conn: Any) -> None:
    """Takes and releases ``name`` in rounds the parent asks for (at least ``count`` times and for
    at least ``seconds``; a count of 0 stops), answering each with its samples in nanoseconds."""
    try:
        impl = subject.open()
    except BaseException as exc:  # noqa: BLE001 - reported to the parent
        conn.send(("error", f"{type(exc).__name__}: {exc}"))
        return
    try:
        clock = time.perf_counter_ns
        conn.send(("ok", []))
        while True:
            count, seconds = conn.recv()
            if not count:
                break
            samples: list[int] = []
            until = clock() + int(seconds * 1e9)
            while len(samples) < count or (samples and clock() < until):
                start = clock()
                impl.acquire(name)
                impl.release(name)
                samples.append(clock() - start)
            conn.send(("ok", samples))
    except BaseException as exc:  # noqa: BLE001 - reported to the parent
        conn.send(("error", f"{type(exc).__name__}: {exc}"))
    finally:
        _close(impl)


def _contended_worker(subject: BenchSubject, name: str, conn: Any) -> None:
    """One of the processes contending for ``name``: in each round the parent asks for, loops on
    acquire+release from ``start_at`` (wall clock, the same for every process) for ``seconds``, and
    answers with its count. ``seconds`` 0 stops."""
    try:
        impl = subject.open()
        impl.acquire(name)  # connect and warm up before any clock starts
        impl.release(name)
    except BaseException as exc:  # noqa: BLE001 - reported to the parent
        conn.send(("error", f"{type(exc).__name__}: {exc}"))
        return
    try:
        conn.send(("ok", 0))
        while True:
            start_at, seconds = conn.recv()
            if not seconds:
                break
            while time.time() < start_at:
                time.sleep(0.0005)
            count = 0
            end = time.monotonic() + seconds
            while time.monotonic() < end:
                impl.acquire(name)
                impl.release(name)
                count += 1
            conn.send(("ok", count))
    except BaseException as exc:  # noqa: BLE001 - reported to the parent
        conn.send(("error", f"{type(exc).__name__}: {exc}"))
    finally:
        _close(impl)


def _handoff_holder(
    subject: BenchSubject, name: str, rounds: int, settle: float, barrier: Any, held: Any, out: Any
) -> None:
    try:
        impl = subject.open()
        try:
            released_at = []
            for _ in range(rounds):
                barrier.wait(timeout=120)
                impl.acquire(name)
                held.set()
                time.sleep(settle)  # the waiter is now blocked in acquire()
                stamp = time.monotonic()
                impl.release(name)
                released_at.append(stamp)
        finally:
            _close(impl)
        out.put(("ok", released_at))
    except BaseException as exc:  # noqa: BLE001
        barrier.abort()
        out.put(("error", f"{type(exc).__name__}: {exc}"))


def _handoff_waiter(subject: BenchSubject, name: str, rounds: int, barrier: Any, held: Any, out: Any) -> None:
    try:
        impl = subject.open()
        try:
            acquired_at = []
            for _ in range(rounds):
                barrier.wait(timeout=120)
                if not held.wait(timeout=120):
                    raise TimeoutError("the holder never took the lock")
                held.clear()
                impl.acquire(name)
                acquired_at.append(time.monotonic())
                impl.release(name)
        finally:
            _close(impl)
        out.put(("ok", acquired_at))
    except BaseException as exc:  # noqa: BLE001
        barrier.abort()
        out.put(("error", f"{type(exc).__name__}: {exc}"))


def _close(impl: Any) -> None:
    close = getattr(impl, "close", None)
    if close is not None:
        close()


# -- the runner ----------------------------------------------------------------------------------
@dataclass
class BenchConfig:
    iterations: int = 2000
    processes: int = 4
    seconds: float = 3.0
    handoffs: int = 100
    settle: float = 0.005
    #: Longest any one measurement may take before it is reported as failed (seconds).
    deadline: float = 300.0


@dataclass
class _Group:
    """The worker processes of one subject in a measurement taken in turns, and their pipes."""

    procs: list[Any]
    conns: list[Any]
    result: Result
    what: str
    failed: bool = False


class Bench:
    """Runs the three measurements for a list of subjects.

    Uncontended and contended figures are taken in turns: every subject's processes start and
    connect first, then each subject measures for a while, then the next, round after round. A
    machine whose speed drifts during the run (other work, frequency scaling, a virtual machine's
    neighbours) then slows every subject alike, and the ratios between them hold. Handoff runs go
    one subject after the other (each sample is a separate event, drift matters less).
    """

    #: Uncontended samples are taken in this many rounds, each turn of a subject at least ``turn``
    #: seconds long (long enough that a switch costs nothing).
    rounds: int = 10
    turn: float = 0.05
    #: The contended ``seconds`` of each subject are split into this many turns.
    contended_rounds: int = 3

    def __init__(self, config: BenchConfig, progress: Callable[[str], None] | None = None) -> None:
        self.config = config
        self.progress = progress or (lambda message: None)
        self.ctx = multiprocessing.get_context("spawn")

    def run(self, subjects: Sequence[BenchSubject]) -> list[Result]:
        results = [Result(subject.label, contended_processes=self.config.processes) for subject in subjects]
        for step in (self._uncontended, self._contended):
            try:
                step(subjects, results)
            except Exception as exc:  # noqa: BLE001 - reported in every result
                for result in results:
                    result.errors.append(f"{step.__name__.strip('_')}: {exc}")
        for subject, result in zip(subjects, results):
            try:
                self._handoff(subject, result)
            except Exception as exc:  # noqa: BLE001 - one failing peer must not end the run
                result.errors.append(f"handoff: {exc}")
        return results

    def _name(self) -> str:
        return f"bench-{uuid.uuid4().hex[:12]}"

    # -- measurements in turns ----------------------------------------------------------------
    def _start(self, target: Any, subject: BenchSubject, result: Result, what: str, count: int) -> _Group:
        """``count`` worker processes of ``subject`` on one lock name, each with a pipe."""
        name = self._name()
        group = _Group([], [], result, what)
        for _ in range(count):
            parent, child = self.ctx.Pipe()
            proc = self.ctx.Process(target=target, args=(subject, name, child), daemon=True)
            proc.start()
            child.close()
            group.procs.append(proc)
            group.conns.append(parent)
        return group

    def _answers(self, group: _Group, timeout: float) -> list[Any]:
        """One answer from each worker of ``group``; on failure the group is marked failed, with
        the reason on its result, and nothing is returned."""
        if group.failed:
            return []
        answers = []
        deadline = time.monotonic() + timeout
        try:
            for conn in group.conns:
                if not conn.poll(max(0.0, deadline - time.monotonic())):
                    raise RuntimeError(f"no answer within {timeout:.0f} s")
                status, value = conn.recv()
                if status != "ok":
                    raise RuntimeError(value)
                answers.append(value)
        except (EOFError, OSError, RuntimeError) as exc:
            group.failed = True
            group.result.errors.append(f"{group.what}: {exc or 'a worker process ended'}")
            return []
        return answers

    def _ask(self, group: _Group, message: tuple[Any, ...], timeout: float) -> list[Any]:
        if group.failed:
            return []
        try:
            for conn in group.conns:
                conn.send(message)
        except OSError as exc:
            group.failed = True
            group.result.errors.append(f"{group.what}: {exc}")
            return []
        return self._answers(group, timeout)

    def _stop(self, groups: Sequence[_Group]) -> None:
        for group in groups:
            for conn in group.conns:
                try:
                    conn.send((0, 0.0))
                except OSError:
                    pass
        for group in groups:
            for proc, conn in zip(group.procs, group.conns):
                proc.join(timeout=10)
                if proc.is_alive():
                    proc.kill()
                    proc.join()
                conn.close()

    def _uncontended(self, subjects: Sequence[BenchSubject], results: Sequence[Result]) -> None:
        iterations = self.config.iterations
        per_turn = max(1, iterations // self.rounds)
        self.progress(
            f"uncontended: {len(subjects)} subjects in turns, {self.rounds} rounds of at least "
            f"{per_turn} acquire+release and {self.turn:g} s each"
        )
        groups = [
            self._start(_uncontended_worker, subject, result, "uncontended", 1)
            for subject, result in zip(subjects, results)
        ]
        samples: list[list[int]] = [[] for _ in subjects]
        try:
            for group in groups:
                self._answers(group, self.config.deadline)
            plan = [(max(10, iterations // 10), self.turn)] + [(per_turn, self.turn)] * self.rounds
            for number, turn in enumerate(plan):
                for group, taken in zip(groups, samples):
                    answers = self._ask(group, turn, self.config.deadline)
                    if answers and number > 0:  # the first round warms up
                        taken.extend(answers[0])
        finally:
            self._stop(groups)
        for group, taken in zip(groups, samples):
            if taken and not group.failed:
                micros = [ns / 1000 for ns in taken]
                group.result.uncontended_median_us = statistics.median(micros)
                group.result.uncontended_p99_us = percentile(micros, 0.99)

    def _contended(self, subjects: Sequence[BenchSubject], results: Sequence[Result]) -> None:
        n, seconds, rounds = self.config.processes, self.config.seconds, self.contended_rounds
        self.progress(
            f"contended: {len(subjects)} subjects in turns, {n} processes each, "
            f"{rounds} rounds of {seconds / rounds:g} s"
        )
        groups = [
            self._start(_contended_worker, subject, result, "contended", n)
            for subject, result in zip(subjects, results)
        ]
        counts = [0 for _ in subjects]
        try:
            for group in groups:
                self._answers(group, self.config.deadline)
            for _ in range(rounds):
                for i, group in enumerate(groups):
                    # every process of the subject gets the message before the common start
                    start_at = time.time() + 0.05 + 0.01 * n
                    answers = self._ask(group, (start_at, seconds / rounds), seconds + self.config.deadline)
                    counts[i] += sum(answers)
        finally:
            self._stop(groups)
        for group, count in zip(groups, counts):
            if not group.failed:
                group.result.contended_ops_per_s = count / seconds

    # -- handoff -----------------------------------------------------------------------------
    def _collect(self, procs: list[Any], out: Any, what: str) -> list[Any]:
        values = []
        deadline = time.monotonic() + self.config.deadline
        try:
            for _ in procs:
                status, value = out.get(timeout=max(1.0, deadline - time.monotonic()))
                if status != "ok":
                    raise RuntimeError(value)
                values.append(value)
        except Exception as exc:
            if type(exc).__name__ == "Empty":
                raise RuntimeError(f"{what} did not finish within {self.config.deadline:.0f} s") from None
            raise
        finally:
            for proc in procs:
                proc.join(timeout=10)
                if proc.is_alive():
                    proc.kill()
                    proc.join()
        return values

    def _handoff(self, subject: BenchSubject, result: Result) -> None:
        rounds = self.config.handoffs
        self.progress(f"{subject.label}: handoff, {rounds} rounds")
        out_holder, out_waiter = self.ctx.Queue(), self.ctx.Queue()
        barrier, held = self.ctx.Barrier(2), self.ctx.Event()
        name = self._name()
        holder = self.ctx.Process(
            target=_handoff_holder,
            args=(subject, name, rounds, self.config.settle, barrier, held, out_holder),
            daemon=True,
        )
        waiter = self.ctx.Process(
            target=_handoff_waiter, args=(subject, name, rounds, barrier, held, out_waiter), daemon=True
        )
        holder.start()
        waiter.start()
        (released,) = self._collect([holder], out_holder, "handoff (holder)")
        (acquired,) = self._collect([waiter], out_waiter, "handoff (waiter)")
        millis = [(got - gave) * 1000 for gave, got in zip(released, acquired)]
        result.handoff_median_ms = statistics.median(millis)
        result.handoff_p99_ms = percentile(millis, 0.99)


# -- reports -------------------------------------------------------------------------------------
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
    width = max([len(r.label) for r in results] + [7])
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
            f"{r.label:<{width}}  {unc:>16}  {'' if unc_ratio is None else f'{unc_ratio:.2f}':>7}  "
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
