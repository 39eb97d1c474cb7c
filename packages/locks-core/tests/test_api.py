"""The public API on a configured alias: settings, decorator naming, commands, models, signals."""

from __future__ import annotations

import asyncio
import logging
import threading
import time
from collections.abc import Iterator
from typing import Any

import pytest
from django.core.exceptions import ImproperlyConfigured
from django.core.management import BaseCommand, call_command
from django.test import override_settings

import locks
from locks import signals
from locks.checks import check_lock_settings
from locks.config import lock_backends
from locks.naming import NameBuilder, is_template


@pytest.fixture
def other() -> Iterator[locks.BaseLockBackend]:
    """A second client of the default alias's directory: another holder."""
    default = locks.get_backend()
    backend = type(default)(alias="other", location=default.location)
    yield backend
    backend.close()


def held_elsewhere(backend: locks.BaseLockBackend, name: str) -> bool:
    probe = backend.lock(name, timeout=0)
    if probe.acquire():
        probe.release()
        return False
    return True


class TestSettings:
    def test_default_alias_is_the_configured_file_backend(self) -> None:
        backend = locks.get_backend()
        assert type(backend).__name__ == "FileLockBackend"
        assert locks.get_backend("default") is backend
        assert locks.lock_backends["default"] is backend

    def test_no_locks_setting_defaults_to_the_file_backend(self) -> None:
        with override_settings(LOCKS=None):
            assert type(locks.get_backend()).__name__ == "FileLockBackend"

    def test_unknown_alias_is_a_clear_error(self) -> None:
        with pytest.raises(ImproperlyConfigured, match="no lock backend 'nope'"):
            locks.get_backend("nope")

    @pytest.mark.parametrize(
        ("config", "message"),
        [
            ({"default": {}}, "needs a BACKEND"),
            ({"default": {"BACKEND": "no.such.Backend"}}, "could not be imported"),
            ({"default": {"BACKEND": "locks.Lock"}}, "not a BaseLockBackend"),
            ({"default": {"BACKEND": "locks_file.FileLockBackend", "OPTIONS": []}}, "OPTIONS"),
            ({"default": {"BACKEND": "locks_file.FileLockBackend", "TIMEOUT": 3}}, "unknown keys"),
            ({"default": {"BACKEND": "locks_file.FileLockBackend", "OPTIONS": {"NOPE": 1}}}, "NOPE. is not an option"),
        ],
    )
    def test_bad_settings_raise_improperly_configured(self, config: dict[str, Any], message: str) -> None:
        with override_settings(LOCKS=config), pytest.raises(ImproperlyConfigured, match=message):
            locks.get_backend()

    def test_system_checks_report_bad_settings(self) -> None:
        with override_settings(LOCKS={"other": {"BACKEND": "no.such.Backend"}}):
            ids = sorted(error.id for error in check_lock_settings())
        assert ids == ["locks.E002", "locks.E003"]
        with override_settings(LOCKS="nope"):
            assert [error.id for error in check_lock_settings()] == ["locks.E001"]
        assert check_lock_settings() == []

    def test_changing_settings_rebuilds_the_backends(self, tmp_path: Any) -> None:
        before = locks.get_backend()
        with override_settings(LOCKS={"default": {"BACKEND": "locks_file.FileLockBackend", "LOCATION": str(tmp_path)}}):
            assert locks.get_backend().location == str(tmp_path)
        assert locks.get_backend() is not before
        assert lock_backends["default"].location == before.location

    def test_connect_builds_a_backend_from_a_url(self, tmp_path: Any) -> None:
        backend = locks.connect(f"file://{tmp_path}")
        assert backend.directory == str(tmp_path)  # type: ignore[attr-defined]
        with backend.lock("via-url", timeout=0) as held:
            assert held

    def test_connect_refuses_unknown_schemes_and_non_urls(self) -> None:
        with pytest.raises(ValueError, match="no installed lock backend handles 'gopher'"):
            locks.connect("gopher://x")
        with pytest.raises(ValueError, match="not a URL"):
            locks.connect("/just/a/path")
        with pytest.raises(TypeError):
            locks.connect(5)  # type: ignore[arg-type]


