"""The contract is worth something only if it fails broken backends: run it on some."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

HERE = Path(__file__).parent

CONTRACT_MODULE = """
import pytest
from locks_contract import BackendSpec, ContractTests
from locks_contract.connections import open_descriptors

class TestBroken(ContractTests):
    @pytest.fixture
    def backend_spec(self):
        return BackendSpec("broken_backends.{cls}", location="memory://broken")

    @pytest.fixture
    def server_connection_count(self):
        return open_descriptors
"""


def _run(pytester: pytest.Pytester, cls: str, selection: str) -> pytest.RunResult:
    pytester.makepyfile(test_broken=CONTRACT_MODULE.format(cls=cls))
    pytester.syspathinsert(HERE)
    env_path = os.pathsep.join([str(HERE), os.environ.get("PYTHONPATH", "")])
    pytester._monkeypatch.setenv("PYTHONPATH", env_path)  # spawned workers import broken_backends too
    return pytester.runpytest_subprocess("-q", "-p", "no:cacheprovider", "-k", selection)


def _assert_fails(
    pytester: pytest.Pytester, cls: str, selection: str, failed: int, *lines: str, at_least: bool = False
) -> None:
    """The contract cases ``selection`` run on ``broken_backends.<cls>``: ``failed`` of them fail
    (or more, ``at_least``), and the output has each of ``lines`` (fnmatch patterns)."""
    result = _run(pytester, cls, selection)
    count = result.parseoutcomes().get("failed", 0)
    assert count >= failed if at_least else count == failed, result.stdout.str()[-3000:]
    for line in lines:
        result.stdout.fnmatch_lines([line])


def _memory_suite(pytester: pytest.Pytester, suite: str, table: str) -> None:
    """A test module that runs the contract class ``suite`` on the memory backend's ``table``."""
    pytester.makepyfile(
        test_memory=f"""
        import pytest
        from locks_contract import BackendSpec, {suite}

        class TestMemory({suite}):
            @pytest.fixture
            def backend_spec(self):
                return BackendSpec("locks.backends.memory.MemoryLockBackend", location="memory://{table}")
        """
    )


def test_a_backend_without_exclusion_fails_the_exclusion_cases(pytester: pytest.Pytester) -> None:
    cases = "exclude or try_once or held_elsewhere or acquire_returns_true"
    message = "*test_processes_exclude_each_other_under_load*"
    _assert_fails(pytester, "NoExclusionBackend", cases, 4, message, at_least=True)


def test_a_backend_with_colliding_keys_fails_the_name_cases(pytester: pytest.Pytester) -> None:
    _assert_fails(pytester, "CollidingNamesBackend", "hostile or arbitrary", 1, at_least=True)


def test_a_single_process_backend_has_the_cross_process_cases_skipped_saying_so(pytester: pytest.Pytester) -> None:
    _memory_suite(pytester, "ContractTests", "meta")
    result = pytester.runpytest_subprocess(
        "-q", "-rs", "-p", "no:cacheprovider", "-k", "processes_exclude or sigkill or acquire_returns_true"
    )
    result.assert_outcomes(passed=1, skipped=2)
    result.stdout.fnmatch_lines(["SKIPPED*MemoryLockBackend is single-process (cross_process = False)*"] * 2)


def test_a_backend_in_a_reference_cycle_fails_the_lifecycle_cases(pytester: pytest.Pytester) -> None:
    message = "*was still alive without the cyclic garbage collector*"
    _assert_fails(pytester, "CyclicBackend", "dropped_backends", 2, message)


def test_a_backend_whose_close_leaves_connections_open_fails_the_lifecycle_cases(pytester: pytest.Pytester) -> None:
    cases = "lifecycle or with_block or dropped_backends"
    message = "*server connection(s) left open after * backends were*"
    _assert_fails(pytester, "NeverClosingBackend", cases, 4, message, at_least=True)


def test_lifecycle_cases_are_skipped_without_a_connection_count(pytester: pytest.Pytester) -> None:
    _memory_suite(pytester, "AbstractLifecycleTests", "uncounted")
    result = pytester.runpytest_subprocess("-q", "-p", "no:cacheprovider", "-rs", "-k", "dropped or with_block")
    result.assert_outcomes(skipped=5)
    result.stdout.fnmatch_lines(["*provide no server_connection_count fixture*"])


def test_unreachable_servers_skip_locally_and_fail_when_required(pytester: pytest.Pytester) -> None:
    pytester.makepyfile(
        test_down="""
        from locks_contract import server_unreachable

        def test_needs_server():
            server_unreachable("nothing listens on 127.0.0.1:1")
        """
    )
    pytester._monkeypatch.delenv("LOCKS_REQUIRE_SERVERS", raising=False)
    pytester.runpytest_subprocess("-q", "-p", "no:cacheprovider").assert_outcomes(skipped=1)
    pytester.runpytest_subprocess("-q", "-p", "no:cacheprovider", "--locks-require-servers").assert_outcomes(failed=1)


def test_a_backend_whose_waits_end_late_or_early_fails_the_deadline_cases(pytester: pytest.Pytester) -> None:
    for cls, message in (
        ("LateWaitsBackend", "*more than 10 ms after their deadline*"),
        ("EarlyWaitsBackend", "*before their deadline*"),
    ):
        _assert_fails(pytester, cls, "bounded_waits", 2, message)


def test_a_backend_that_polls_for_all_its_notify_fails_the_notify_cases(pytester: pytest.Pytester) -> None:
    _assert_fails(pytester, "PollingNotifyBackend", "woken_by_the_release", 2, "*the release did not wake it*")


def test_a_backend_whose_check_sees_no_loss_fails_the_watchdog_cases(pytester: pytest.Pytester) -> None:
    _assert_fails(
        pytester,
        "BlindWatchdogBackend",
        "server_lost_a_hold",
        3,
        "*check() says a hold is there after the server lost it*",
        "*on_lost was not called within*",
    )


def test_a_backend_whose_asyncio_api_runs_in_threads_fails_the_async_native_case(pytester: pytest.Pytester) -> None:
    _assert_fails(pytester, "ThreadedAsyncBackend", "no_worker_thread", 1, "*the asyncio API ran * in worker threads*")


def test_capability_cases_are_skipped_saying_which_capability_is_missing(pytester: pytest.Pytester) -> None:
    _memory_suite(pytester, "ContractTests", "caps")
    result = pytester.runpytest_subprocess(
        "-q", "-rs", "-p", "no:cacheprovider", "-k", "no_worker_thread or sync_and_async_handles_agree"
    )
    result.assert_outcomes(passed=6, skipped=1)
    result.stdout.fnmatch_lines(["SKIPPED*backend lacks capability 'async_native' (asyncio without threads)*"])
