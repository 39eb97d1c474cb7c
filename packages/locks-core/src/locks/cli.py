"""The ``locks`` command line, also ``manage.py locks``.

```
locks run [--timeout S] [--ttl S] [--shared] [--using ALIAS | --url URL] NAME -- CMD [ARG...]
locks list [--prefix P] [--json] [--using ALIAS | --url URL]
locks release NAME [--yes] [--using ALIAS | --url URL]
locks bench [--peers] [--processes N] [--seconds S] [--json] [--svg PATH] [--using ALIAS | --url URL]
```

Exit codes (``locks run`` passes the command's own through):

===== =====================================================================
0     success (``run``: the command's own code)
1     ``release``: nobody held the lock
64    usage error: bad arguments, a bad name, an option the backend lacks
69    the lock server cannot be reached
70    ``run``: the lock was lost while the command ran (and the command succeeded)
75    ``run``: the lock is busy (``--timeout 0``) or the timeout ran out
77    ``release``: refused (a live holder the backend cannot break, or no ``--yes``)
126   ``run``: the command cannot be executed; 127: not found
128+N ``run``: the command was killed by signal N
===== =====================================================================
"""

from __future__ import annotations

import argparse
import contextlib
import datetime as dt
import json
import os
import signal
import subprocess
import sys
import time
from collections.abc import Callable, Iterator, Sequence
from typing import Any, TypeVar

from locks.backends.base import BaseLockBackend, HolderInfo
from locks.exceptions import BackendUnavailable, LockError, LockLost, NotSupported

EX_OK = 0
EX_NOTHING = 1
EX_USAGE = 64
EX_UNAVAILABLE = 69
EX_SOFTWARE = 70
EX_TEMPFAIL = 75
EX_NOPERM = 77
EX_CANNOT_EXECUTE = 126
EX_NOT_FOUND = 127

#: Signals ``locks run`` passes on to the command.
FORWARDED_SIGNALS = tuple(
    getattr(signal, name)
    for name in ("SIGTERM", "SIGINT", "SIGHUP", "SIGQUIT", "SIGUSR1", "SIGUSR2", "SIGWINCH", "SIGCONT")
    if hasattr(signal, name)
)
#: Seconds between progress lines while waiting for a lock on a terminal.
PROGRESS_EVERY = 1.0


class UsageError(Exception):
    """Bad command-line input: exit code 64."""


# -- the parser --------------------------------------------------------------------------------
def add_commands(parser: argparse.ArgumentParser, *, django: bool = False) -> None:
    """Add the ``run``, ``list``, ``release`` and ``bench`` sub-commands to ``parser`` (the CLI's
    or ``manage.py locks``'s)."""
    where = argparse.ArgumentParser(add_help=False)
    group = where.add_mutually_exclusive_group()
    group.add_argument("--using", metavar="ALIAS", help="the LOCKS alias to use (default: default)")
    group.add_argument("--url", help="a backend URL instead of settings: file:///var/lock/app, redis://host ...")

    kwargs: dict[str, Any] = {"dest": "verb", "metavar": "{run,list,release,bench}"}
    if django:  # Django's CommandParser needs its own class for sub-parsers
        kwargs["parser_class"] = type(parser)
    verbs = parser.add_subparsers(**kwargs)
    verbs.required = True

    run = verbs.add_parser(
        "run",
        parents=[where],
        help="run a command while holding a lock",
        description="Run CMD while holding the lock NAME; release it when CMD exits. "
        "--timeout 0 gives up at once when the lock is busy (lock-abort); no --timeout waits (lock-block).",
    )
    run.add_argument("--timeout", type=_seconds, default=None, help="seconds to wait for the lock (default: forever)")
    run.add_argument(
        "--ttl",
        type=_seconds,
        default=None,
        help="lease length on lease backends (default: the backend's, 10 s); renewed for as long as CMD runs",
    )
    run.add_argument("--shared", action="store_true", help="take a shared (read) lock")
    run.add_argument("--quiet", "-q", action="store_true", help="no message when the lock is busy")
    run.add_argument("name", metavar="NAME")
    run.add_argument("command", nargs=argparse.REMAINDER, metavar="-- CMD")

    listing = verbs.add_parser("list", parents=[where], help="list held locks")
    listing.add_argument("--prefix", default=None, help="only names starting with PREFIX")
    listing.add_argument("--json", action="store_true", help="JSON output")

    release = verbs.add_parser(
        "release", parents=[where], help="force-release a lock held by someone else (with confirmation)"
    )
    release.add_argument("name", metavar="NAME")
    release.add_argument("--yes", "-y", action="store_true", help="do not ask for confirmation")

    bench = verbs.add_parser("bench", parents=[where], help="measure latency, throughput and handoff")
    bench.add_argument("--peers", action="store_true", help="also measure the peer libraries installed")
    bench.add_argument("--processes", type=_positive_int, default=4, help="contending processes (default 4)")
    bench.add_argument("--seconds", type=_seconds, default=3.0, help="length of the contended run (default 3)")
    bench.add_argument("--iterations", type=_positive_int, default=2000, help="uncontended samples (default 2000)")
    bench.add_argument("--handoffs", type=_positive_int, default=100, help="handoff samples (default 100)")
    bench.add_argument("--json", action="store_true", help="print the figures as JSON on stdout")
    bench.add_argument("--svg", metavar="PATH", default=None, help="also write the figures as an SVG bar chart")


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="locks", description="Named locks from the command line.")
    add_commands(parser)
    return parser


