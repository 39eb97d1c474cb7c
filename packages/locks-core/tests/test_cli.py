"""The ``locks`` command line and ``manage.py locks``, run as real processes on the file backend."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
from django.core.management import call_command

import locks
from locks import cli

LOCKS_CMD = [sys.executable, "-m", "locks.cli"]


@pytest.fixture
def url(tmp_path: Path) -> str:
    return f"file://{tmp_path / 'locks'}"


def run_cli(*args: str, timeout: float = 60, **kwargs: object) -> subprocess.CompletedProcess[str]:
    env = {**os.environ, "PYTHONUNBUFFERED": "1"}
    env.pop("DJANGO_SETTINGS_MODULE", None)
    return subprocess.run(
        [*LOCKS_CMD, *args], capture_output=True, text=True, timeout=timeout, env=env, check=False, **kwargs
    )


def test_run_passes_the_commands_exit_code_through(url: str) -> None:
    done = run_cli("run", "--url", url, "job", "--", sys.executable, "-c", "print('inside'); raise SystemExit(3)")
    assert done.returncode == 3
    assert done.stdout.strip() == "inside"


def test_run_holds_the_lock_while_the_command_runs(url: str) -> None:
    backend = locks.connect(url)
    code = "import locks,sys; sys.exit(0 if locks.connect(sys.argv[1]).lock('job').locked() else 9)"
    done = run_cli("run", "--url", url, "job", "--", sys.executable, "-c", code, url)
    assert done.returncode == 0, done.stderr
    assert not backend.lock("job").locked(), "the lock outlived the command"


def test_run_with_timeout_zero_gives_up_at_once_when_busy(url: str) -> None:
    holder = locks.connect(url).lock("busy")
    with holder:
        started = time.monotonic()
        done = run_cli("run", "--url", url, "--timeout", "0", "busy", "--", "touch", "/nonexistent/never")
    assert done.returncode == cli.EX_TEMPFAIL
    assert "busy" in done.stderr
    assert time.monotonic() - started < 30


def test_run_waits_for_the_timeout_then_exits_75(url: str) -> None:
    with locks.connect(url).lock("slow"):
        done = run_cli("run", "--url", url, "--timeout", "0.5", "slow", "--", "true")
    assert done.returncode == cli.EX_TEMPFAIL
    assert "still held after 0.5 s" in done.stderr


def test_run_without_timeout_blocks_until_released(url: str, tmp_path: Path) -> None:
    marker = tmp_path / "ran"
    holder = locks.connect(url).lock("block")
    holder.acquire()
    proc = subprocess.Popen([*LOCKS_CMD, "run", "--url", url, "block", "--", "touch", str(marker)])
    time.sleep(1.0)
    assert proc.poll() is None and not marker.exists(), "ran while the lock was held"
    holder.release()
    assert proc.wait(timeout=30) == 0
    assert marker.exists()


def test_run_reports_a_signal_death_as_128_plus_n(url: str) -> None:
    done = run_cli("run", "--url", url, "sig", "--", sys.executable, "-c", "import os; os.kill(os.getpid(), 9)")
    assert done.returncode == 128 + signal.SIGKILL


@pytest.mark.parametrize(
    ("args", "code"),
    [
        (["run", "name-without-command"], cli.EX_USAGE),
        (["run", "x", "--", "/no/such/program"], cli.EX_NOT_FOUND),
    ],
)
def test_run_usage_and_exec_errors(url: str, args: list[str], code: int) -> None:
    done = run_cli(args[0], "--url", url, *args[1:])
    assert done.returncode == code, done.stderr
    assert done.stderr.startswith("locks: ")


def test_bad_arguments_exit_with_usage_error(url: str) -> None:
    assert run_cli("run", "--url", url, "--timeout", "-1", "x", "--", "true").returncode == 2  # argparse
    assert run_cli("run", "--url", "nosuchscheme://x", "x", "--", "true").returncode == cli.EX_USAGE
    assert run_cli("list", "--url", "not a url").returncode == cli.EX_USAGE


def test_unreachable_backend_exits_69(tmp_path: Path) -> None:
    blocker = tmp_path / "file"
    blocker.write_text("")
    done = run_cli("run", "--url", f"file://{blocker}/locks", "x", "--", "true")
    assert done.returncode == cli.EX_UNAVAILABLE, done.stderr


def _start_under_lock(url: str, name: str, script: str) -> subprocess.Popen[str]:
    proc = subprocess.Popen(
        [*LOCKS_CMD, "run", "--url", url, name, "--", sys.executable, "-c", script],
        stdout=subprocess.PIPE,
        text=True,
        env={**os.environ, "PYTHONUNBUFFERED": "1"},
    )
    assert proc.stdout is not None
    assert proc.stdout.readline().strip() == "ready"
    return proc


CHILD = """
import signal, sys, time
def bye(signum, frame):
    print("got", signal.Signals(signum).name, flush=True)
    sys.exit(7)
