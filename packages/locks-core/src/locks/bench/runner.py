"""The runner of ``locks bench``: starts the workers, takes the figures in turns."""

from __future__ import annotations

import multiprocessing
import statistics
import time
import uuid
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

from locks.backends.spec import BenchSubject
from locks.bench.report import Result, percentile
from locks.bench.workers import contended_worker, handoff_holder, handoff_waiter, uncontended_worker


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
        processes = self.config.processes
        results = [Result(subject.label, contended_processes=processes, floor=subject.floor) for subject in subjects]
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
            self._start(uncontended_worker, subject, result, "uncontended", 1)
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
            self._start(contended_worker, subject, result, "contended", n) for subject, result in zip(subjects, results)
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
            target=handoff_holder,
            args=(subject, name, rounds, self.config.settle, barrier, held, out_holder),
            daemon=True,
        )
        waiter = self.ctx.Process(
            target=handoff_waiter, args=(subject, name, rounds, barrier, held, out_waiter), daemon=True
        )
        holder.start()
        waiter.start()
        (released,) = self._collect([holder], out_holder, "handoff (holder)")
        (acquired,) = self._collect([waiter], out_waiter, "handoff (waiter)")
        millis = [(got - gave) * 1000 for gave, got in zip(released, acquired)]
        result.handoff_median_ms = statistics.median(millis)
        result.handoff_p99_ms = percentile(millis, 0.99)