_N = TypeVar("_N", int, float)


def _parsed(text: str, convert: Callable[[str], _N], what: str) -> _N:
    try:
        return convert(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not {what}") from None


def _seconds(text: str) -> float:
    value = _parsed(text, float, "a number of seconds")
    if not value >= 0 or value == float("inf"):
        raise argparse.ArgumentTypeError(f"{text!r}: seconds must be a finite number >= 0")
    return value


def _positive_int(text: str) -> int:
    value = _parsed(text, int, "a whole number")
    if value < 1:
        raise argparse.ArgumentTypeError(f"{text!r} must be at least 1")
    return value


# -- entry points ------------------------------------------------------------------------------
def main(argv: Sequence[str] | None = None) -> int:
    """``locks ...``: settings come from ``DJANGO_SETTINGS_MODULE`` when set, else defaults."""
    args = build_parser().parse_args(argv)
    if args.url is None:
        _setup_django()
    return execute(args)


def execute(args: argparse.Namespace) -> int:
    """Run a parsed command; errors become messages on stderr and exit codes."""
    try:
        backend = _backend(args)
        return int(COMMANDS[args.verb](backend, args))
    except UsageError as exc:
        return _fail(str(exc), EX_USAGE)
    except BackendUnavailable as exc:
        return _fail(f"lock server unavailable: {exc}", EX_UNAVAILABLE)
    except NotSupported as exc:
        return _fail(str(exc), EX_USAGE)
    except (ValueError, TypeError) as exc:
        return _fail(str(exc), EX_USAGE)
    except LockError as exc:
        return _fail(str(exc), EX_SOFTWARE)
    except _improperly_configured() as exc:
        return _fail(f"configuration: {exc}", EX_USAGE)


def _fail(message: str, code: int) -> int:
    print(f"locks: {message}", file=sys.stderr)
    return code


def _improperly_configured() -> type[Exception]:
    from django.core.exceptions import ImproperlyConfigured

    return ImproperlyConfigured


def _setup_django() -> None:
    import django
    from django.conf import settings

    if not settings.configured and not os.environ.get("DJANGO_SETTINGS_MODULE"):
        settings.configure()
    django.setup()


def _backend(args: argparse.Namespace) -> BaseLockBackend:
    from locks.config import connect, get_backend

    if args.url:
        return connect(args.url, alias="cli")
    return get_backend(args.using)


# -- run ---------------------------------------------------------------------------------------
def cmd_run(backend: BaseLockBackend, args: argparse.Namespace) -> int:
    command = list(args.command)
    if command and command[0] == "--":
        command = command[1:]
    if not command:
        raise UsageError("locks run needs a command after the lock name: locks run NAME -- CMD [ARG...]")
    # On a lease backend the lease is renewed for as long as the command runs, so a long run can
    # never be overlapped by the next one; a lease that cannot be kept ends the run as lost.
    renew = True if args.ttl is not None else None
    handle = backend.lock(args.name, ttl=args.ttl, auto_renew=renew, shared=args.shared, on_busy="skip")
    if not _acquire_with_progress(handle, args.name, args.timeout):
        if not args.quiet:
            waited = "busy" if args.timeout == 0 else f"still held after {args.timeout:g} s"
            print(f"locks: {args.name!r} is {waited}; not running {command[0]}", file=sys.stderr)
        return EX_TEMPFAIL
    try:
        try:
            child = subprocess.Popen(command, preexec_fn=_die_with_parent if sys.platform == "linux" else None)
        except FileNotFoundError:
            return _fail(f"command not found: {command[0]}", EX_NOT_FOUND)
        except PermissionError:
            return _fail(f"command cannot be executed: {command[0]}", EX_CANNOT_EXECUTE)
        with _forwarding_signals(child):
            code = child.wait()
    finally:
        lost = _release(handle)
    if code < 0:
        return 128 - code
    if lost:
        print(f"locks: the lock {args.name!r} was lost while the command ran", file=sys.stderr)
        return code or EX_SOFTWARE
    return code


def _acquire_with_progress(handle: Any, name: str, timeout: float | None) -> bool:
    """Wait for the lock; on a terminal, say every second that we are still waiting."""
    if timeout == 0 or not sys.stderr.isatty():
        return bool(handle.acquire(timeout=timeout))
    started = time.monotonic()
    deadline = None if timeout is None else started + timeout
    try:
        while True:
            part = PROGRESS_EVERY if deadline is None else min(PROGRESS_EVERY, max(0.0, deadline - time.monotonic()))
            if handle.acquire(timeout=part):
                return True
            if deadline is not None and time.monotonic() >= deadline:
                return False
            sys.stderr.write(f"\rlocks: waiting for {name!r}… {time.monotonic() - started:.0f} s ")
            sys.stderr.flush()
    finally:
        if time.monotonic() - started >= PROGRESS_EVERY:
            sys.stderr.write("\n")


def _release(handle: Any) -> bool:
    """Release; True when the lock had been lost."""
    try:
        handle.release()
    except LockLost:
        return True
    return bool(handle.lost)


def _die_with_parent() -> None:
    # In the child, before exec: if `locks run` is killed (even by SIGKILL), the command gets
    # SIGTERM instead of running on without the lock.
    import ctypes

    pr_set_pdeathsig = 1
    with contextlib.suppress(Exception):
        ctypes.CDLL(None, use_errno=True).prctl(pr_set_pdeathsig, signal.SIGTERM)


@contextlib.contextmanager
def _forwarding_signals(child: subprocess.Popen[bytes]) -> Iterator[None]:
    """Pass signals on to the child. Keyboard signals from our own terminal reach the child
    directly (same foreground process group): those are not sent twice, only ignored here."""
    from_terminal: set[int] = set()
    try:
        if os.isatty(0) and os.tcgetpgrp(0) == os.getpgrp():
            from_terminal = {signal.SIGINT, getattr(signal, "SIGQUIT", signal.SIGINT)}
    except OSError:
        pass

    def forward(signum: int, _frame: Any) -> None:
        if signum not in from_terminal:
            with contextlib.suppress(ProcessLookupError):
                child.send_signal(signum)

    previous = {sig: signal.signal(sig, forward) for sig in FORWARDED_SIGNALS}
    try:
        yield
    finally:
        for sig, handler in previous.items():
            signal.signal(sig, handler)


# -- list and release --------------------------------------------------------------------------
def cmd_list(backend: BaseLockBackend, args: argparse.Namespace) -> int:
    holders = backend.holders(args.prefix)
    if args.json:
        print(json.dumps([_holder_dict(h) for h in holders], indent=2, default=str))
        return EX_OK
    if not holders:
        print("no locks held" + (f" with prefix {args.prefix!r}" if args.prefix else ""))
        return EX_OK
    rows = [
        (
            h.name if h.name is not None else f"(key {h.key})",
            "shared" if h.shared else "exclusive",
            "" if h.pid is None else str(h.pid),
            h.host or "",
            h.owner or "",
            _age(h.since),
            _until(h.expires_at),
            "" if h.token is None else str(h.token),
        )
        for h in holders
    ]
    _print_table(("NAME", "MODE", "PID", "HOST", "OWNER", "HELD FOR", "EXPIRES IN", "TOKEN"), rows)
    return EX_OK


def cmd_release(backend: BaseLockBackend, args: argparse.Namespace) -> int:
    name = backend.validate_name(args.name)
    key = backend.make_key(name)
    described = ""
    try:
        held = [h for h in backend.holders(str(name)) if h.key == key or h.name == name]
    except NotSupported:
        held = []
    if held:
        described = "; ".join(_describe(h) for h in held)
    if not args.yes:
        if not sys.stdin.isatty():
            return _fail(f"not releasing {name!r} without confirmation: pass --yes", EX_NOPERM)
        prompt = f"Force-release {name!r}{' held by ' + described if described else ''}? [y/N] "
        if input(prompt).strip().lower() not in ("y", "yes"):
            print("not released")
            return EX_NOPERM
    try:
        broken = backend.force_release(name)
    except NotSupported as exc:
        return _fail(f"refused: {exc}", EX_NOPERM)
    if not broken:
        print(f"{name!r} was not held")
        return EX_NOTHING
    print(f"released {name!r} ({broken} hold{'s' if broken != 1 else ''} broken)")
    return EX_OK


def _describe(h: HolderInfo) -> str:
    parts = [f"pid {h.pid}" if h.pid is not None else None, h.host, h.owner, _age(h.since) or None]
    return ", ".join(p for p in parts if p)


def _holder_dict(h: HolderInfo) -> dict[str, Any]:
    return {
        "key": h.key,
        "name": h.name,
        "shared": h.shared,
        "owner": h.owner,
        "pid": h.pid,
        "host": h.host,
        "since": h.since,
        "expires_at": h.expires_at,
        "token": h.token,
        "waiting": h.waiting,
        "extra": dict(h.extra),
    }


def _age(since: float | None) -> str:
    if since is None:
        return ""
    return _duration(max(0.0, time.time() - since))


def _until(when: float | None) -> str:
    if when is None:
        return ""
    return _duration(when - time.time())


def _duration(seconds: float) -> str:
    sign = "-" if seconds < 0 else ""
    return sign + str(dt.timedelta(seconds=round(abs(seconds))))


def _print_table(header: Sequence[str], rows: Sequence[Sequence[str]]) -> None:
    widths = [max(len(str(r[i])) for r in [header, *rows]) for i in range(len(header))]
    for row in [header, *rows]:
        print("  ".join(str(cell).ljust(width) for cell, width in zip(row, widths)).rstrip())


# -- bench -------------------------------------------------------------------------------------
def cmd_bench(backend: BaseLockBackend, args: argparse.Namespace) -> int:
    import platform

    from locks.bench import Bench, BenchConfig, render_svg, render_table, subjects_for, to_json

    config = BenchConfig(
        iterations=args.iterations, processes=args.processes, seconds=args.seconds, handoffs=args.handoffs
    )
    if args.svg and not os.path.isdir(os.path.dirname(os.path.abspath(args.svg))):
        raise UsageError(f"--svg {args.svg!r}: its directory does not exist")
    subjects = subjects_for(backend, peers=args.peers)

    def progress(message: str) -> None:
        print(f"bench: {message}", file=sys.stderr, flush=True)

    results = Bench(config, progress).run(subjects)
    about = {
        "backend": f"{type(backend).__module__}.{type(backend).__qualname__}",
        "location": _redact(backend.location),
        "python": platform.python_version(),
        "machine": platform.machine(),
        "cpus": os.cpu_count(),
        "when": dt.datetime.now(dt.timezone.utc).isoformat(timespec="seconds"),
    }
    if args.json:
        print(to_json(results, config, about))
    else:
        print(f"locks bench: {about['backend']} at {about['location']}, {about['cpus']} CPUs, {about['when']}")
        render_table(results)
    if args.svg:
        title = f"locks bench: {type(backend).__name__}, {about['cpus']} CPUs, {about['when']}"
        with open(args.svg, "w", encoding="utf-8") as out:
            out.write(render_svg(results, title))
    # The backend under test failing is an error; a peer failing is reported in the table.
    return EX_SOFTWARE if results and results[0].errors else EX_OK


def _redact(location: str | None) -> str | None:
    """A location without its password."""
    if not location or "@" not in location:
        return location
    from urllib.parse import urlsplit, urlunsplit

    parts = urlsplit(location)
    if parts.password is None:
        return location
    netloc = parts.netloc.replace(f":{parts.password}@", ":***@")
    return urlunsplit(parts._replace(netloc=netloc))


COMMANDS = {"run": cmd_run, "list": cmd_list, "release": cmd_release, "bench": cmd_bench}

if __name__ == "__main__":
    sys.exit(main())