signal.signal(signal.SIGTERM, bye)
signal.signal(signal.SIGUSR1, bye)
print("ready", flush=True)
time.sleep(60)
"""


@pytest.mark.parametrize("sig", [signal.SIGTERM, signal.SIGUSR1])
def test_run_forwards_signals_to_the_command(url: str, sig: signal.Signals) -> None:
    proc = _start_under_lock(url, "fwd", CHILD)
    proc.send_signal(sig)
    assert proc.wait(timeout=30) == 7
    assert proc.stdout is not None and proc.stdout.read().strip() == f"got {sig.name}"
    assert not locks.connect(url).lock("fwd").locked()


def test_killing_locks_run_frees_the_lock_and_stops_the_command(url: str, tmp_path: Path) -> None:
    flag = tmp_path / "terminated"
    script = CHILD.replace('print("got"', f'open({str(flag)!r}, "w").close(); print("got"')
    proc = _start_under_lock(url, "orphan", script)
    proc.kill()
    proc.wait(timeout=30)
    deadline = time.monotonic() + 20
    while not flag.exists() and time.monotonic() < deadline:
        time.sleep(0.05)
    assert flag.exists(), "the command kept running after locks run was killed"
    assert locks.connect(url).lock("orphan").acquire(timeout=10)


def test_list_and_release(url: str) -> None:
    holder = locks.connect(url).lock("listed")
    with holder:
        listing = run_cli("list", "--url", url, "--json")
        assert listing.returncode == 0, listing.stderr
        rows = json.loads(listing.stdout)
        assert [row["name"] for row in rows] == ["listed"]
        assert rows[0]["pid"] == os.getpid()
        table = run_cli("list", "--url", url)
        assert "listed" in table.stdout and str(os.getpid()) in table.stdout
        refused = run_cli("release", "--url", url, "listed", "--yes")
        assert refused.returncode == cli.EX_NOPERM
        assert str(os.getpid()) in refused.stderr
        unconfirmed = run_cli("release", "--url", url, "listed", stdin=subprocess.DEVNULL)
        assert unconfirmed.returncode == cli.EX_NOPERM and "--yes" in unconfirmed.stderr
    assert run_cli("release", "--url", url, "listed", "--yes").returncode == cli.EX_NOTHING
    assert "no locks held" in run_cli("list", "--url", url).stdout


def test_bench_prints_figures_for_the_backend_and_its_peers(url: str) -> None:
    done = run_cli(
        "bench",
        "--url",
        url,
        "--peers",
        "--json",
        "--iterations",
        "200",
        "--seconds",
        "0.5",
        "--handoffs",
        "10",
        "--processes",
        "2",
        timeout=300,
    )
    assert done.returncode == 0, done.stderr
    report = json.loads(done.stdout)
    labels = [r["label"] for r in report["results"]]
    assert labels[0] == "locks (FileLockBackend)"
    assert "raw flock" in labels and "filelock" in labels and "portalocker" in labels
    assert [r["label"] for r in report["results"] if r["floor"]] == ["raw flock"]
    for result in report["results"]:
        assert result["errors"] == [], result
        assert 0 < result["uncontended_median_us"] <= result["uncontended_p99_us"]
        assert result["contended_ops_per_s"] > 0
        assert 0 < result["handoff_median_ms"] <= result["handoff_p99_ms"]
    assert report["ratios_to_floor"]["raw flock"]["uncontended_median"] == 1.0


def test_management_command_lists_and_runs(capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as exit_info:
        call_command("locks", "run", "managed", "--", sys.executable, "-c", "raise SystemExit(5)")
    assert exit_info.value.code == 5
    with locks.lock("managed-listed"):
        call_command("locks", "list", "--json")
    rows = json.loads(capsys.readouterr().out)
    assert "managed-listed" in [row["name"] for row in rows]


def test_manage_py_exit_codes_pass_through(tmp_path: Path) -> None:
    settings = tmp_path / "demo_settings.py"
    settings.write_text(
        "INSTALLED_APPS = ['locks']\n"
        f"LOCKS = {{'default': {{'BACKEND': 'locks_file.FileLockBackend', 'LOCATION': {str(tmp_path / 'l')!r}}}}}\n"
        "USE_TZ = True\n"
    )
    env = {**os.environ, "DJANGO_SETTINGS_MODULE": "demo_settings", "PYTHONPATH": str(tmp_path)}
    done = subprocess.run(
        [sys.executable, "-m", "django", "locks", "run", "job", "--", sys.executable, "-c", "raise SystemExit(4)"],
        env=env,
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert done.returncode == 4, done.stderr
    plain = subprocess.run(
        [*LOCKS_CMD, "run", "--timeout", "0", "job", "--", "true"], env=env, capture_output=True, text=True, check=False
    )
    assert plain.returncode == 0, plain.stderr  # the CLI reads the same settings