class TestHandle:
    def test_handle_reports_its_state(self, other: locks.BaseLockBackend) -> None:
        handle = locks.lock("api-state")
        assert not handle.owned and not handle and handle.token is None
        with handle:
            assert handle.owned and handle
            assert isinstance(handle.token, int)
            assert handle.locked()
            assert held_elsewhere(other, "api-state")
        assert not handle.locked()
        assert "api-state" in repr(handle)

    def test_template_names_only_apply_to_decorators(self) -> None:
        with locks.lock("literal-{braces}", timeout=0) as held:
            assert held.name == "literal-{braces}"
        with pytest.raises(TypeError, match="use it as a decorator"):
            locks.lock(lambda: "x").acquire()

    def test_using_and_backend_are_exclusive(self) -> None:
        with pytest.raises(TypeError):
            locks.lock("x", using="default", backend=locks.get_backend())
        with pytest.raises(TypeError):
            locks.lock("x", using=3)  # type: ignore[arg-type]

    def test_decorating_does_not_touch_settings(self) -> None:
        with override_settings(LOCKS={"default": {"BACKEND": "no.such.Backend"}}):

            @locks.lock("never-called", using="default")
            def job() -> None: ...

    def test_decorator_default_name_is_module_and_qualname(self, other: locks.BaseLockBackend) -> None:
        @locks.lock(timeout=0)
        def nightly() -> bool:
            return held_elsewhere(
                other, f"{__name__}.TestHandle.test_decorator_default_name_is_module_and_qualname.<locals>.nightly"
            )

        assert nightly() is True

    def test_callable_names_get_the_call_arguments(self, other: locks.BaseLockBackend) -> None:
        @locks.lock(lambda invoice, **kw: f"invoice-{invoice['id']}", timeout=0)
        def close(invoice: dict[str, int], force: bool = False) -> bool:
            return held_elsewhere(other, f"invoice-{invoice['id']}")

        assert close({"id": 9}, force=True) is True

    def test_templates_see_defaults_and_keyword_arguments(self) -> None:
        def func(a: int, b: int = 2, **options: Any) -> None: ...

        names = NameBuilder("{a}-{b}-{verbosity}", func)
        assert names((1,), {"verbosity": 3}) == "1-2-3"
        assert is_template("x-{a}") and not is_template("x-{{a}}") and not is_template("plain")

    def test_misspelt_template_fields_fail_at_decoration(self) -> None:
        with pytest.raises(ValueError, match="user_idd"):

            @locks.lock("sync-{user_idd}")
            def sync(user_id: int) -> None: ...

    def test_concurrent_decorated_calls_never_share_a_handle(self) -> None:
        seen: list[int] = []

        @locks.lock("user-{n}", timeout=5)
        def work(n: int) -> None:
            time.sleep(0.01)
            seen.append(n)

        threads = [threading.Thread(target=work, args=(i,)) for i in range(8)]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join()
        assert sorted(seen) == list(range(8))

    def test_shared_hold_of_one_handle_in_two_threads(self, other: locks.BaseLockBackend) -> None:
        handle = locks.lock("api-shared-handle", timeout=0)
        assert handle.acquire()
        result: list[bool] = []
        thread = threading.Thread(target=lambda: result.append(handle.acquire()))
        thread.start()
        thread.join()
        assert result == [False]
        handle.release()


class Command(BaseCommand):
    help = "test command"
    ran: list[dict[str, Any]] = []

    def add_arguments(self, parser: Any) -> None:
        parser.add_argument("--source", default="a")

    def handle(self, *args: Any, **options: Any) -> None:
        Command.ran.append(options)


class TestCommandsAndModels:
    def test_decorating_a_command_locks_its_handle(self, other: locks.BaseLockBackend) -> None:
        decorated = locks.lock("import-{source}", timeout=0, on_busy="skip")(Command)
        Command.ran.clear()
        call_command(decorated(), source="x")
        assert len(Command.ran) == 1
        with other.lock("import-x", timeout=0):
            call_command(decorated(), source="x")
            call_command(decorated(), source="y")
        assert [o["source"] for o in Command.ran] == ["x", "y"]

    def test_only_classes_with_handle_can_be_decorated(self) -> None:
        with pytest.raises(TypeError, match="handle"):
            locks.lock("x")(int)

    def test_lock_model_names_and_refreshes(self) -> None:
        from django.contrib.auth.models import User
        from django.core.management import call_command as run

        run("migrate", verbosity=0)
        user = User.objects.create(username="ada")
        stale = User.objects.get(pk=user.pk)
        User.objects.filter(pk=user.pk).update(first_name="Ada")
        handle = locks.lock_model(stale, refresh=True, timeout=0)
        assert handle.name == f"auth.user:pk={user.pk}"
        with handle:
            assert stale.first_name == "Ada"
        assert locks.lock_model(user, "username").name == "auth.user:username=ada"
        with pytest.raises(ValueError):
            locks.lock_model(User())
        with pytest.raises(TypeError):
            locks.lock_model(object())


class TestSignalsAndLogging:
    def test_signals_and_log_records_tell_the_life_of_a_lock(self, other: locks.BaseLockBackend, caplog: Any) -> None:
        events: list[tuple[str, dict[str, Any]]] = []

        def receiver(signal_name: str) -> Any:
            def receive(sender: Any, **kwargs: Any) -> None:
                events.append((signal_name, kwargs))

            return receive

        receivers = {name: receiver(name) for name in ("acquired", "released", "timed_out")}
        signals.lock_acquired.connect(receivers["acquired"])
        signals.lock_released.connect(receivers["released"])
        signals.lock_timed_out.connect(receivers["timed_out"])
        try:
            with caplog.at_level(logging.DEBUG, logger="locks"):
                with locks.lock("signals-1"):
                    with locks.lock("signals-1"):  # nested: no second signal
                        pass
                with other.lock("signals-1"):
                    locks.lock("signals-1").acquire(timeout=0.05)
        finally:
            signals.lock_acquired.disconnect(receivers["acquired"])
            signals.lock_released.disconnect(receivers["released"])
            signals.lock_timed_out.disconnect(receivers["timed_out"])
        kinds = [kind for kind, _ in events]
        assert kinds == ["acquired", "released", "acquired", "timed_out", "released"]
        assert events[0][1]["name"] == "signals-1" and events[0][1]["alias"] == "default"
        assert events[1][1]["held"] >= 0
        assert events[3][1]["waited"] >= 0.05
        messages = " ".join(record.getMessage() for record in caplog.records)
        assert "acquired 'signals-1'" in messages and "timed out on 'signals-1'" in messages


class TestAsyncReentrancy:
    def test_nesting_is_per_task(self) -> None:
        async def main() -> list[bool]:
            results = []
            async with locks.alock("per-task", timeout=0):
                async with locks.alock("per-task", timeout=0) as nested:
                    results.append(bool(nested))

                async def other_task() -> bool:
                    return await locks.alock("per-task").acquire(timeout=0)

                results.append(await asyncio.create_task(other_task()))
            return results

        assert asyncio.run(main()) == [True, False]

    def test_alock_refuses_plain_functions(self) -> None:
        with pytest.raises(TypeError):
            locks.alock("x")(lambda: None)


class TestReentryLost:
    """A backend that knows a hold is gone (without the server saying so) gets the lock taken anew
    when its holder asks again, instead of a nesting of a lock nobody holds."""

    def test_a_hold_reported_gone_is_taken_again_and_the_old_one_is_lost(
        self, other: locks.BaseLockBackend, tmp_path: Any
    ) -> None:
        from locks_file import FileLockBackend

        gone: list[object] = []  # holds (by identity) whose scope ended

        class Forgetful(FileLockBackend):
            """Holds in ``gone`` were released by the "server" (the scope of the hold ended)."""

            def reentry_lost(self, hold: Any) -> str | None:
                return "its scope ended" if any(hold is g for g in gone) else None

            def release(self, hold: Any) -> None:
                if any(hold is g for g in gone):
                    raise locks.LockLost("released when its scope ended", hold.name)
                super().release(hold)

        backend = Forgetful(alias="forgetful", location=other.location)
        try:
            outer = backend.lock("reentry-lost")
            assert outer.acquire(timeout=0)
            first = backend.holds.get(outer._prepared[1], next(iter(outer._stacks))).hold  # type: ignore[index,union-attr]
            nested = backend.lock("reentry-lost")
            assert nested.acquire(timeout=0)  # counted: no new hold
            nested.release()
            # the scope ends: the "server" lets the lock go behind the handle's back
            backend.release(first)
            gone.append(first)
            again = backend.lock("reentry-lost")
            assert again.acquire(timeout=0)  # taken anew, not counted
            assert held_elsewhere(other, "reentry-lost")
            again.release()
            assert not held_elsewhere(other, "reentry-lost")
            with pytest.raises(locks.LockLost, match="its scope ended"):
                outer.release()
        finally:
            backend.close()
